"""``model.g_margin`` and L_O (beyond the paper): against seams between micro patches.

G draws a canvas 1.5x the micro patch (a 3x3 instead of a 2x2 stem) and keeps its centre: the
pixels kept lie micro/4 pixels from the canvas border, further from the convs' zero padding
(though the stacked convs still see it), and the margins cover the neighbours' outer pixels.
L_O (``loss.w_overlap``) asks that a patch's margin equal what its neighbour draws there, so
the content of one patch continues into the next instead of stopping at a seam (docs/seams.md).

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
    """L_O: mean |difference| where the canvases of horizontally and vertically adjacent micro
    patches of a macro patch overlap (2 * margin wide).

    Args:
        canvases: (B, P, C, S, S) canvases of a macro patch's P = rows * cols micro patches,
            row-major, S = micro + 2 * margin.
        rows, cols: micro patches per column / row of the macro patch.
        margin: pixels per side beyond the micro patch.
    """
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
