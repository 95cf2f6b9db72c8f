"""Where the content of an image sits and what colours it has: checks that generated objects move
around and are coloured like real ones (texture metrics can score well without either).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from cocogan.metrics.frechet import frechet_distance
from cocogan.metrics.seams import frame_median


def content_centres(images: Tensor) -> Tensor:
    """Centre of each image's content (N, C, H, W) -> (N, 2) as (x, y) in image sizes, 0..1:
    each pixel weighs its colour distance from the background, the median of the outer ring."""
    weight = (images - frame_median(images)).norm(dim=1)  # (N, H, W)
    weight = weight / weight.sum(dim=(1, 2), keepdim=True).clamp_min(1e-12)
    height, width = images.shape[-2:]
    ys = (torch.arange(height, dtype=images.dtype) + 0.5) / height
    xs = (torch.arange(width, dtype=images.dtype) + 0.5) / width
    return torch.stack([(weight.sum(1) * xs).sum(1), (weight.sum(2) * ys).sum(1)], dim=1)


def content_spread(images: Tensor) -> float:
    """RMS distance of the content centres from their mean, in image sizes (0: always in the
    same place). Compare generated with real: their ratio is the figure."""
    centres = content_centres(images.float().cpu())
    return float((centres - centres.mean(0)).pow(2).sum(1).mean().sqrt())


def repetition(images: Tensor, period: int) -> float:
    """Correlation of horizontal pixel differences with those ``period`` columns (the micro
    width) to the right: ~1 for a tiled strip, ~0 for scenes whose detail does not repeat."""
    detail = images.float().cpu().diff(dim=-1)  # (N, C, H, W - 1): the flat gradients drop out
    here, there = detail[..., :-period], detail[..., period:]
    return float((here * there).sum() / (here.square().sum() * there.square().sum()).sqrt()
                 .clamp_min(1e-12))


def likeness(images: Tensor) -> float:
    """Mean cosine similarity, over pairs of different images, of their detail maps (pixel
    differences): ~0 for real scenes, high when every image puts its object in the same place.
    It is (|sum of unit vectors|^2 - N) / (N (N - 1)), without the N x N matrix."""
    x = images.float().cpu()
    detail = torch.cat([x.diff(dim=-1).flatten(1), x.diff(dim=-2).flatten(1)], dim=1)
    norms = detail.norm(dim=1, keepdim=True)
    keep = norms[:, 0] > 0  # flat images have no layout
    units = detail[keep] / norms[keep]
    count = units.shape[0]
    if count < 2:
        return float("nan")
    total = units.sum(0)
    return float((total.dot(total) - count) / (count * (count - 1)))


def colour_distance(generated: Tensor, real: Tensor) -> float:
    """Fréchet distance x1e3 between the Gaussians of each image's channel means and stds (pixels
    0..1) in two sets: palette and contrast image by image, which SWD's normalised patches and
    FID's features play down (a multi-coloured glow where the data has dark skies scores high)."""
    a, b = [torch.cat([x.mean(2), x.std(2)], 1).numpy() for x in
            ((images.double().cpu().flatten(2) + 1) / 2 for images in (generated, real))]
    return 1e3 * frechet_distance(a.mean(0), np.cov(a, rowvar=False), b.mean(0),
                                  np.cov(b, rowvar=False))
