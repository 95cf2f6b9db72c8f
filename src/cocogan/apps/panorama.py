"""Cyclic panoramas (paper Section 3.3, Figures 6 and 7).

A cylindrical run's full image is a 360-degree panorama: column j sits at theta = -1 + 2j/K and
the network sees (cos pi theta, sin pi theta), so the column after K - 1 is column 0 again.
Pasting the panorama twice (0 to 720 degrees) shows the wrap; any other angular width of view is
cut with wrap-around from the same panorama, which is exactly what generating those columns
would give (see :mod:`cocogan.render`).

Shapes: B batch, Z latent dims, H/W panorama height/width, w view width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cocogan.apps.full import full_images
from cocogan.model import CocoGAN
from cocogan.patches import crop
from cocogan.render import DEFAULT_CHUNK


def require_cylindrical(model: CocoGAN, what: str) -> None:
    """Panorama-only applications fail clearly on Cartesian runs."""
    if not model.coords.cyclic:
        raise ValueError(f"{what} needs a cylindrical run (model.coords=cylindrical, e.g. preset "
                         "tiny-panorama or matterport); this run is cartesian")


def panoramas(model: CocoGAN, z: Tensor, *, raw: bool = False,
              chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Full 360-degree panoramas (B, 3, H, W) for latents ``z``."""
    require_cylindrical(model, "panorama")
    return full_images(model, z, raw=raw, chunk=chunk)


def wrap_view(panorama: Tensor, start: float = 0.0, degrees: float = 720.0) -> Tensor:
    """A view of ``degrees`` starting at angle ``start`` (0 = left edge), wrapping at 360.

    ``wrap_view(p, 0, 720)`` is the panorama pasted twice side by side.

    Args:
        panorama: (B, 3, H, W) full panoramas.

    Returns:
        (B, 3, H, w) with w = round(degrees / 360 * W).
    """
    batch, _, height, width = panorama.shape
    if degrees <= 0:
        raise ValueError(f"--degrees must be positive, got {degrees}")
    view = round(degrees / 360.0 * width)
    left = torch.full((batch,), round(start % 360.0 / 360.0 * width), dtype=torch.long)
    top = torch.zeros(batch, dtype=torch.long)
    return crop(panorama, top, left, height, max(view, 1), wrap=True)
