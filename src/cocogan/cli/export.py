"""`cocogan export`: a trained run's EMA generator as one portable file.

``--format onnx`` writes an ONNX graph any ONNX runtime runs (a viewer, a game engine, a
browser); ``--format safetensors`` writes inference-only weights (EMA generator and config) that
every ``--run`` command loads. Beside either goes ``<output>.json``, the model card: geometry,
coordinate system and how a patch position becomes a coordinate (docs/applications.md, "Outside
Python"). The ONNX file carries the same card in its metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from cocogan.export import FORMATS


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    formats = "; ".join(f"{key}: {help_line}" for key, (_, help_line) in FORMATS.items())
    parser = sub.add_parser(
        name, help="write a trained generator as one portable file (ONNX or safetensors)",
        description="Write the EMA generator of a run (eval mode, spectral norm applied) to one "
        "file, with its model card (geometry, coordinate recipe) as OUTPUT.json beside it. "
        f"Formats: {formats}. See docs/applications.md, 'Outside Python'.")
    parser.add_argument("--run", required=True, metavar="RUN",
                        help="run directory (newest checkpoint), .safetensors checkpoint or "
                        "shipped model name (cocogan models)")
    parser.add_argument("--output", required=True, type=Path, metavar="FILE",
                        help="file ending in .onnx or .safetensors")
    parser.add_argument("--format", default=None, metavar="FORMAT",
                        help=f"{' or '.join(FORMATS)} (default: from the --output suffix)")
    parser.add_argument("--no-check", action="store_true",
                        help="onnx: skip running the file with onnxruntime against PyTorch")
    parser.add_argument("--force", action="store_true",
                        help="export even when the memory estimate exceeds what is available")


def run(args: argparse.Namespace) -> int:
    from cocogan.export import CHECK_TOLERANCE, export_run

    result = export_run(args.run, args.output, args.format, check=not args.no_check,
                        force=args.force, report=lambda line: print(f"cocogan export: {line}"))
    if result.path.suffix == ".onnx":
        if result.max_diff is not None:
            check = (f"onnxruntime matches PyTorch: max |diff| {result.max_diff:.2g} "
                     f"(limit {CHECK_TOLERANCE:g})")
        else:
            check = "not checked (" + ("--no-check" if args.no_check
                                       else "onnxruntime is not installed") + ")"
        print(f"cocogan export: {check}")
    print(f"cocogan export: wrote {result.path} and its model card {result.card.name}")
    return 0
