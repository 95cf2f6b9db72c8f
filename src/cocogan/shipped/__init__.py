"""Trained models that ship with the package, loadable by name (``--run emoji32``).

Each model is two files in this folder (package data): ``NAME-vK.safetensors``, an
inference-only export (``cocogan export --format safetensors``: EMA generator and config), and
``NAME-vK.json``, its card: how it was trained (data, exact command, steps, time, the machine's
matmul rate), what was measured on it (figures), which applications it supports, and a
fixed-seed fingerprint of its samples (:func:`fingerprint`), so a test can check that the file
still draws the images its figures were measured on. ``NAME`` alone means the newest version.

``$COCOGAN_SHIPPED_DIR`` points the registry at another folder (tests, a private collection).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocogan.checkpoint import CheckpointError

PACKAGE_DIR = Path(__file__).resolve().parent
DIR_ENV = "COCOGAN_SHIPPED_DIR"
FILE_NAME = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*)-v(?P<version>\d+)$")
# card field -> type; a card may hold more (preset, notes, ...)
CARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "version": int, "description": str, "data": str, "command": str,
    "steps": int, "train_seconds": (int, float), "matmul_gflops": (int, float),
    "figures": dict, "fingerprint": dict, "applications": list,
}
FINGERPRINT_FIELDS = ("seed", "count", "sha256", "mean")
FINGERPRINT_SEED, FINGERPRINT_COUNT = 0, 8  # the images of `cocogan generate full` by default


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its weights file, card and file size."""

    name: str
    version: int
    path: Path  # the .safetensors file
    card: dict[str, Any]

    @property
    def key(self) -> str:
        """``NAME-vK``: the name of this exact version."""
        return f"{self.name}-v{self.version}"

    @property
    def size(self) -> int:
        return self.path.stat().st_size


def shipped_dir() -> Path:
    """The registry's folder: ``$COCOGAN_SHIPPED_DIR`` if set, else this package's folder."""
    return Path(os.environ[DIR_ENV]) if os.environ.get(DIR_ENV) else PACKAGE_DIR


def all_versions(folder: Path | None = None) -> list[ShippedModel]:
    """Every shipped file with its card, sorted by name then version.

    Raises:
        CheckpointError: a weights file without a readable, complete card (a packaging bug).
    """
    folder = shipped_dir() if folder is None else Path(folder)
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        match = FILE_NAME.match(path.stem)
        if match:
            name, version = match["name"], int(match["version"])
            found.append(ShippedModel(name, version, path, read_card(path, name, version)))
    return sorted(found, key=lambda m: (m.name, m.version))


def models(folder: Path | None = None) -> list[ShippedModel]:
    """The newest version of each shipped model, sorted by name."""
    newest: dict[str, ShippedModel] = {}
    for model in all_versions(folder):
        newest[model.name] = model  # versions ascend
    return list(newest.values())


def find(value: str, folder: Path | None = None) -> ShippedModel | None:
    """The shipped model ``NAME`` (newest version) or ``NAME-vK``, or None."""
    versions = all_versions(folder)
    exact = [m for m in versions if m.key == value]
    named = [m for m in versions if m.name == value]
    return (exact or named or [None])[-1]


def lookup(value: str, folder: Path | None = None) -> ShippedModel:
    """:func:`find`, or a one-line CheckpointError listing the shipped names."""
    model = find(value, folder)
    if model is None:
        known = ", ".join(m.name for m in models(folder)) or "none"
        raise CheckpointError(f"no shipped model named {value!r} (shipped: {known}; "
                              "cocogan models lists them)")
    return model


def resolve(value: str | Path) -> ShippedModel | None:
    """The shipped model a ``--run`` value names, or None when it is an existing path (which
    always wins) or no shipped name."""
    if Path(value).exists() or not FILE_NAME.match(f"{value}-v0"):
        return None  # a path, or not a NAME / NAME-vK
    return find(str(value))


def output_folder(value: str | Path) -> Path | None:
    """``./generated/NAME`` for a ``--run`` value naming a shipped model (what generate and eval
    write for it: never the package's folder), else None."""
    return Path("generated") / str(value) if resolve(value) is not None else None


def read_card(path: Path, name: str, version: int) -> dict[str, Any]:
    """The card beside ``path``, checked to hold every field of :data:`CARD_FIELDS`."""
    card_path = path.with_suffix(".json")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as error:
        raise CheckpointError(f"shipped model {path.name} has no readable card {card_path.name} "
                              f"({str(error).splitlines()[0]})") from None
    if not isinstance(card, dict):
        raise CheckpointError(f"shipped card {card_path} is not a JSON object")
    problems = [key for key, kind in CARD_FIELDS.items()
                if not isinstance(card.get(key), kind) or isinstance(card.get(key), bool)]
    stamp = card.get("fingerprint")
    problems += [f"fingerprint.{key}" for key in FINGERPRINT_FIELDS
                 if isinstance(stamp, dict) and key not in stamp]
    if not problems and (card["name"], card["version"]) != (name, version):
        problems = [f"name/version (the file says {name} v{version})"]
    if problems:
        raise CheckpointError(f"shipped card {card_path} lacks or mistypes: "
                              f"{', '.join(problems)}")
    return card


# ---- fingerprint -----------------------------------------------------------------------------
def fingerprint(file: str | Path, seed: int = FINGERPRINT_SEED, count: int = FINGERPRINT_COUNT
                ) -> dict[str, Any]:
    """The card's ``fingerprint`` of a weights file: the full images of seeds seed..seed+count-1
    drawn as ``cocogan generate full`` draws them on a CPU (EMA generator, default chunk).

    Returns:
        {"seed", "count", "sha256": of the uint8 pixels (count, H, W, 3), those of the PNG
        files, "mean": of the images in [-1, 1] before rounding (a figure that thread counts
        and CPUs change by ~1e-7 where they flip a pixel's rounding)}.
    """
    import torch

    from cocogan.apps import full_images, images_per_pass, latents
    from cocogan.apps.io import to_uint8
    from cocogan.checkpoint import load_model

    config, model, _ = load_model(file, "cpu")
    z = latents(list(range(seed, seed + count)), config.model.z_dim)
    per_pass = images_per_pass(model)  # the batches of `generate full`
    images = torch.cat([full_images(model, z[start:start + per_pass])
                        for start in range(0, count, per_pass)])  # (count, 3, H, W)
    pixels = to_uint8(images)  # (count, H, W, 3)
    return {"seed": seed, "count": count, "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "mean": round(float(images.double().mean()), 8)}


def supported_applications(file: str | Path) -> list[str]:
    """The applications of ``cocogan generate`` a weights file can run: inspire needs D and Q
    (not in inference-only files), panorama a cylindrical model."""
    from cocogan.apps import APPLICATIONS
    from cocogan.checkpoint import INFERENCE_CONTENTS, load_model, read_metadata

    config, _, _ = load_model(file, "cpu")
    inference_only = read_metadata(Path(file)).get("contents") == INFERENCE_CONTENTS
    return [app for app in APPLICATIONS if not (app == "inspire" and inference_only)
            and not (app == "panorama" and config.model.coords != "cylindrical")]
