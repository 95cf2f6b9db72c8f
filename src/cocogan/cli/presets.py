"""`cocogan presets`: the table of every preset with sizes and parameter counts."""

from __future__ import annotations

import argparse
import json

from cocogan.summary import format_table, preset_rows


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(name, help="list the presets (paper experiments and small ones)")
    parser.add_argument("--json", action="store_true", help="print a JSON list instead")


def run(args: argparse.Namespace) -> int:
    rows = preset_rows()
    print(json.dumps(rows, indent=2) if args.json else format_table(rows))
    return 0
