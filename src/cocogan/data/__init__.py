"""Data layer: real image folders and procedural built-ins as datasets of full images.

Every dataset item is a float32 tensor (C, H, W) = (3, height, width) in [-1, 1]; cropping macro
patches from them (the paper's T(X->M), Sec. 2) belongs to the training code. This package
imports only torch, NumPy and PIL, never other cocogan modules.
"""

from __future__ import annotations

import warnings

import torch
from torch.utils.data import Dataset

from .builtin import BUILTIN_DATASETS, BuiltinDataset, BuiltinSpec, unknown_builtin
from .errors import DataError
from .fingerprint import BUILTIN_PREFIX, dataset_fingerprint
from .folder import ImageFolderDataset
from .split import SPLIT_SEPARATOR, parse_split

__all__ = [
    "BUILTIN_DATASETS",
    "BuiltinDataset",
    "BuiltinSpec",
    "DataError",
    "ImageFolderDataset",
    "build_dataset",
    "dataset_fingerprint",
]


def build_dataset(
    source: str,
    height: int,
    width: int,
    *,
    cylindrical: bool = False,
    celeba_crop: bool = False,
    seed: int = 0,
    resample: str = "lanczos",
) -> Dataset[torch.Tensor]:
    """The dataset named by a ``--data`` value.

    Args:
        source: ``builtin:NAME`` (see BUILTIN_DATASETS) or a folder searched recursively,
            optionally ``DIR::train`` / ``DIR::holdout`` for one side of its fixed split.
        height, width: full-image size in pixels.
        cylindrical: panoramas; folders are resized without cropping (not rolled: training
            rolls them with the step RNG, datastream.roll_panoramas).
        celeba_crop: apply the authors' CelebA face box (folders of aligned CelebA only).
        seed: selects the images of a built-in dataset; unused for folders.
        resample: folders' resize filter, "lanczos" or "bilinear" (``data.resample``).

    Raises:
        DataError: unknown built-in, missing or empty folder, or incompatible options.
    """
    if not source.startswith(BUILTIN_PREFIX):
        root, split = parse_split(source)
        return ImageFolderDataset(
            root, height, width, celeba_crop=celeba_crop, cylindrical=cylindrical, split=split,
            resample=resample)
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
        warnings.warn(
            f"{source} is {kind} but cylindrical={cylindrical} was requested", stacklevel=2
        )
    return BuiltinDataset(name, height, width, seed=seed)
