"""``loss.augment`` (beyond the paper): differentiable augmentation that keeps every pixel at
its coordinate, for small data sets (as DiffAugment, Zhao et al. 2020, but without moves).

D sees every real and fake macro patch augmented (in both phases and the gradient penalty);
G learns through it. A move or flip would take content away from the coordinate D is told, so
only ``color`` (brightness, saturation, contrast per image) and ``cutout`` (a half-size
rectangle set to mid grey) are offered. Draws come from the step RNG: resumes are exact.

Shapes: B batch, C/H/W image.
"""

from __future__ import annotations

import torch
from torch import Tensor


def kinds_of(spec: str) -> tuple[str, ...]:
    """``loss.augment`` ("" or comma-separated kinds, checked by LossConfig) as a tuple."""
    return tuple(kind for kind in spec.split(",") if kind)


def augment(images: Tensor, kinds: tuple[str, ...], rng: torch.Generator) -> Tensor:
    """``images`` (B, C, H, W) with each kind applied in order (none: ``images`` itself)."""
    for kind in kinds:
        images = color(images, rng) if kind == "color" else cutout(images, rng)
    return images


def _uniform(images: Tensor, rng: torch.Generator, low: float, high: float) -> Tensor:
    """(B, 1, 1, 1) uniform factors in [low, high) from ``rng``, in the images' dtype."""
    draw = torch.rand(images.shape[0], 1, 1, 1, generator=rng, device=rng.device)
    return (low + (high - low) * draw).to(images)


def color(images: Tensor, rng: torch.Generator) -> Tensor:
    """Brightness, then saturation, then contrast, each with its own factor per image."""
    images = images + _uniform(images, rng, -0.5, 0.5)
    grey = images.mean(dim=1, keepdim=True)
    images = (images - grey) * _uniform(images, rng, 0.0, 2.0) + grey
    mean = images.mean(dim=(1, 2, 3), keepdim=True)
    return (images - mean) * _uniform(images, rng, 0.5, 1.5) + mean


def cutout(images: Tensor, rng: torch.Generator) -> Tensor:
    """A (H/2, W/2) rectangle per image, centred uniformly over the image, zeroed."""
    batch, _, height, width = images.shape
    centres = torch.rand(batch, 2, generator=rng, device=rng.device).to(images.device)
    cy, cx = (centres[:, 0] * height)[:, None], (centres[:, 1] * width)[:, None]  # (B, 1)
    ys = torch.arange(height, device=images.device)[None, :] + 0.5  # (1, H) pixel centres
    xs = torch.arange(width, device=images.device)[None, :] + 0.5
    inside_y = (ys - cy).abs() < height / 4  # (B, H)
    inside_x = (xs - cx).abs() < width / 4  # (B, W)
    hole = inside_y[:, :, None] & inside_x[:, None, :]  # (B, H, W)
    return images * (~hole)[:, None].to(images.dtype)
