"""The `cocogan` command. Each subcommand lives in its own module with ``add_parser`` and
``run``. :func:`main` is the one error handler: expected failures (bad input, a full or
read-only disk, undecodable images, invalid YAML) become one line on stderr naming the file and
the fix, with exit code 2; anything else shows its traceback and asks to be reported."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator

from cocogan.config import ConfigError
from cocogan.outputs import first_line
from cocogan.version import __version__

# subcommand -> its module under cocogan.cli
SUBCOMMANDS: dict[str, str] = {
    "presets": "presets", "train": "train", "generate": "generate", "eval": "evaluate",
    "plot": "plot", "demo": "demo", "serve": "serve", "export": "export", "models": "models"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="cocogan", description="COCO-GAN: generation by parts via conditional coordinating.")
    parser.add_argument("--version", action="version", version=f"cocogan {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = {name: importlib.import_module(f"cocogan.cli.{module}")
               for name, module in SUBCOMMANDS.items()}
    for name, module in modules.items():
        module.add_parser(sub, name)  # type: ignore[attr-defined]
    args = parser.parse_args(argv)
    command = f"cocogan {args.command}"
    try:
        with _terminate_as_interrupt():
            return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        message = explain(error)
        if message is None:
            traceback.print_exc()
            print(f"{command}: unexpected error: please report it on the cocogan issue tracker "
                  "with the command line and the traceback above", file=sys.stderr)
            return 1
        print(f"{command}: error: {message}", file=sys.stderr)
        return 2


# errno -> what to do about it; the file comes from the error itself.
_OS_FIXES: dict[int, str] = {
    errno.ENOSPC: "the disk is full: free space or write elsewhere",
    errno.EDQUOT: "the disk quota is exhausted: free space or write elsewhere",
    errno.EROFS: "the file system is read-only: write somewhere else",
    errno.EACCES: "permission denied: choose a location you may write to",
    errno.EPERM: "operation not permitted: choose a location you may write to",
    errno.ENOTDIR: "a part of the path is a file, not a folder: fix the path",
    errno.EISDIR: "it is a folder: name a file",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.ELOOP: "too many symbolic links (a link loop?): fix the links",
    errno.ENOENT: "it does not exist: check the path",
    errno.EIO: "an input/output error: check the disk (or network file system)",
    errno.EEXIST: "it already exists: choose another name",
}


def explain(error: BaseException) -> str | None:
    """One line for an expected failure (bad input, a full or read-only disk), else None."""
    import yaml
    from PIL import Image, UnidentifiedImageError

    if isinstance(error, OSError) and error.errno in _OS_FIXES:
        where = f" {error.filename}" if error.filename else ""
        detail = error.strerror or os.strerror(error.errno)
        return f"{where.strip() or 'file system'}: {detail}; {_OS_FIXES[error.errno]}"
    if isinstance(error, UnidentifiedImageError | Image.DecompressionBombError):
        return first_line(error)
    if isinstance(error, yaml.YAMLError):
        return f"invalid YAML: {first_line(error)}"
    if isinstance(error, MemoryError):
        return ("out of memory: lower --chunk or the requested size (the estimate printed "
                "before starting says how much is needed)")
    if isinstance(error, ConfigError | ValueError | FileNotFoundError):
        return first_line(error) if str(error).strip() else repr(error)
    return None


@contextlib.contextmanager
def _terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so temporary files are removed (training has its own
    handler while it runs, which writes a checkpoint first)."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)

