"""Image streams for evaluation: generated full images in batches (`cocogan.apps.full`, no
blending, Sec. 2), and a seeded permutation of the real data, so every metric sees prefixes of
one real sample and cached statistics stay valid."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Subset

from cocogan.apps.backend import use_backend
from cocogan.apps.full import full_images
from cocogan.model import CocoGAN
from cocogan.training.datastream import default_num_workers

REAL_ORDER_SEED = 0  # fixed, so the real subset (and its cache key) do not depend on --seed

# A sampler maps (count, torch RNG) to `count` images (B, 3, H, W) in [-1, 1].
Sampler = Callable[[int, torch.Generator], Tensor]


def cocogan_sampler(model: CocoGAN, *, raw: bool = False, backend: str = "torch") -> Sampler:
    """Full images of the EMA (or raw) generator run by ``backend``, in eval mode: with CBN's
    running statistics an image does not depend on the other images of its batch."""
    use_backend(model, backend, raw=raw)

    @torch.no_grad()
    def sample(count: int, rng: torch.Generator) -> Tensor:
        return full_images(model, model.sample_z(count, rng), raw=raw)

    return sample


def generated_batches(sample: Sampler, count: int, batch: int, seed: int) -> Iterator[Tensor]:
    """`count` generated images in batches of at most `batch`, float32 on CPU; the latents come
    from one CPU RNG seeded with `seed`, so a seed gives the same images on any device."""
    rng = torch.Generator().manual_seed(seed)
    for done in range(0, count, batch):
        yield sample(min(batch, count - done), rng).float().cpu()


def real_subset(dataset: Dataset[Tensor], count: int) -> Dataset[Tensor]:
    """The first `count` images of a fixed random permutation of `dataset` (all if fewer)."""
    size = len(dataset)  # type: ignore[arg-type]
    order = torch.randperm(size, generator=torch.Generator().manual_seed(REAL_ORDER_SEED))
    return Subset(dataset, order[: min(count, size)].tolist())


def real_batches(dataset: Dataset[Tensor], count: int, batch: int) -> Iterator[Tensor]:
    """Batches of the fixed real subset of `count` images, decoded by worker processes."""
    loader = DataLoader(real_subset(dataset, count), batch_size=batch, shuffle=False,
                        num_workers=default_num_workers())
    for images in loader:
        yield images.float()
