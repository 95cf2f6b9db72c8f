"""The registry of trained models shipped with the package, loadable by name (``--run
emoji32``): names, versions and cards only (:mod:`cocogan.checkpoint` resolves ``--run``).

Each model is ``NAME-vK.safetensors`` (an inference-only export) and its card ``NAME-vK.json``
(how it was trained, figures, applications, a fixed-seed fingerprint and the SHA-256 the
weights are checked against before loading). ``NAME`` alone is the newest version; a broken
card makes only its own name unusable. ``$COCOGAN_SHIPPED_DIR`` points at another folder.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cocogan.yaml_limits import MAX_CONFIG_BYTES, MAX_STRING, check_depth, cut

PACKAGE_DIR = Path(__file__).resolve().parent
DIR_ENV = "COCOGAN_SHIPPED_DIR"
FILE_NAME = re.compile(r"^(?P<name>[a-z0-9][a-z0-9_-]*)-v(?P<version>\d+)$")
# card field -> type; a card may hold more (preset, notes, ...)
CARD_FIELDS: dict[str, type | tuple[type, ...]] = {
    "name": str, "version": int, "description": str, "data": str, "command": str,
    "steps": int, "train_seconds": (int, float), "matmul_gflops": (int, float),
    "figures": dict, "fingerprint": dict, "applications": list, "weights_sha256": str,
}
FINGERPRINT_FIELDS = ("seed", "count", "sha256", "mean")
CARD_TEXT = MAX_STRING  # characters of a card string kept (control characters removed)


class ShippedError(ValueError):
    """A shipped name is unknown, its card is broken or its weights file is not the card's."""


@dataclass(frozen=True)
class ShippedModel:
    """One shipped model: its weights file and card, or why the card is unusable."""

    name: str
    version: int
    path: Path  # the .safetensors file
    card: dict[str, Any]
    problem: str | None = None  # a broken card: the one-line reason

    @property
    def key(self) -> str:
        """``NAME-vK``: the name of this exact version."""
        return f"{self.name}-v{self.version}"

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def verified(self) -> Path:
        """The weights file, after checking the card and the file's SHA-256 against it."""
        if self.problem:
            raise ShippedError(self.problem)
        if file_sha256(self.path) != self.card["weights_sha256"]:
            raise ShippedError(f"shipped model {self.key}: {self.path.name} is not the file its "
                               "card describes (SHA-256 differs): reinstall cocogan")
        return self.path


def shipped_dir() -> Path:
    """The registry's folder: ``$COCOGAN_SHIPPED_DIR`` if set, else this package's folder."""
    return Path(os.environ[DIR_ENV]) if os.environ.get(DIR_ENV) else PACKAGE_DIR


def all_versions(folder: Path | None = None) -> list[ShippedModel]:
    """Every shipped file with its card (broken ones with their problem), by name, version."""
    folder = shipped_dir() if folder is None else Path(folder)
    found = []
    for path in sorted(folder.glob("*.safetensors")):
        match = FILE_NAME.match(path.stem)
        if match:
            name, version = match["name"], int(match["version"])
            try:
                found.append(ShippedModel(name, version, path, read_card(path, name, version)))
            except ShippedError as error:
                found.append(ShippedModel(name, version, path, {}, str(error)))
    return sorted(found, key=lambda m: (m.name, m.version))


def models(folder: Path | None = None) -> list[ShippedModel]:
    """The newest version of each shipped model, sorted by name; a name whose newest card is
    broken is left out (``--run NAME`` then says why)."""
    newest = {model.name: model for model in all_versions(folder)}  # versions ascend
    return [model for model in newest.values() if model.problem is None]


def find(value: str, folder: Path | None = None) -> ShippedModel | None:
    """The shipped model ``NAME`` (newest version) or ``NAME-vK``, or None."""
    versions = all_versions(folder)
    exact = [m for m in versions if m.key == value]
    named = [m for m in versions if m.name == value]
    return (exact or named or [None])[-1]


def is_name(value: str | Path) -> bool:
    """True when ``value`` has the form of a shipped name (``NAME`` or ``NAME-vK``)."""
    return FILE_NAME.match(f"{value}-v0") is not None


def output_folder(value: str | Path) -> Path | None:
    """``./generated/NAME`` for a ``--run`` value naming a shipped model (what generate and eval
    write for it: never the package's folder), else None."""
    shipped = not Path(value).exists() and is_name(value) and find(str(value)) is not None
    return Path("generated") / str(value) if shipped else None


def file_sha256(path: Path) -> str:
    """SHA-256 of a file's bytes (the card's ``weights_sha256``)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_card(path: Path, name: str, version: int) -> dict[str, Any]:
    """The card beside ``path``: bounded, with every field of :data:`CARD_FIELDS`, each string
    cleaned and cut to CARD_TEXT characters."""
    card_path = path.with_suffix(".json")
    try:
        if card_path.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"{card_path.stat().st_size} bytes, more than a card's "
                             f"{MAX_CONFIG_BYTES}")
        card = json.loads(card_path.read_text())
        check_depth(card, card_path.name)
    except (OSError, ValueError, RecursionError) as error:
        raise ShippedError(f"shipped model {path.name} has no readable card {card_path.name} "
                           f"({cut(str(error).splitlines()[0] if str(error) else 'nested')})"
                           ) from None
    if not isinstance(card, dict):
        raise ShippedError(f"shipped card {card_path} is not a JSON object")
    card = _clean(card)
    problems = [key for key, kind in CARD_FIELDS.items()
                if not isinstance(card.get(key), kind) or isinstance(card.get(key), bool)]
    stamp = card.get("fingerprint")
    problems += [f"fingerprint.{key}" for key in FINGERPRINT_FIELDS
                 if isinstance(stamp, dict) and key not in stamp]
    if not problems and (card["name"], card["version"]) != (name, version):
        problems = [f"name/version (the file says {name} v{version})"]
    if problems:
        raise ShippedError(f"shipped card {card_path} lacks or mistypes: "
                           f"{', '.join(problems)}")
    return card


def _clean(value: Any) -> Any:
    """``value`` with every string (keys too) through :func:`cut` (echoed by cocogan models)."""
    if isinstance(value, str):
        return cut(value, CARD_TEXT)
    if isinstance(value, dict):
        return {_clean(k): _clean(v) for k, v in value.items()}
    return [_clean(v) for v in value] if isinstance(value, list) else value
