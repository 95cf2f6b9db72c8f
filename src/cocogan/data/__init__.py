"""Data layer: real image folders and procedural built-ins as datasets of full images.

Every item is a float32 tensor (3, H, W) in [-1, 1]; cropping macro patches (T(X->M), Sec. 2)
belongs to training. This package imports only torch, NumPy and PIL, never other cocogan modules.
"""

from __future__ import annotations

import hashlib
import re
import warnings
from pathlib import Path

import torch
from torch.utils.data import Dataset

from .builtin import BUILTIN_DATASETS, RENDER_VERSION, BuiltinDataset, BuiltinSpec, unknown_builtin
from .errors import DataError
from .folder import ImageFolderDataset, scan_images
from .imaging import PREPROCESS_VERSION
from .split import SPLIT_SEPARATOR, parse_split, select_split

BUILTIN_PREFIX = "builtin:"

__all__ = ["BUILTIN_DATASETS", "BuiltinDataset", "BuiltinSpec", "DataError",
           "ImageFolderDataset", "build_dataset", "dataset_fingerprint"]


def build_dataset(source: str, height: int, width: int, *, cylindrical: bool = False,
                  celeba_crop: bool = False, seed: int = 0,
                  resample: str = "lanczos") -> Dataset[torch.Tensor]:
    """The dataset named by a ``--data`` value: ``builtin:NAME`` (``seed`` selects its images)
    or a folder searched recursively, optionally ``DIR::train`` / ``DIR::holdout`` for one side
    of its fixed split. DataError for an unknown built-in, a missing or empty folder, or
    incompatible options; the other arguments are :class:`ImageFolderDataset`'s."""
    if not source.startswith(BUILTIN_PREFIX):
        root, split = parse_split(source)
        return ImageFolderDataset(root, height, width, celeba_crop=celeba_crop,
                                  cylindrical=cylindrical, split=split, resample=resample)
    name = source[len(BUILTIN_PREFIX) :]
    if SPLIT_SEPARATOR in name and name.split(SPLIT_SEPARATOR)[0] in BUILTIN_DATASETS:
        raise DataError(f"{source}: a built-in dataset has no train/holdout split (its images "
                        f"are drawn from a seed): write {BUILTIN_PREFIX}{name.split(':')[0]}")
    if name not in BUILTIN_DATASETS:
        raise unknown_builtin(name)
    if celeba_crop:
        raise DataError(f"celeba_crop applies to CelebA folders, not to {source}: drop it")
    if cylindrical != BUILTIN_DATASETS[name].cylindrical:
        kind = "cyclic panoramas" if BUILTIN_DATASETS[name].cylindrical else "not cyclic"
        warnings.warn(f"{source} is {kind} but cylindrical={cylindrical} was requested",
                      stacklevel=2)
    return BuiltinDataset(name, height, width, seed=seed)


def _slug(text: str) -> str:
    """File-name-safe version of text, for human-readable keys."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "data"


def dataset_fingerprint(source: str, height: int, width: int, celeba_crop: bool = False, *,
                        cylindrical: bool = False, resample: str = "lanczos") -> str:
    """A file-name-safe key such as ``celeba-64x64-celeba-1a2b3c4d5e6f`` for caching real-data
    statistics of ``build_dataset``'s arguments: it changes whenever the images a run would see
    do (folder, files, size, crop, filter, preprocessing version; rolled panoramas, N11)."""
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
        digest.update(f"|{path.relative_to(root).as_posix()}|{stat.st_size}|{stat.st_mtime_ns}"
                      .encode())
    name = root.name if split is None else f"{root.name}-{split}"
    return f"{_slug(name)}-{height}x{width}-{mode}-{digest.hexdigest()[:12]}"
