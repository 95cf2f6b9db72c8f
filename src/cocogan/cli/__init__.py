"""The `cocogan` command. Each subcommand lives in its own module with ``add_parser`` and
``run``; user errors become one clear line on stderr and exit code 2, never a traceback."""

from __future__ import annotations

import argparse
import importlib
import sys

from cocogan.config import ConfigError

# subcommand -> module under cocogan.cli; modules are imported lazily so `cocogan presets`
# does not pay for the training stack.
SUBCOMMANDS: dict[str, str] = {
    "presets": "presets",
    "train": "train",
    "generate": "generate",
    "eval": "evaluate",
    "plot": "plot",
    "demo": "demo",
    "serve": "serve",
}


def _available() -> dict[str, object]:
    modules = {}
    for name, module in SUBCOMMANDS.items():
        try:
            modules[name] = importlib.import_module(f"cocogan.cli.{module}")
        except ModuleNotFoundError as error:
            if error.name != f"cocogan.cli.{module}":
                raise
    return modules


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, object]]:
    parser = argparse.ArgumentParser(
        prog="cocogan", description="COCO-GAN: generation by parts via conditional coordinating.")
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules = _available()
    for name, module in modules.items():
        module.add_parser(sub, name)  # type: ignore[attr-defined]
    return parser, modules


def main(argv: list[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(modules[args.command].run(args) or 0)  # type: ignore[attr-defined]
    except (ConfigError, FileNotFoundError, ValueError) as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        print(f"cocogan {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"cocogan {args.command}: interrupted", file=sys.stderr)
        return 130


def _version() -> str:
    from cocogan import __version__

    return f"cocogan {__version__}"


if __name__ == "__main__":
    sys.exit(main())
