"""`cocogan serve`: a local web page to explore trained runs, generating only what is on screen.

Loads each ``--run`` once (without one, every shipped model: :mod:`cocogan.shipped`), binds
the socket itself (so a busy port is a clear error and ``--port 0`` picks a free one), prints
the URL and serves with uvicorn until Ctrl+C. The server answers only to its own address
(``--allow-host`` for more), gives slow clients deadlines and bounds its render queue in micro
patches (``cocogan.serve.connections``, ``cocogan.serve.guard``).
See docs/serve.md.
"""

from __future__ import annotations

import argparse
import ipaddress
import socket
import sys

from cocogan.cli.generate import add_backend_flag
from cocogan.render import DEFAULT_CHUNK

MAX_QUEUE = 16384  # default --max-queue (cocogan.serve.tiles.MAX_QUEUED_PATCHES)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="explore trained runs in the browser (tiles generated on demand)",
        description="Start a local web server with a page that shows a trained run: drag past "
        "the borders, turn panoramas around, change or interpolate seeds, inspire from an "
        "uploaded image, outline the micro patches. Only the tiles on screen are generated. "
        "Needs the serve extra (pip install 'cocogan[serve]'). See docs/serve.md.")
    parser.add_argument("--run", action="append", default=None, metavar="RUN",
                        help="run directory (newest checkpoint), .safetensors file or shipped "
                        "model name; repeat to serve several runs (default: every shipped "
                        "model, cocogan models)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--raw", action="store_true",
                        help="sample from the raw generator instead of its EMA")
    add_backend_flag(parser)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"micro patches per forward pass (default {DEFAULT_CHUNK})")
    parser.add_argument("--cache-mb", type=float, default=64.0,
                        help="tile cache per run, MiB of PNG (default 64; 0 disables it)")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUE, metavar="PATCHES",
                        help="micro patches queued per run beyond which tile requests get 503 "
                        f"(default {MAX_QUEUE}; a 512-px tile of 8-px patches is 4096)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host header is NAME (repeat; '*' "
                        "for any). By default only the bound address and, on loopback, "
                        "localhost: a guard against DNS rebinding")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cocogan.serve.app import create_app, load_runs
        from cocogan.serve.connections import server_config
        from cocogan.serve.guard import host_rule
    except ModuleNotFoundError as error:
        raise ValueError(f"cocogan serve needs {error.name}: pip install 'cocogan[serve]' "
                         "(scripts/setup.sh installs it)") from None
    from cocogan.training.device import select_device

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} must be in 0..65535")
    if args.chunk < 1 or args.max_queue < 1 or not 0 <= args.cache_mb <= 1 << 20:
        raise ValueError("--chunk and --max-queue must be >= 1 and --cache-mb in 0..1048576")
    runs = load_runs(args.run or shipped_names(), select_device(args.device), raw=args.raw,
                     chunk=args.chunk, cache_bytes=int(args.cache_mb * (1 << 20)),
                     max_queued=args.max_queue, backend=args.backend)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"cocogan serve: {len(runs)} run(s) at http://{shown}:{port}/ (Ctrl+C to stop)",
          flush=True)
    if not _is_loopback(args.host):
        print(f"cocogan serve: warning: --host {args.host} is reachable from other machines; "
              "the server has no authentication", file=sys.stderr)
    app = create_app(runs, host_rule(args.host, args.allow_host))
    uvicorn.Server(server_config(app)).run(sockets=[sock])
    return 0


def shipped_names() -> list[str]:
    """The names of the shipped models (what serve shows without --run), or a one-line error."""
    from cocogan import shipped

    names = [model.name for model in shipped.models()]
    if not names:
        raise ValueError("no trained models are shipped with this package: pass --run RUN "
                         "(a run directory or .safetensors file)")
    return names


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

