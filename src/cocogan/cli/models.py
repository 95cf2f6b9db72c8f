"""`cocogan models`: the trained models shipped with the package (:mod:`cocogan.shipped`), and
for maintainers the card fields of a model to ship (``--fingerprint FILE [--write]``)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from cocogan import shipped


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="list the trained models shipped with cocogan (names for --run)",
        description="List the shipped trained models: names first (one per line, what --run "
        "takes), then what each is (data, steps, figures, file size); README, 'Trained models'.")
    parser.add_argument("--json", action="store_true", help="print the model cards as JSON")
    parser.add_argument("--fingerprint", type=Path, metavar="FILE",
                        help="maintainers: print the fingerprint and supported applications of "
                        "a .safetensors file (the card fields of a model to ship)")
    parser.add_argument("--write", action="store_true",
                        help="with --fingerprint: store them in FILE.json (the card), adding "
                        "name, version and steps when missing")


def run(args: argparse.Namespace) -> int:
    if args.fingerprint is not None:
        return _fingerprint(args.fingerprint, args.write)
    if args.write:
        raise ValueError("--write goes with --fingerprint FILE")
    models = shipped.models()
    for broken in (m for m in shipped.all_versions() if m.problem):
        print(f"cocogan models: warning: {broken.problem}", file=sys.stderr)
    if args.json:
        print(json.dumps([{**m.card, "path": str(m.path), "size": m.size} for m in models],
                         indent=2))
        return 0
    if not models:
        print(f"no trained models are shipped in {shipped.shipped_dir()}: train one with "
              "cocogan train and pass its folder as --run")
        return 0
    print(*(m.name for m in models), "", *(describe(m) for m in models), sep="\n")
    return 0


def describe(model: Any) -> str:
    """A few lines saying what a shipped model is."""
    card = model.card
    figures = ", ".join(f"{k} {_number(v)}" for k, v in card["figures"].items()) or "none"
    return "\n".join([
        f"{model.name} (v{model.version}): {card['description']}",
        f"  data {card['data']}; {card['steps']} steps, {_number(card['train_seconds'])} s of "
        f"training at {_number(card['matmul_gflops'])} GFLOP/s matmul",
        f"  figures: {figures}",
        f"  applications: {', '.join(card['applications'])}",
        f"  file: {model.path.name}, {model.size / 1e6:.1f} MB",
    ])


def _number(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else \
        value if isinstance(value, str) else json.dumps(value)


def _fingerprint(file: Path, write: bool) -> int:
    from cocogan.apps.fingerprint import fingerprint, supported_applications
    from cocogan.checkpoint import read_metadata
    from cocogan.export import CARD_FORMAT
    from cocogan.outputs import atomic_write, read_json_object

    if not file.is_file():
        raise FileNotFoundError(f"--fingerprint {file} does not exist: name a .safetensors file")
    fields = {"fingerprint": fingerprint(file), "applications": supported_applications(file),
              "weights_sha256": shipped.file_sha256(file)}
    print(json.dumps(fields, indent=2))
    if not write:
        return 0
    card_path = file.with_suffix(".json")
    card = read_json_object(card_path) if card_path.exists() else {"format": CARD_FORMAT}
    if card is None or card.get("format") != CARD_FORMAT:  # a user's own JSON is never edited
        raise ValueError(f"--write: {card_path} is not a cocogan model card (a JSON object "
                         f'with "format": "{CARD_FORMAT}"), so it is not edited: move it away, '
                         "or export the model again (cocogan export) to write its card")
    match = shipped.FILE_NAME.match(file.stem)
    if match:
        card.setdefault("name", match["name"])
        card.setdefault("version", int(match["version"]))
    card.setdefault("steps", int(read_metadata(file).get("step", 0)))
    card.setdefault("applications", fields["applications"])
    card["fingerprint"], card["weights_sha256"] = fields["fingerprint"], fields["weights_sha256"]
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(card_path, lambda tmp: tmp.write_text(text))
    missing = [key for key in shipped.CARD_FIELDS if key not in card]
    print(f"cocogan models: wrote {card_path}"
          + (f"; still to fill in: {', '.join(missing)}" if missing else ""))
    return 0
