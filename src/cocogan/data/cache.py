"""Decoded training images kept as one uint8 tensor (N, 3, H, W), on the host or the training
GPU: a batch is one gather and one conversion, bit for bit the decoded 8-bit images.

Shapes: N images, B batch, H/W image height/width.
"""

from __future__ import annotations

from collections.abc import Callable, Sized

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset


def cache_bytes(dataset: Dataset[Tensor], height: int, width: int) -> int:
    """Bytes the uint8 cache of ``dataset`` would take."""
    assert isinstance(dataset, Sized)
    return len(dataset) * 3 * height * width


def to_uint8(images: Tensor) -> Tensor:
    """[-1, 1] float images -> uint8, exact for images that came from 8-bit pixels."""
    return ((images + 1.0) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def from_uint8(images: Tensor) -> Tensor:
    """uint8 -> float32 in [-1, 1], the same arithmetic as the decoder's (bit-exact)."""
    return images.to(torch.float32) / 127.5 - 1.0


class CachedImages(Dataset[Tensor]):
    """A dataset whose images are all in one uint8 tensor (N, 3, H, W), on any device."""

    def __init__(self, images: Tensor) -> None:
        assert images.dtype == torch.uint8 and images.ndim == 4 and images.shape[1] == 3, \
            f"images: got {images.dtype} {tuple(images.shape)}, expected uint8 (N, 3, H, W)"
        self.images = images

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> Tensor:
        return from_uint8(self.images[index])

    def batch(self, indices: Tensor) -> Tensor:
        """Float images (B, 3, H, W) in [-1, 1] for ``indices`` (B,), on the cache's device."""
        return from_uint8(self.images[indices.to(self.images.device)])

    @classmethod
    def decode(cls, dataset: Dataset[Tensor], height: int, width: int, *, num_workers: int = 0,
               device: torch.device | str = "cpu",
               report: Callable[[int, int], None] | None = None) -> CachedImages:
        """Decode ``dataset`` once into the cache; ``report(done, total)`` after each chunk."""
        total = len(dataset)  # type: ignore[arg-type]
        images = torch.empty(total, 3, height, width, dtype=torch.uint8)
        loader = DataLoader(dataset, batch_size=256, num_workers=num_workers, shuffle=False)
        done = 0
        for chunk in loader:  # (b, 3, H, W) float in [-1, 1], in index order
            images[done:done + len(chunk)] = to_uint8(chunk)
            done += len(chunk)
            if report is not None:
                report(done, total)
        assert done == total, f"decoded {done} of {total} images"
        return cls(images.to(device))
