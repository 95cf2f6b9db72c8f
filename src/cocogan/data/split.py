"""A fixed train / held-out split of an image folder, named in the ``--data`` value.

``DIR::train`` and ``DIR::holdout`` select the two parts of ``DIR``; plain ``DIR`` is all of
it. A file's side depends only on its name, so the split is the same on every machine and does
not move when files are added: the group key is the file name up to its first ``-`` or ``.``
(emoji ``1f44b-1f3fb.png`` and ``1f44b.png`` are one group, so skin-tone variants of one emoji
never sit on both sides), and a group is held out when the first 8 hex digits of the SHA-256 of
its key are divisible by ``HOLDOUT_EVERY``: about one group in ten.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from .errors import DataError

SPLIT_SEPARATOR = "::"
SPLITS = ("train", "holdout")
HOLDOUT_EVERY = 10


def parse_split(source: str) -> tuple[str, str | None]:
    """(folder, split or None) of a ``--data`` value such as ``emoji::holdout``."""
    if SPLIT_SEPARATOR not in source:
        return source, None
    root, split = source.rsplit(SPLIT_SEPARATOR, 1)
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} in {source!r}: write {root}::train or "
                        f"{root}::holdout (or {root} for every image)")
    return root, split


def group_key(path: Path) -> str:
    """The name shared by the variants of one image (text before the first '-' or '.')."""
    return path.name.split(".", 1)[0].split("-", 1)[0]


def is_held_out(path: Path) -> bool:
    digest = hashlib.sha256(group_key(path).encode()).hexdigest()
    return int(digest[:8], 16) % HOLDOUT_EVERY == 0


def select_split(paths: list[Path], split: str | None) -> list[Path]:
    """The files of one side of the split, in their given order (all of them for None)."""
    if split is None:
        return paths
    keep_held_out = split == "holdout"
    return [p for p in paths if is_held_out(p) == keep_held_out]
