"""A resumable stream of training batches: the order is a pure function of (seed, position).

Epoch e shuffles with a generator seeded from (seed, e); run batch k is batch k mod n of epoch
k // n (the short tail dropped), so the saved position continues exactly; rank r of R loads the
r-th slice of each global batch. No randomness is drawn in DataLoader workers. A folder that
fits ``data.cache_max_mb`` is decoded once into uint8 (:mod:`cocogan.data.cache`) and gathered
in the same order, bit for bit the same images.

Shapes: B batch, C/H/W image.
"""

from __future__ import annotations

from collections.abc import Iterator, Sized

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from cocogan.data import DataError, ImageFolderDataset
from cocogan.data.cache import CachedImages, cache_bytes
from cocogan.training.device import available_cores
from cocogan.training.signals import ignore_stop_signals

MAX_AUTO_WORKERS = 4  # data.num_workers = -1 picks min(this, cores - 1)
MAX_DEFAULT_WORKERS = 8  # beyond this, decoding at GAN resolutions stops being the bottleneck


def epoch_permutation(size: int, seed: int, epoch: int) -> Tensor:
    """The shuffled order of epoch ``epoch``: a (size,) permutation fixed by (seed, epoch)."""
    key = int(np.random.SeedSequence([seed & 0xFFFFFFFF, seed >> 32 & 0xFFFFFFFF, epoch])
              .generate_state(1, dtype=np.uint64)[0] >> 1)
    return torch.randperm(size, generator=torch.Generator().manual_seed(key))


class ResumableBatchSampler(Sampler[list[int]]):
    """Endless batches of indices from run batch ``start``, this (rank, ranks) ``shard``'s slice."""

    def __init__(self, size: int, batch: int, seed: int, start: int = 0,
                 shard: tuple[int, int] = (0, 1)) -> None:
        if size < batch:
            raise DataError(f"the dataset has {size} usable images, fewer than one batch of "
                            f"{batch}: lower --batch or add images")
        rank, ranks = shard
        assert batch % ranks == 0 and 0 <= rank < ranks, f"batch {batch}, shard {shard}"
        self.size, self.batch, self.seed, self.start = size, batch, seed, start
        self.per_epoch = size // batch
        local = batch // ranks
        self.shard_slice = slice(rank * local, (rank + 1) * local)

    def position(self, index: int) -> tuple[int, int]:
        """(epoch, batch offset within the epoch) of run batch ``index``."""
        return divmod(index, self.per_epoch)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, offset = self.position(self.start)
        while True:
            order = epoch_permutation(self.size, self.seed, epoch)
            for j in range(offset, self.per_epoch):
                yield order[j * self.batch:(j + 1) * self.batch][self.shard_slice].tolist()
            epoch, offset = epoch + 1, 0


class BatchStream:
    """Iterator of (B, 3, H, W) batches of ``dataset`` on ``device`` that knows its position:
    ``start`` run batches already consumed (when resuming), ``num_workers`` decoder processes
    (-1: min(4, cores - 1); 0: inline), ``shard`` (rank, ranks): this rank's slice of each."""

    def __init__(self, dataset: Dataset[Tensor], batch: int, seed: int, *, start: int = 0,
                 num_workers: int = -1, device: torch.device | None = None,
                 shard: tuple[int, int] = (0, 1)) -> None:
        if not isinstance(dataset, Sized) or len(dataset) == 0:
            raise DataError("the dataset is empty: point --data at a folder with images")
        self.sampler = ResumableBatchSampler(len(dataset), batch, seed, start, shard)
        self.consumed = start
        self.device = device or torch.device("cpu")
        self.cached = dataset if isinstance(dataset, CachedImages) else None
        self._order: tuple[int, Tensor] | None = None  # (epoch, permutation on the cache device)
        workers = 0 if self.cached is not None else resolve_workers(num_workers)
        # Own generator: worker seeds must not consume (and so shift) the global torch RNG.
        self.loader = DataLoader(dataset, batch_sampler=self.sampler, num_workers=workers,
                                 generator=torch.Generator().manual_seed(seed),
                                 pin_memory=self.device.type == "cuda",
                                 worker_init_fn=ignore_stop_signals if workers else None)
        self._iterator: Iterator[Tensor] | None = None

    @property
    def position(self) -> dict[str, int]:
        """What a checkpoint records: batches consumed, and the same as (epoch, offset)."""
        epoch, offset = self.sampler.position(self.consumed)
        return {"batches": self.consumed, "epoch": epoch, "offset": offset}

    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> Tensor:
        if self.cached is not None:
            images = self._gather(self.cached)
        else:
            if self._iterator is None:  # (re)start where the run is, e.g. after close()
                self.sampler.start = self.consumed
                self._iterator = iter(self.loader)
            images = next(self._iterator)
        self.consumed += 1
        return images.to(self.device, non_blocking=True)

    def _gather(self, cached: CachedImages) -> Tensor:
        """The next batch from the cache (the permutation moves to its device once an epoch)."""
        epoch, offset = self.sampler.position(self.consumed)
        if self._order is None or self._order[0] != epoch:
            order = epoch_permutation(self.sampler.size, self.sampler.seed, epoch)
            self._order = epoch, order.to(cached.images.device)
        batch = self.sampler.batch
        indices = self._order[1][offset * batch:(offset + 1) * batch]
        return cached.batch(indices[self.sampler.shard_slice])  # this rank's slice

    def close(self) -> None:
        """Stop the worker processes (they also stop with the process)."""
        self._iterator = None


def default_num_workers() -> int:
    """Decoder processes to use: the usable cores minus one for the training process, up to 8."""
    return max(0, min(MAX_DEFAULT_WORKERS, available_cores() - 1))


def resolve_workers(num_workers: int) -> int:
    """``data.num_workers``: -1 picks min(4, cores - 1)."""
    return min(MAX_AUTO_WORKERS, default_num_workers()) if num_workers < 0 else num_workers


def cache_device(dataset: Dataset[Tensor], max_mb: int, height: int, width: int,
                 device: torch.device) -> torch.device | None:
    """The training device when an image folder's decoded images fit ``max_mb``, else None."""
    if not isinstance(dataset, ImageFolderDataset):
        return None
    return device if 0 < cache_bytes(dataset, height, width) <= max_mb * 2**20 else None


def roll_panoramas(images: Tensor, rng: torch.Generator) -> Tensor:
    """Roll each 360-degree panorama (B, C, H, W) right by a uniform shift in [0, W) of the step
    RNG ``rng`` (the authors' augmentation: any roll is another valid panorama)."""
    batch, channels, height, width = images.shape
    shifts = torch.randint(width, (batch,), generator=rng,
                           device=rng.device).to(images.device)  # (B,)
    cols = torch.remainder(torch.arange(width, device=images.device)[None, :] - shifts[:, None],
                           width)  # (B, W): source column of each output column
    index = cols[:, None, None, :].expand(batch, channels, height, width)
    return torch.gather(images, 3, index)
