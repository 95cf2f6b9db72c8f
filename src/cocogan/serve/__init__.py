"""`cocogan serve`: explore a trained run in the browser, generating only the tiles on screen.

:mod:`cocogan.serve.tiles` turns tile requests into batched viewport generation with an LRU
cache; :mod:`cocogan.serve.app` is the ASGI application (Starlette) with the page in
``static/``. Needs the ``serve`` extra (starlette, uvicorn).
"""
