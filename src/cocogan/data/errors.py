"""User-facing data errors, raised at the data boundary so the CLI prints one line."""

from __future__ import annotations


class DataError(ValueError):
    """A data source that cannot be used as given; the message says what to change."""
