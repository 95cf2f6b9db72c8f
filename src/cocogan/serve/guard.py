"""Who may talk to `cocogan serve`, checked before any route (docs/serve.md, "Who may ask").
A ``Host`` that is not an address of the bound socket (or an ``--allow-host`` name) gets 400:
DNS rebinding always carries the attacker's host name. A state-changing request with a foreign
``Origin``, or none and a content type a cross-site form could send, gets 403."""

from __future__ import annotations

import contextlib
import ipaddress
import json
import socket
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from typing import Any

Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable, Callable], Awaitable[None]]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Content types a cross-site <form> or a fetch without preflight may send (the CORS safelist).
SIMPLE_TYPES = frozenset({"", "text/plain", "application/x-www-form-urlencoded",
                          "multipart/form-data"})


@dataclass(frozen=True)
class HostRule:
    """The Host header values this server answers to."""

    names: frozenset[str]  # lower-case host names and IP literals (IPv6 in brackets)
    any_ip: bool = False  # a wildcard bind: every IP literal is an address of this machine
    any_host: bool = False  # --allow-host '*': no Host check at all

    def allows(self, host: str) -> bool:
        return self.any_host or host in self.names or (
            self.any_ip and _ip(host.strip("[]")) is not None)


def host_rule(bound: str, extra: Iterable[str] = ()) -> HostRule:
    """The hosts a server bound to ``bound`` answers to, plus the ``--allow-host`` names."""
    extra = [name.strip().lower() for name in extra]
    names = {bracket(bound.lower())}
    wildcard = bound in ("0.0.0.0", "::", "")
    if is_loopback(bound):
        names |= {"localhost", "127.0.0.1", "[::1]"}
    elif wildcard:
        names |= {"localhost", socket.gethostname().lower()}
    elif _ip(bound) is None:  # a host name: its addresses too
        with contextlib.suppress(socket.gaierror):
            names |= {bracket(info[4][0]) for info in socket.getaddrinfo(bound, None)}
    return HostRule(frozenset(names | set(extra) - {"*"}), any_ip=wildcard, any_host="*" in extra)


def guard(app: ASGIApp, rule: HostRule | None = None) -> ASGIApp:
    """Wrap an ASGI app with the Host and Origin checks (``rule``: loopback by default)."""
    rule = rule or host_rule("127.0.0.1")

    async def guarded(scope: Scope, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1")
                   for k, v in scope.get("headers", [])}
        raw_host = headers.get("host", "")
        if not rule.allows(_host_name(raw_host)):
            await _refuse(send, 400, f"Host {raw_host[:80] or '(none)'!r} is not an address of "
                          "this server (a DNS-rebinding guard); open the URL cocogan serve "
                          "printed, or start it with --allow-host NAME")
            return
        if scope["method"] not in SAFE_METHODS:
            origin = headers.get("origin")
            kind = headers.get("content-type", "").split(";")[0].strip().lower()
            if origin is not None and origin.lower() != f"http://{raw_host.lower()}":
                await _refuse(send, 403, f"cross-origin {scope['method']} refused (Origin "
                              f"{origin[:80]!r}); use the page this server serves")
                return
            if origin is None and kind in SIMPLE_TYPES:
                await _refuse(send, 403, f"{scope['method']} without Origin needs a "
                              "Content-Type such as image/png or application/octet-stream "
                              f"(got {kind or 'none'!r}: a cross-site form could send that)")
                return
        await app(scope, receive, send)

    return guarded


async def _refuse(send: Callable, status: int, message: str) -> None:
    body = json.dumps({"error": message}).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


def _host_name(value: str) -> str:
    """``Host`` without its port, lower case; IPv6 literals keep their brackets."""
    value = value.strip().lower()
    if value.startswith("["):
        return value[:value.find("]") + 1] if "]" in value else value
    return value.rsplit(":", 1)[0] if ":" in value else value


def bracket(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


def is_loopback(host: str) -> bool:
    ip = _ip(host)
    return ip.is_loopback if ip is not None else host == "localhost"


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    with contextlib.suppress(ValueError):
        return ipaddress.ip_address(host)
    return None
