"""Spatial coordinate systems of COCO-GAN (paper Section 2, "Spatial coordinate system").

Positions are in *grid units*: micro patch (row, column) indices, fractional or outside the
image when needed; a coordinate system turns them into the values fed to the networks.

- Cartesian: K = size / micro micro positions per axis at -1 + 2i/(K-1); a macro patch of
  n micro patches per axis has K-n+1 positions at -1 + 2j/(K-n) (CelebA 128, 2x2 macro:
  micro {-1, -1/3, 1/3, 1}, macro {-1, 0, 1}).
- Cylindrical (panoramas): columns are angles theta = -1 + 2i/K (no column at +1, it would repeat
  -1); the value fed to the networks is (y, cos(pi theta), sin(pi theta)), and macro patches wrap
  across the horizontal seam.

Shapes: B batch, P micro patches per macro patch (n_y * n_x), D coordinate dims (2 or 3).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from cocogan.config import ModelConfig


@dataclass(frozen=True)
class CoordinateSystem:
    """Grid geometry shared by both coordinate systems."""

    grid_h: int  # micro patches per column of the full image (K_y)
    grid_w: int  # micro patches per row of the full image (K_x)
    macro_h: int  # micro patches per column of one macro patch (n_y)
    macro_w: int  # micro patches per row of one macro patch (n_x)
    micro: int  # micro patch side in pixels
    cyclic: bool = False  # the horizontal axis wraps around (cylindrical)

    @property
    def coord_dim(self) -> int:
        """D: 2 for (y, x), 3 for (y, cos, sin)."""
        return 3 if self.cyclic else 2

    @property
    def patches_per_macro(self) -> int:
        """P = n_y * n_x."""
        return self.macro_h * self.macro_w

    @property
    def macro_rows(self) -> int:
        """Discrete macro positions vertically."""
        return self.grid_h - self.macro_h + 1

    @property
    def macro_cols(self) -> int:
        """Discrete macro positions horizontally (every column when cyclic)."""
        return self.grid_w if self.cyclic else self.grid_w - self.macro_w + 1

    @property
    def micro_step(self) -> tuple[float, float]:
        """Coordinate distance between adjacent micro patches (vertical, horizontal; theta
        when cyclic; 0 on an axis with a single position)."""
        step_y = 2.0 / (self.grid_h - 1) if self.grid_h > 1 else 0.0
        if self.cyclic:
            return step_y, 2.0 / self.grid_w
        return step_y, 2.0 / (self.grid_w - 1) if self.grid_w > 1 else 0.0

    def micro_coords(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Coordinates (*S, D) of micro patches at grid positions ``rows``/``cols`` (*S)."""
        y = _normalise(rows, self.grid_h - 1)
        return torch.cat([y.unsqueeze(-1), self._horizontal(cols, self.grid_w - 1)], dim=-1)

    def macro_coords(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Coordinates (*S, D) of macro patches whose top-left micro patch is at rows/cols."""
        y = _normalise(rows, self.grid_h - self.macro_h)
        return torch.cat([y.unsqueeze(-1), self._horizontal(cols, self.grid_w - self.macro_w)],
                         dim=-1)

    def _horizontal(self, cols: Tensor, span: int) -> Tensor:
        if self.cyclic:
            theta = -1.0 + 2.0 * cols.to(torch.float32) / self.grid_w
            return torch.stack([torch.cos(math.pi * theta), torch.sin(math.pi * theta)], dim=-1)
        return _normalise(cols, span).unsqueeze(-1)

    def decode_macro(self, predicted: Tensor) -> tuple[Tensor, Tensor | None]:
        """Read D's spatial head: (B, S) -> fractional (rows, cols) in grid units; cols is None
        on the cylinder, whose head predicts y alone (apps/inspire.py searches the column)."""
        rows = (predicted[..., 0] + 1.0) / 2.0 * max(self.grid_h - self.macro_h, 0)
        if self.cyclic:
            return rows, None
        return rows, (predicted[..., 1] + 1.0) / 2.0 * max(self.grid_w - self.macro_w, 0)

    def nearest_macro(self, predicted: Tensor) -> tuple[Tensor, Tensor | None]:
        """Nearest valid discrete macro position (long rows, cols or None) of head outputs."""
        rows, cols = self.decode_macro(predicted)
        rows = rows.round().clamp(0, self.macro_rows - 1).long()
        return rows, None if cols is None else cols.round().clamp(0, self.macro_cols - 1).long()

    def micro_grid(self) -> tuple[Tensor, Tensor]:
        """All micro positions of the full image in row-major order: two (K_y * K_x,) tensors."""
        return _row_major(self.grid_h, self.grid_w)

    def macro_grid(self) -> tuple[Tensor, Tensor]:
        """All discrete macro positions in row-major order."""
        return _row_major(self.macro_rows, self.macro_cols)

    def micro_in_macro(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Grid positions (B, P), row-major as :func:`cocogan.patches.merge` expects, of the
        micro patches inside macro patches at ``rows``/``cols`` (B,); columns are not wrapped
        (cos/sin wrap by themselves)."""
        dy, dx = _row_major(self.macro_h, self.macro_w, rows.device)  # (P,)
        return rows.unsqueeze(1) + dy.to(rows.dtype), cols.unsqueeze(1) + dx.to(cols.dtype)

    def pixel_offset(self, rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
        """Top-left pixel (top, left) of patches at grid positions (rounded to whole pixels)."""
        top = torch.round(rows * self.micro).long()
        left = torch.round(cols * self.micro).long()
        if self.cyclic:
            left = torch.remainder(left, self.grid_w * self.micro)
        return top, left

    def sample_macro(self, batch: int, *, continuous: bool = False, extend: int = 0,
                     generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """Draw ``batch`` macro positions (rows, cols) (B,) in grid units uniformly (paper:
        U(S_N, R)), on ``generator``'s device. ``continuous``: any whole-pixel offset instead of
        the discrete grid (fractional grid units, so real crops stay exact); ``extend``: up to
        that many grid steps past each border of the Cartesian axes (beyond-boundary)."""
        device = generator.device if generator is not None else None  # draw where it lives

        def draw(count: int, low: int, cyclic: bool = False) -> Tensor:
            if continuous:  # a cyclic axis has every offset up to the full turn
                offsets = count * self.micro if cyclic else (count - 1) * self.micro + 1
                pixels = torch.randint(0, offsets, (batch,), generator=generator, device=device)
                return low + pixels.to(torch.float32) / self.micro
            return (low + torch.randint(0, count, (batch,), generator=generator,
                                        device=device)).float()

        rows = draw(self.macro_rows + 2 * extend, -extend)
        cols = draw(self.macro_cols, 0, cyclic=True) if self.cyclic else draw(
            self.macro_cols + 2 * extend, -extend)
        return rows, cols

    def in_bounds(self, rows: Tensor, cols: Tensor) -> Tensor:
        """Bool (B,): macro positions that lie inside the trained image (beyond-boundary mask)."""
        inside = (rows >= 0) & (rows <= self.macro_rows - 1)
        if not self.cyclic:
            inside &= (cols >= 0) & (cols <= self.macro_cols - 1)
        return inside


def _row_major(height: int, width: int, device: torch.device | None = None
               ) -> tuple[Tensor, Tensor]:
    """Row and column indices (height * width,) of a height x width grid, row-major."""
    rows, cols = torch.meshgrid(torch.arange(height, device=device),
                                torch.arange(width, device=device), indexing="ij")
    return rows.reshape(-1), cols.reshape(-1)


def _normalise(index: Tensor, span: int) -> Tensor:
    """Map grid index 0..span to [-1, 1] (a lone position maps to 0)."""
    index = index.to(torch.float32)
    return -1.0 + 2.0 * index / span if span > 0 else torch.zeros_like(index)


def coordinate_system(model: ModelConfig) -> CoordinateSystem:
    """Build the coordinate system that a validated model config describes."""
    micro = model.micro
    return CoordinateSystem(grid_h=model.full_height // micro, grid_w=model.full_width // micro,
                            macro_h=model.macro // micro, macro_w=model.macro_w // micro,
                            micro=micro, cyclic=model.coords == "cylindrical")
