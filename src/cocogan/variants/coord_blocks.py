"""``model.coord_blocks`` (beyond the paper): only G's first N residual blocks see the coordinate.

In the paper every CBN's scale and shift are linear in (z, coordinate), so each channel can swing
with the panorama's angle: a sky changes hue from column to column. Here the CBN of the blocks
after the first N have their coordinate weights held at zero, so what those blocks draw (colour,
texture) is one per image, while the stem and the first N blocks place the layout. The
state-dict layout stays the paper's (docs/evaluation.md, "Fifth measurement").
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cocogan.nn import Generator


class ZOnly(nn.Module):
    """A CBN linear's weight (out, Z + D) with its coordinate columns (the last D) zeroed."""

    def __init__(self, z_dim: int) -> None:
        super().__init__()
        self.z_dim = z_dim

    def forward(self, weight: Tensor) -> Tensor:
        return F.pad(weight[:, : self.z_dim], (0, weight.shape[1] - self.z_dim))


def keep_coords(generator: Generator, count: int) -> Generator:
    """``generator`` with the CBN of its blocks from ``count`` on blind to the coordinate."""
    for block in generator.blocks[count:]:
        for linear in (block.norm1.gamma, block.norm1.beta, block.norm2.gamma, block.norm2.beta):
            parametrize.register_parametrization(linear, "weight", ZOnly(generator.z_dim))
    return generator
