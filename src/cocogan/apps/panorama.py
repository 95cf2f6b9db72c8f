"""Cyclic panoramas (paper Section 3.3, Figures 6 and 7): a cylindrical run's full image is
360 degrees, so a view of any angular width is cut with wrap-around from it (exactly what
generating those columns would give). Shapes: B batch, H/W panorama height/width.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cocogan.apps.full import full_images
from cocogan.model import CocoGAN
from cocogan.patches import crop
from cocogan.render import DEFAULT_CHUNK


def panoramas(model: CocoGAN, z: Tensor, *, raw: bool = False,
              chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Full 360-degree panoramas (B, 3, H, W) for latents ``z``."""
    if not model.coords.cyclic:
        raise ValueError("panorama needs a cylindrical run (model.coords=cylindrical, e.g. "
                         "preset tiny-panorama or matterport); this run is cartesian")
    return full_images(model, z, raw=raw, chunk=chunk)


def wrap_view(panorama: Tensor, start: float = 0.0, degrees: float = 720.0) -> Tensor:
    """A view (B, 3, H, round(degrees / 360 * W)) of panoramas (B, 3, H, W) from angle
    ``start`` (0 = left edge), wrapping at 360 (0, 720: the panorama pasted twice)."""
    batch, _, height, width = panorama.shape
    if degrees <= 0:
        raise ValueError(f"--degrees must be positive, got {degrees}")
    view = round(degrees / 360.0 * width)
    left = torch.full((batch,), round(start % 360.0 / 360.0 * width), dtype=torch.long)
    top = torch.zeros(batch, dtype=torch.long)
    return crop(panorama, top, left, height, max(view, 1), wrap=True)
