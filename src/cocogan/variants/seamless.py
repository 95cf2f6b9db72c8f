"""``model.g_margin`` and L_O (beyond the paper): against seams between micro patches.

G draws a canvas 1.5x the micro patch (a 3x3 instead of a 2x2 stem) and keeps its centre: the
pixels kept lie micro/4 pixels from the canvas border, further from the convs' zero padding
(though the stacked convs still see it), and the margins cover the neighbours' outer pixels.
L_O (``train.w_overlap``) asks that a patch's margin equal what its neighbour draws there, so
the content of one patch continues into the next instead of stopping at a seam (docs/seams.md).

Shapes: B batch, P micro patches per macro patch, C channels, S canvas side.
"""

from __future__ import annotations

import torch
from torch import Tensor

from cocogan.coords import CoordinateSystem
from cocogan.nn import Generator
from cocogan.patches import merge


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


def generate_macro_canvases(generator: SeamlessGenerator, coords: CoordinateSystem, z: Tensor,
                            rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Fake macro patches (as :func:`cocogan.model.generate_macro`) at macro positions
    ``rows``/``cols`` (B,), and the canvases (B, P, 3, S, S) their micro patches were cut from."""
    micro_rows, micro_cols = coords.micro_in_macro(rows, cols)  # (B, P)
    batch, count = micro_rows.shape
    c = coords.micro_coords(micro_rows, micro_cols).to(z.device)  # (B, P, D)
    z_rep = z[:, None, :].expand(batch, count, z.shape[1])
    canvases = generator(z_rep.reshape(batch * count, -1), c.reshape(batch * count, -1),
                         keep_margin=True)
    canvases = canvases.view(batch, count, *canvases.shape[1:])
    micro = crop_margin(canvases, generator.margin)
    return merge(micro, coords.macro_h, coords.macro_w), canvases


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
