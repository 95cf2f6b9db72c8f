"""Partial-scene generation (paper Section 3.3): only the micro patches a viewport needs. A
viewport is a pixel box, or on a panorama an angular range (0 degrees: the left edge; it may
cross the seam) and rows. Shapes: B batch, Z latent dims, h/w viewport height/width in pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor

from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.render import DEFAULT_CHUNK, GridRect, sample_rect


@dataclass(frozen=True)
class PixelBox:
    """A pixel rectangle of the full image; ``left`` may pass the seam of a panorama."""

    top: int
    left: int
    height: int
    width: int


def cartesian_box(coords: CoordinateSystem, top: int, left: int, height: int,
                  width: int) -> PixelBox:
    """Validate a viewport given in pixels (``--box TOP,LEFT,HEIGHT,WIDTH``)."""
    full_h, full_w = coords.grid_h * coords.micro, coords.grid_w * coords.micro
    if height <= 0 or width <= 0:
        raise ValueError(f"--box height and width must be positive, got {height}x{width}")
    if top < 0 or left < 0 or top + height > full_h or left + width > full_w:
        raise ValueError(f"--box {top},{left},{height},{width} (top,left,height,width) leaves "
                         f"the {full_h}x{full_w} image; use --extend with `generate beyond` "
                         "for regions outside it")
    return PixelBox(top, left, height, width)


def cylindrical_box(coords: CoordinateSystem, start: float, end: float, top: int = 0,
                    bottom: int | None = None) -> PixelBox:
    """A panorama viewport from degrees (``--angles START,END``; 300,60 crosses the seam) and
    pixel rows [top, bottom); angles map to the nearest pixel column."""
    full_h, full_w = coords.grid_h * coords.micro, coords.grid_w * coords.micro
    bottom = full_h if bottom is None else bottom
    if not 0 <= top < bottom <= full_h:
        raise ValueError(f"--rows {top},{bottom} must satisfy 0 <= TOP < BOTTOM <= {full_h}")
    if end == start:
        raise ValueError(f"--angles {start},{end} is empty; use 0,360 for the whole panorama")
    if end < start:
        end += 360.0 * math.ceil((start - end) / 360.0)
    left = round(start % 360.0 / 360.0 * full_w)
    width = round((end - start) / 360.0 * full_w)
    if width <= 0:
        raise ValueError(f"--angles {start},{end} is narrower than one pixel")
    return PixelBox(top, left, bottom - top, width)


def covering_rect(coords: CoordinateSystem, box: PixelBox) -> GridRect:
    """The micro grid rectangle of the patches that intersect ``box`` (unwrapped columns)."""
    m = coords.micro
    return GridRect(box.top // m, -(-(box.top + box.height) // m),
                    box.left // m, -(-(box.left + box.width) // m))


def trim(region: Tensor, rect: GridRect, box: PixelBox, micro: int) -> Tensor:
    """The pixels (..., 3, box.height, box.width) of ``box`` in ``region``, rect's patches."""
    top, left = box.top - rect.top * micro, box.left - rect.left * micro
    return region[..., top:top + box.height, left:left + box.width]


def viewport(model: CocoGAN, z: Tensor, box: PixelBox, *, raw: bool = False,
             chunk: int = DEFAULT_CHUNK) -> Tensor:
    """The pixels (B, 3, box.height, box.width) of ``box`` for latents ``z``."""
    rect = covering_rect(model.coords, box)
    return trim(sample_rect(model, z, rect, raw=raw, chunk=chunk), rect, box, model.coords.micro)
