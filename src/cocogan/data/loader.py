"""Batching of full images for the training loop: seeded shuffling, workers, endless epochs.

Batches are float32 tensors (B, C, H, W) = (batch_size, 3, height, width) in [-1, 1].
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator, Sized
from typing import TypeVar

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .errors import DataError

T = TypeVar("T")

_MAX_DEFAULT_WORKERS = 8  # beyond this, JPEG decoding at GAN resolutions stops being the bottleneck


def default_num_workers() -> int:
    """Decoder processes to use: the usable cores minus one for the training process, up to 8."""
    try:
        cores = len(os.sched_getaffinity(0))  # respects CPU pinning (containers, SLURM)
    except AttributeError:  # macOS, Windows
        cores = os.cpu_count() or 1
    return max(0, min(_MAX_DEFAULT_WORKERS, cores - 1))


def _seed_worker(worker_id: int) -> None:
    """Seed NumPy and random from torch's per-worker seed, which the loader's generator sets."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


def make_loader(
    dataset: Dataset[torch.Tensor],
    batch_size: int,
    *,
    num_workers: int | None = None,
    seed: int = 0,
    drop_last: bool = True,
) -> DataLoader[torch.Tensor]:
    """A shuffling DataLoader whose order and augmentation are reproducible from ``seed``.

    Worker processes persist across epochs so that looping over the loader forever (see
    ``infinite``) does not respawn them each epoch. With num_workers=0, augmentations such as the
    panorama roll draw from the main process's global torch RNG instead.

    Args:
        dataset: map-style dataset of (3, H, W) tensors and a length.
        batch_size: images per batch.
        num_workers: decoder processes; None picks ``default_num_workers()``; 0 decodes inline.
        seed: seeds the shuffle order and the workers' RNGs.
        drop_last: drop the final short batch so every batch has exactly batch_size images.

    Returns:
        DataLoader yielding (batch_size, 3, H, W) tensors.
    """
    if batch_size <= 0:
        raise DataError(f"batch size must be positive, got {batch_size}")
    workers = default_num_workers() if num_workers is None else num_workers
    if workers < 0:
        raise DataError(f"number of data workers must be 0 or more, got {workers}")
    size = len(dataset) if isinstance(dataset, Sized) else None
    if drop_last and size is not None and size < batch_size:
        raise DataError(
            f"the dataset has {size} images, fewer than one batch of {batch_size}: "
            "lower the batch size or add images"
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=True,
        generator=torch.Generator().manual_seed(seed),
        num_workers=workers,
        persistent_workers=workers > 0,
        pin_memory=torch.cuda.is_available(),
        drop_last=drop_last,
        worker_init_fn=_seed_worker if workers > 0 else None,
    )


def infinite(loader: Iterable[T]) -> Iterator[T]:
    """Yield batches forever; each pass over the loader is a new epoch with a new shuffle.

    Training loops count steps, not epochs; this keeps epoch boundaries out of them.
    """
    while True:
        empty = True
        for batch in loader:
            empty = False
            yield batch
        if empty:
            raise DataError("the data loader produced no batches: lower the batch size")
