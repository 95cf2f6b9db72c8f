"""`cocogan serve`: :mod:`cocogan.serve.tiles` renders the tiles on screen, :mod:`cocogan.serve.app`
is the Starlette application with its page in ``static/`` (the ``serve`` extra)."""
