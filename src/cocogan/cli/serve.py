"""`cocogan serve`: a local web page to explore trained runs, generating only what is on screen.

Loads each ``--run`` once, binds the socket itself (so a busy port is a clear error and
``--port 0`` picks a free one), prints the URL and serves with uvicorn until Ctrl+C. See
docs/serve.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from cocogan.render import DEFAULT_CHUNK

MAX_CONCURRENT_CONNECTIONS = 64  # uvicorn answers 503 past this many open requests


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="explore trained runs in the browser (tiles generated on demand)",
        description="Start a local web server with a page that shows a trained run: drag past "
        "the borders, turn panoramas around, change or interpolate seeds, inspire from an "
        "uploaded image, outline the micro patches. Only the tiles on screen are generated. "
        "Needs the serve extra (pip install 'cocogan[serve]'). See docs/serve.md.")
    parser.add_argument("--run", action="append", required=True, metavar="RUN",
                        help="run directory (newest checkpoint) or .safetensors file; repeat "
                        "to serve several runs")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--raw", action="store_true",
                        help="sample from the raw generator instead of its EMA")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"micro patches per forward pass (default {DEFAULT_CHUNK})")
    parser.add_argument("--cache-mb", type=float, default=64.0,
                        help="tile cache per run, MiB of PNG (default 64; 0 disables it)")
    parser.add_argument("--max-pending", type=int, default=256,
                        help="queued tiles per run beyond which requests get 503 (default 256)")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cocogan.serve.app import create_app, load_runs
    except ModuleNotFoundError as error:
        raise ValueError(f"cocogan serve needs {error.name}: pip install 'cocogan[serve]' "
                         "(scripts/setup.sh installs it)") from None
    from cocogan.training.device import select_device

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} must be in 0..65535")
    if args.chunk < 1 or args.max_pending < 1 or args.cache_mb < 0:
        raise ValueError("--chunk and --max-pending must be >= 1 and --cache-mb >= 0")
    runs = load_runs(args.run, select_device(args.device), raw=args.raw, chunk=args.chunk,
                     cache_bytes=int(args.cache_mb * (1 << 20)), max_pending=args.max_pending)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"cocogan serve: {len(runs)} run(s) at http://{shown}:{port}/ (Ctrl+C to stop)",
          flush=True)
    if not _is_loopback(args.host):
        print(f"cocogan serve: warning: --host {args.host} is reachable from other machines; "
              "the server has no authentication", file=sys.stderr)
    config = uvicorn.Config(create_app(runs), log_level="warning",
                            limit_concurrency=MAX_CONCURRENT_CONNECTIONS)
    uvicorn.Server(config).run(sockets=[sock])
    return 0


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on (host, port), or a one-line error naming the flag to change."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise ValueError(f"--host {host!r} is not an address of this machine") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as error:
        sock.close()
        raise ValueError(f"cannot listen on {host}:{port} ({error.strerror}); pick another "
                         "--port, or --port 0 for any free one") from None
    sock.listen(128)
    return sock


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"

