"""COCO-GAN generator: one micro patch from (z, micro coordinate) (paper Appendix B, Fig. 11).

SN-linear to a 2x2 map of 16 ngf channels, then residual up-blocks (CBN, ReLU, nearest x2,
conv3x3, CBN, ReLU, conv3x3; shortcut x2 + conv1x1), then BN, ReLU, conv3x3, tanh. Block count
and widths are the release's (:func:`generator_plan`; docs/design.md, "Generator depth"). This
is the paper's generator only; the options beyond it subclass it (:mod:`cocogan.variants`).

Shapes: B batch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.layers import ConditionalBatchNorm, sn_conv, sn_linear

EXTRA_BLOCKS = {8: 1, 4: 3}  # the release's g_extra_layers (N8M8S64, N16M16S64 configs)


def generator_plan(micro: int, ngf: int) -> list[tuple[int, int, bool]]:
    """(in_channels, out_channels, upsample) for each residual block of a micro-size generator."""
    ups = int(math.log2(micro)) - 1
    widths = [16 * ngf] + [max(ngf, 8 * ngf >> i) for i in range(ups + EXTRA_BLOCKS.get(micro, 0))]
    return [(a, b, index < ups) for index, (a, b) in enumerate(itertools.pairwise(widths))]


class GeneratorBlock(nn.Module):
    """Residual block with CBN; optionally doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, upsample: bool) -> None:
        super().__init__()
        self.upsample = upsample
        self.norm1 = ConditionalBatchNorm(in_channels, cond_dim)
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.norm2 = ConditionalBatchNorm(out_channels, cond_dim)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.shortcut = sn_conv(in_channels, out_channels, 1)

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self._up(F.relu(self.norm1(x, cond)))
        h = self.conv2(F.relu(self.norm2(self.conv1(h), cond)))
        return h + self.shortcut(self._up(x))


class Generator(nn.Module):
    """G(z | c): a (B, 3, micro, micro) patch in [-1, 1] for latents z (B, Z) and micro
    coordinates c (B, D); micro is a power of two >= 4, ngf the base width."""

    stem_size = 2  # the stem's feature map is stem_size x stem_size

    def __init__(self, z_dim: int, coord_dim: int, micro: int, ngf: int = 64) -> None:
        super().__init__()
        self.z_dim, self.coord_dim, self.micro = z_dim, coord_dim, micro
        cond_dim = z_dim + coord_dim
        self.stem_channels = 16 * ngf
        self.stem = sn_linear(cond_dim, self.stem_size ** 2 * self.stem_channels)
        self.blocks = nn.ModuleList(GeneratorBlock(cin, cout, cond_dim, up)
                                    for cin, cout, up in generator_plan(micro, ngf))
        last = self.blocks[-1].conv2.out_channels
        self.tail_norm = nn.BatchNorm2d(last)
        self.tail_conv = sn_conv(last, 3, 3)

    def forward(self, z: Tensor, coords: Tensor) -> Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z: got {tuple(z.shape)}"
        assert coords.shape == (z.shape[0], self.coord_dim), \
            f"coords: got {tuple(coords.shape)}, expected ({z.shape[0]}, {self.coord_dim})"
        cond = torch.cat([z, coords.to(z.dtype)], dim=1)  # (B, Z + D)
        x = self.stem(cond).view(-1, self.stem_channels, self.stem_size, self.stem_size)
        for block in self.blocks:
            x = block(x, cond)
        return torch.tanh(self.tail_conv(F.relu(self.tail_norm(x))))
