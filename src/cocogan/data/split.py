"""A fixed train / held-out split of an image folder, named in the ``--data`` value.

``DIR::train`` and ``DIR::holdout`` select the two parts of ``DIR``. A file's side depends only
on its name: hex code-point names (emoji ``1f44b-1f3fb.png``) group by their first code point,
so skin-tone variants never sit on both sides, and a group is held out when the SHA-256 of its
key (first 8 hex digits) is divisible by ``HOLDOUT_EVERY``. Degenerate splits are refused.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .errors import DataError

SPLIT_SEPARATOR = "::"
SPLITS = ("train", "holdout")
HOLDOUT_EVERY = 10
SHARE_BAND = (0.05, 0.20)  # held-out share of the files a sane split gives
RELIABLE_GROUPS = 1000  # 1,000 groups: the share's sd is 0.95 %, 5 % is 5.3 sd below 10 %
_CODE_POINTS = re.compile(r"[0-9a-fA-F]{4,6}(-[0-9a-fA-F]{4,6})*")  # 1f44b-1f3fb
_WHOLE = "use DIR whole, or make your own DIR_train / DIR_holdout folders"


def parse_split(source: str) -> tuple[str, str | None]:
    """(folder, split or None) of a ``--data`` value such as ``emoji::holdout`` (or a folder)."""
    root, sep, split = source.rpartition(SPLIT_SEPARATOR)
    if not sep or (split not in SPLITS and Path(source).expanduser().is_dir()):
        return source, None
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r} in {source!r}: write {root or 'DIR'}::train or "
                        f"{root or 'DIR'}::holdout (or {root or 'DIR'} for every image)")
    if not root:
        raise DataError(f"{source!r} names no folder: write DIR::{split}")
    return root, split


def group_key(path: Path) -> str:
    """The name shared by one image's variants: an emoji's first code point, else the stem."""
    stem = path.name.split(".", 1)[0]
    return stem.split("-", 1)[0] if _CODE_POINTS.fullmatch(stem) else stem


def is_held_out(path: Path) -> bool:
    digest = hashlib.sha256(group_key(path).encode()).hexdigest()
    return int(digest[:8], 16) % HOLDOUT_EVERY == 0


def select_split(paths: list[Path], split: str | None, root: Path) -> list[Path]:
    """The files of one side of the split in order (None: all); DataError when degenerate."""
    if split is None or not paths:
        return paths
    held = [is_held_out(p) for p in paths]
    share, groups = sum(held) / len(paths), len({group_key(p) for p in paths})
    where = f"{root}::{split}"
    if share in (0.0, 1.0):
        side = "held-out" if share == 0.0 else "training"
        raise DataError(f"{where}: the fixed split leaves the {side} side empty ({len(paths)} "
                        f"files in {groups} name groups): {_WHOLE}")
    if groups >= RELIABLE_GROUPS and not SHARE_BAND[0] <= share <= SHARE_BAND[1]:
        raise DataError(f"{where}: the fixed split holds out {share:.1%} of the files, outside "
                        f"{SHARE_BAND[0]:.0%}-{SHARE_BAND[1]:.0%} (names sharing a code-point "
                        f"prefix?): {_WHOLE}")
    keep_held_out = split == "holdout"
    return [p for p, h in zip(paths, held, strict=True) if h == keep_held_out]
