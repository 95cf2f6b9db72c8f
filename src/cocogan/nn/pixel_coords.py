"""Per-pixel global coordinates for the generator's feature maps (an option beyond the paper).

The paper conditions G on one coordinate per micro patch, so every pixel of a patch sees the same
position and neighbouring patches must learn to agree at their shared border. Coordinate-based
generators (CoordConv, CIPS, ALIS) instead give each pixel its own position; when those positions
are *global* (in the full image's frame), the two sides of a patch border sit at adjacent values
and smooth structures (gradients, horizons, outlines) can continue across it by construction.

The per-pixel positions are derived from the micro coordinate G already receives: a pixel at
fractional offset ``o`` (in micro-patch units, from the patch centre) of a patch with coordinate
``c`` lies at ``c + o * step``, where ``step`` is the coordinate distance between adjacent micro
patches. Cylindrical coordinates (y, cos(pi theta), sin(pi theta)) are unwrapped to theta first;
Fourier features use integer frequencies of theta, so they wrap around the panorama exactly.

Shapes: B batch, D coordinate dims (2 or 3), F feature channels, n feature-map side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class PixelGeometry:
    """What turns a micro coordinate into per-pixel coordinates.

    Attributes:
        step_y: coordinate units between vertically adjacent micro patches (0: one row).
        step_x: the same horizontally (theta units when cyclic).
        cyclic: the horizontal axis is an angle theta fed as (cos, sin) (cylindrical).
        fourier: octaves of sin/cos features per axis added to the plain coordinates (0: none).
        extent: micro patches spanned by the generated canvas per axis (1.5 with a margin).
    """

    step_y: float
    step_x: float
    cyclic: bool = False
    fourier: int = 0
    extent: float = 1.0

    @property
    def channels(self) -> int:
        """F: plain coordinates (2, or 3 when cyclic) plus 4 per Fourier octave."""
        return (3 if self.cyclic else 2) + 4 * self.fourier

    def features(self, coords: Tensor, size: int) -> Tensor:
        """(B, F, size, size) per-pixel features of patches with micro coordinates (B, D)."""
        offsets = ((torch.arange(size, device=coords.device, dtype=coords.dtype) + 0.5) / size
                   - 0.5) * self.extent  # (n,) pixel centres, micro-patch units
        y = coords[:, 0, None] + offsets * self.step_y  # (B, n)
        if self.cyclic:
            theta = torch.atan2(coords[:, 2], coords[:, 1]) / math.pi  # (B,)
            x = theta[:, None] + offsets * self.step_x  # (B, n) theta per column
            across = [torch.cos(math.pi * x), torch.sin(math.pi * x)]
        else:
            x = coords[:, 1, None] + offsets * self.step_x
            across = [x]
        rows = [y]  # per-row features, (B, n) each
        for octave in range(self.fourier):
            scale = math.pi * 2**octave
            rows += [torch.sin(scale * y), torch.cos(scale * y)]
            across += [torch.sin(scale * x), torch.cos(scale * x)]
        batch = coords.shape[0]
        row_maps = torch.stack(rows, 1)[:, :, :, None].expand(-1, -1, size, size)  # (B, ., n, n)
        col_maps = torch.stack(across, 1)[:, :, None, :].expand(-1, -1, size, size)
        out = torch.cat([row_maps, col_maps], 1)
        assert out.shape == (batch, self.channels, size, size), f"got {tuple(out.shape)}"
        return out
