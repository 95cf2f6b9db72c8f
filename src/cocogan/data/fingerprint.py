"""Short keys that identify a preprocessed data source, for caching real-data statistics.

A key changes whenever the images a run would see change: another folder, a file added, removed
or rewritten (size or mtime), another resolution or crop mode, or a new preprocessing version.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from .builtin import BUILTIN_DATASETS, RENDER_VERSION, unknown_builtin
from .folder import scan_images
from .imaging import PREPROCESS_VERSION
from .split import parse_split, select_split

BUILTIN_PREFIX = "builtin:"


def _slug(text: str) -> str:
    """File-name-safe version of text, for human-readable keys."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


def dataset_fingerprint(
    source: str,
    height: int,
    width: int,
    celeba_crop: bool = False,
    *,
    cylindrical: bool = False,
    resample: str = "lanczos",
) -> str:
    """Key such as ``celeba-64x64-celeba-1a2b3c4d5e6f``, safe to use in a file name.

    Args:
        source: ``builtin:NAME`` or a folder path, as given to ``build_dataset``.
        height, width: image size the data is resized to.
        celeba_crop: whether the CelebA face box is applied.
        cylindrical: panoramas: resized without cropping, and evaluated rolled (N11).
        resample: the resize filter (``data.resample``); part of the key unless "lanczos".

    Raises:
        DataError: unknown built-in name, or a folder that does not exist.
    """
    mode = "celeba" if celeba_crop else "stretch" if cylindrical else "cover"
    # Filter and roll name the key only when not the defaults, so older keys stay valid.
    mode += "" if resample == "lanczos" else f"-{resample}"
    rolled = "|rolled" if cylindrical else ""
    digest = hashlib.sha256()
    if source.startswith(BUILTIN_PREFIX):
        name = source[len(BUILTIN_PREFIX) :]
        if name not in BUILTIN_DATASETS:
            raise unknown_builtin(name)
        digest.update(f"builtin|{name}|{height}x{width}|v{RENDER_VERSION}{rolled}".encode())
        return f"builtin-{_slug(name)}-{height}x{width}-{digest.hexdigest()[:12]}"
    folder, split = parse_split(source)
    root = Path(folder).expanduser().resolve()
    side = "" if split is None else f"|{split}"
    digest.update(f"folder|{root}|{height}x{width}|{mode}|v{PREPROCESS_VERSION}{side}{rolled}"
                  .encode())
    for path in select_split(scan_images(root), split, root):
        stat = path.stat()
        digest.update(
            f"|{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}".encode()
        )
    name = root.name if split is None else f"{root.name}-{split}"
    return f"{_slug(name)}-{height}x{width}-{mode}-{digest.hexdigest()[:12]}"
