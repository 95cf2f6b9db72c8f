"""``model.g_margin`` and L_O (beyond the paper): against seams between micro patches.

G draws a canvas 1.5x the micro patch (a 3x3 stem) and keeps its centre; the margins cover the
neighbours' outer pixels, and L_O (``loss.w_overlap``) asks them to equal what the neighbour
draws there, so content continues across a seam instead of stopping (docs/seams.md).

Shapes: B batch, P micro patches per macro patch, C channels, S canvas side.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cocogan.nn import Generator


class SeamlessGenerator(Generator):
    """The generator with a margin of micro/4 pixels drawn round each patch."""

    stem_size = 3  # a canvas 3/2 micro patches wide

    @property
    def margin(self) -> int:
        """Pixels drawn beyond each side of the micro patch."""
        return self.micro // 4

    def forward(self, z: Tensor, coords: Tensor, *, keep_margin: bool = False) -> Tensor:
        """Micro patches (B, 3, micro, micro); with ``keep_margin`` the whole canvases
        (B, 3, micro + 2 margin, ...), whose margins overlap the neighbouring patches."""
        canvas = super().forward(z, coords)
        return canvas if keep_margin else crop_margin(canvas, self.margin)


def crop_margin(canvas: Tensor, margin: int) -> Tensor:
    """The micro patch at the centre of a canvas (..., S, S) with ``margin`` pixels per side."""
    return canvas[..., margin:-margin, margin:-margin] if margin else canvas


def overlap_consistency(canvases: Tensor, rows: int, cols: int, margin: int) -> Tensor:
    """L_O: mean |difference| where the canvases (B, P, C, S, S) of adjacent micro patches of
    a macro patch (P = rows * cols, row-major, S = micro + 2 margin) overlap."""
    batch, count, channels, size, _ = canvases.shape
    assert count == rows * cols and margin > 0, f"got {count} patches, {rows}x{cols}, {margin}"
    micro = size - 2 * margin
    grid = canvases.view(batch, rows, cols, channels, size, size)
    terms = []
    if cols > 1:  # left patch's columns [micro, micro + 2m) == right patch's [0, 2m)
        terms.append((grid[:, :, :-1, ..., micro:] - grid[:, :, 1:, ..., : 2 * margin]).abs()
                     .mean())
    if rows > 1:
        terms.append((grid[:, :-1, :, :, micro:, :] - grid[:, 1:, :, :, : 2 * margin, :]).abs()
                     .mean())
    return torch.stack(terms).mean() if terms else canvases.new_zeros(())
