"""`cocogan export`: a trained run's EMA generator as one portable file (ONNX for any ONNX
runtime, or inference-only safetensors) with its model card beside it (docs/applications.md,
"Outside Python")."""

from __future__ import annotations

import argparse
from pathlib import Path

from cocogan.cli.generate import RUN_HELP
from cocogan.export import FORMATS


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    formats = "; ".join(f"{key}: {help_line}" for key, (_, help_line) in FORMATS.items())
    parser = sub.add_parser(
        name, help="write a trained generator as one portable file (ONNX or safetensors)",
        description="Write the EMA generator of a run (eval mode, spectral norm applied) to one "
        "file, with its model card (geometry, coordinate recipe) as OUTPUT.json beside it. "
        f"Formats: {formats}. See docs/applications.md, 'Outside Python'.")
    parser.add_argument("--run", required=True, metavar="RUN", help=RUN_HELP)
    parser.add_argument("--output", required=True, type=Path, metavar="FILE",
                        help="file ending in .onnx or .safetensors")
    parser.add_argument("--format", default=None, metavar="FORMAT",
                        help=f"{' or '.join(FORMATS)} (default: from the --output suffix)")
    parser.add_argument("--no-check", action="store_true",
                        help="onnx: skip running the file with onnxruntime against PyTorch")
    parser.add_argument("--no-discriminator", action="store_true",
                        help="safetensors: the EMA generator alone (about half the size; no "
                        "inspire, no spatial metric, no --init-from D)")
    parser.add_argument("--force", action="store_true",
                        help="export even when the memory estimate exceeds what is available")


def run(args: argparse.Namespace) -> int:
    from cocogan.export import CHECK_TOLERANCE, export_run

    result = export_run(args.run, args.output, args.format, check=not args.no_check,
                        force=args.force, discriminator=not args.no_discriminator,
                        report=lambda line: print(f"cocogan export: {line}"))
    if result.path.suffix == ".onnx" and result.max_diff is not None:
        print(f"cocogan export: onnxruntime matches PyTorch: max |diff| {result.max_diff:.2g} "
              f"(limit {CHECK_TOLERANCE:g})")
    elif result.path.suffix == ".onnx":
        why = "--no-check" if args.no_check else "onnxruntime is not installed"
        print(f"cocogan export: not checked ({why})")
    print(f"cocogan export: wrote {result.path} and its model card {result.card.name}")
    return 0
