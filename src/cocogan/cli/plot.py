"""`cocogan plot RUN_DIR`: the paper's training indicators (Appendix F) as a PNG: the
Wasserstein estimate L_W and every metric logged by `--eval-every` over steps."""

from __future__ import annotations

import argparse
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(name, help="plot L_W and evaluated metrics over training steps")
    parser.add_argument("run", help="run directory (reads its metrics.jsonl)")
    parser.add_argument("--out", help="output PNG (default RUN/training-indicators.png)")


def run(args: argparse.Namespace) -> int:
    from cocogan.evaluation.callback import INDICATOR_FILE, plot_indicators
    from cocogan.outputs import claim_file

    run_dir = Path(args.run)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"run directory {run_dir} does not exist")
    # the default name obeys the write rule too: RUN may be a user's folder with its own file
    out = claim_file(Path(args.out) if args.out else run_dir / INDICATOR_FILE, "--out")
    print(f"wrote {plot_indicators(run_dir / 'metrics.jsonl', out)}")
    return 0
