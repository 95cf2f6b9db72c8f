"""Streaming consumers of image batches, each metric's first stage: every batch goes to the
sinks that still want images, then is dropped (50,000 images at 256x768 would not fit), and
the stream stops when all are full. Shapes: B batch, C/H/W image, D feature dims.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor

from cocogan.metrics import FeatureExtractor, StatsAccumulator, swd_descriptors

MAX_DESCRIPTORS_PER_IMAGE = 128  # PGGAN's neighbourhoods per image and level


class Sink:
    """Takes images until it has `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.seen = 0

    @property
    def wants(self) -> int:
        """How many more images this sink takes."""
        return max(0, self.limit - self.seen)

    def update(self, images: Tensor) -> None:
        """Consume a batch (B, C, H, W) in [-1, 1] with B <= wants."""
        assert images.shape[0] <= self.wants, f"sink got {images.shape[0]} > {self.wants}"
        self._consume(images)
        self.seen += images.shape[0]

    def _consume(self, images: Tensor) -> None:
        raise NotImplementedError


class FeatureSink(Sink):
    """FID/KID's stages 1-2: features streamed into mean/covariance, `keep` rows kept for KID."""

    def __init__(self, extractor: FeatureExtractor, limit: int, keep: int) -> None:
        super().__init__(limit)
        self.extractor = extractor
        self.accumulator = StatsAccumulator(keep=keep)

    def _consume(self, images: Tensor) -> None:
        self.accumulator.update(self.extractor(images))  # (B, D)


class SWDSink(Sink):
    """SWD's stage 1, per level. At most `budget` descriptors a level (PGGAN's 128 per image on
    16k images would need gigabytes); batch i draws with seed + i, so real and generated streams
    of equal batches share neighbourhood positions."""

    def __init__(self, limit: int, budget: int, seed: int) -> None:
        super().__init__(limit)
        self.per_image = max(1, min(MAX_DESCRIPTORS_PER_IMAGE, budget // max(limit, 1)))
        self.seed = seed
        self.levels: list[list[Tensor]] = []

    def _consume(self, images: Tensor) -> None:
        batch_index = len(self.levels[0]) if self.levels else 0
        desc = swd_descriptors(images, descriptors_per_image=self.per_image,
                               seed=self.seed + batch_index, batch_size=images.shape[0])
        if not self.levels:
            self.levels = [[] for _ in desc]
        for store, level in zip(self.levels, desc, strict=True):
            store.append(level)

    def descriptors(self) -> list[Tensor]:
        """One (N, C, 7, 7) tensor per pyramid level, finest first."""
        if not self.levels:
            raise ValueError("SWD needs at least one image")
        return [torch.cat(level, 0) for level in self.levels]


class ImageSink(Sink):
    """Keeps the first `limit` images as 8 bits: a quarter of float32, and what a saved PNG
    holds, so generated and real images (from 8-bit files) are measured alike."""

    def __init__(self, limit: int) -> None:
        super().__init__(limit)
        self.kept: list[Tensor] = []

    def _consume(self, images: Tensor) -> None:
        levels = ((images.clamp(-1.0, 1.0) + 1.0) * 127.5).round().to(torch.uint8)
        self.kept.append(levels.cpu())

    def images(self) -> Tensor:
        """The kept images (N, C, H, W) as float32 in [-1, 1]."""
        if not self.kept:
            raise ValueError("no images were kept")
        return torch.cat(self.kept, 0).float() / 127.5 - 1.0


class Progress(Protocol):
    """What `feed` reports to: a tqdm bar, or anything with its `update(n)`."""

    def update(self, n: int) -> object: ...


def feed(batches: Iterable[Tensor], sinks: list[Sink], progress: Progress | None = None) -> int:
    """Hand each batch to the sinks that still want images, and `progress` its size; stop once
    none does. Returns the number of images read."""
    read = 0
    if not any(s.wants for s in sinks):
        return read
    for images in batches:
        read += images.shape[0]
        for sink in sinks:
            if sink.wants:
                sink.update(images[: sink.wants])
        if progress is not None:
            progress.update(images.shape[0])
        if not any(s.wants for s in sinks):
            break
    return read
