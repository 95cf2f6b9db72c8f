"""User-facing data errors.

Raised at the data boundary (bad paths, empty folders, unknown built-in names) so the CLI can print
one line that names the path and the fix instead of a traceback from deep inside PIL or torch.
"""

from __future__ import annotations


class DataError(ValueError):
    """A data source that cannot be used as given; the message says what to change."""
