"""Connections of `cocogan serve`: slow or idle clients never lock the server out (uvicorn's
``limit_concurrency`` counts idle sockets, and any byte resets its keep-alive timer). Each
connection has ``header_timeout`` seconds, not reset by trickled bytes, to complete a request's
headers; past ``max_connections`` the one waiting longest for a request is closed (503 when all
are busy). Bodies have the app's deadline (``BODY_TIMEOUT_S``); docs/serve.md."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT_S = 10.0  # from "waiting for a request" to "its headers are complete"
KEEP_ALIVE_S = 5  # uvicorn's idle keep-alive timeout (reset by any byte; the above is not)
MAX_CONNECTIONS = 512  # open connections; the longest-idle one makes room for a new one
MAX_HEADER_BYTES = 16 << 10  # h11's bound on an incomplete request head
_BUSY_TEXT = b"too many open connections; retry in a second\n"
BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\nretry-after: 1\r\n"
        b"connection: close\r\ncontent-length: %d\r\n\r\n%s" % (len(_BUSY_TEXT), _BUSY_TEXT))


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a header deadline and a connection cap (class attributes)."""

    header_timeout = HEADER_TIMEOUT_S
    max_connections = MAX_CONNECTIONS

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._deadline: asyncio.TimerHandle | None = None
        self.waiting_since: float | None = None  # when it began waiting for a request

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._watch()
        if len(self.connections) > self.max_connections:
            self._make_room()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._watch()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch()

    def _serving(self) -> bool:
        """True while the app is working on a request of this connection."""
        return self.cycle is not None and not self.cycle.response_complete

    def _watch(self) -> None:
        """Arm the header deadline when the connection starts waiting, disarm it when served."""
        if self.transport.is_closing():
            self._cancel()
        elif self._serving():
            self._cancel()
            self.waiting_since = None
        elif self._deadline is None:
            self.waiting_since = time.monotonic()
            self._deadline = self.loop.call_later(self.header_timeout, self._expire)

    def _cancel(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self) -> None:
        self._deadline = None
        if not self._serving() and not self.transport.is_closing():
            self.transport.close()

    def _make_room(self) -> None:
        """Close the connection that has waited longest for a request, or refuse this one."""
        idle = [c for c in self.connections
                if isinstance(c, GuardedH11Protocol) and c is not self
                and c.waiting_since is not None and not c.transport.is_closing()]
        if idle:
            min(idle, key=lambda c: c.waiting_since or 0.0).transport.close()
        else:
            self.transport.write(BUSY)
            self.transport.close()


def server_config(app: Any, *, header_timeout: float = HEADER_TIMEOUT_S,
                  max_connections: int = MAX_CONNECTIONS) -> uvicorn.Config:
    """The uvicorn configuration `cocogan serve`, its tests and its benchmark share."""
    protocol = type("GuardedH11", (GuardedH11Protocol,),
                    {"header_timeout": header_timeout, "max_connections": max_connections})
    return uvicorn.Config(app, log_level="warning", http=protocol,
                          timeout_keep_alive=KEEP_ALIVE_S,
                          h11_max_incomplete_event_size=MAX_HEADER_BYTES)
