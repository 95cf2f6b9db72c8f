"""`cocogan serve`: a local web page to explore trained runs, generating only what is on screen.

Binds the socket itself (a busy port is a clear error; ``--port 0`` picks a free one), prints
the URL and serves with uvicorn until Ctrl+C (docs/serve.md)."""

from __future__ import annotations

import argparse
import socket
import sys

from cocogan import shipped
from cocogan.cli.generate import RUN_HELP, add_sampling_flags
from cocogan.render import DEFAULT_CHUNK
from cocogan.serve.guard import bracket, host_rule, is_loopback
from cocogan.serve.tiles import MAX_QUEUED_PATCHES
from cocogan.training.device import select_device


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="explore trained runs in the browser (tiles generated on demand)",
        description="A local web page to explore trained runs (drag past the borders, change "
        "or interpolate seeds, inspire from an image); only the tiles on screen are generated. "
        "Needs pip install 'cocogan[serve]'. See docs/serve.md.")
    parser.add_argument("--run", action="append", default=None, metavar="RUN",
                        help=f"{RUN_HELP}; repeat for several runs (default: every shipped model)")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free)")
    add_sampling_flags(parser)
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK,
                        help=f"micro patches per forward pass (default {DEFAULT_CHUNK})")
    parser.add_argument("--cache-mb", type=float, default=64.0,
                        help="tile cache per run, MiB of PNG (default 64; 0 disables it)")
    parser.add_argument("--max-queue", type=int, default=MAX_QUEUED_PATCHES, metavar="PATCHES",
                        help="micro patches queued per run beyond which tile requests get 503 "
                        f"(default {MAX_QUEUED_PATCHES}; a 512-px tile of 8-px patches is 4096)")
    parser.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                        help="also answer requests with Host NAME (repeat; '*': any); by "
                        "default only the bound address (and localhost): against DNS rebinding")


def run(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from cocogan.serve.app import create_app, load_runs
        from cocogan.serve.connections import server_config
    except ModuleNotFoundError as error:
        raise ValueError(f"cocogan serve needs {error.name}: pip install 'cocogan[serve]' "
                         "(scripts/setup.sh installs it)") from None

    if not 0 <= args.port <= 65535:
        raise ValueError(f"--port {args.port} must be in 0..65535")
    if args.chunk < 1 or args.max_queue < 1 or not 0 <= args.cache_mb <= 1 << 20:
        raise ValueError("--chunk and --max-queue must be >= 1 and --cache-mb in 0..1048576")
    names = args.run or [model.name for model in shipped.models()]
    if not names:
        raise ValueError("no trained models are shipped with this package: pass --run RUN "
                         "(a run directory or .safetensors file)")
    runs = load_runs(names, select_device(args.device), raw=args.raw, chunk=args.chunk,
                     cache_bytes=int(args.cache_mb * (1 << 20)), max_queued=args.max_queue,
                     backend=args.backend)
    sock = bind(args.host, args.port)
    host, port = sock.getsockname()[:2]
    print(f"cocogan serve: {len(runs)} run(s) at http://{bracket(host)}:{port}/ (Ctrl+C to stop)",
          flush=True)
    if not is_loopback(args.host):
        print(f"cocogan serve: warning: --host {args.host} is reachable from other machines; "
              "the server has no authentication", file=sys.stderr)
    app = create_app(runs, host_rule(args.host, args.allow_host))
    uvicorn.Server(server_config(app)).run(sockets=[sock])
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
