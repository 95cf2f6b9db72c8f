"""COCO-GAN generator: one micro patch from (z, micro coordinate) (paper Appendix B, Fig. 11).

SN-linear to a 2x2 map of 16 ngf channels, then residual up-blocks (CBN, ReLU, nearest x2,
conv3x3, CBN, ReLU, conv3x3; shortcut x2 + conv1x1) whose count follows the micro size
(log2(micro) - 1; the paper duplicates or removes the last block), then BN, ReLU, conv3x3, tanh.
Widths halve from 8 ngf to ngf and stay at ngf for extra blocks. Micro patches smaller than 16
keep three blocks, the extra ones without up-sampling, as the authors' ablation configs do.

One option beyond the paper (off by default, so the paper's G is unchanged), against seams
between independently generated patches (docs/seams.md): ``margin``, a 3x3 instead of 2x2 stem,
so G draws a canvas 1.5x the micro patch and the centre is cropped: the pixels kept lie micro/4
pixels from the canvas border (further from the convs' zero padding, though the stacked convs
still see it), and the margins can be asked to agree with the neighbours (L_O).

A second one, for panoramas (``phase``): the angle G is told is turned by pi * z[0], so each
latent draws its scene at its own heading. Real panoramas are seen at random rolls; without it a
small G learnt one layout at one absolute angle for every z (docs/seams.md, "Panoramas that
differ").

Shapes: B batch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.layers import ConditionalBatchNorm, sn_conv, sn_linear

MIN_BLOCKS = 3  # tiny micro patches keep this many blocks (extra ones do not up-sample)


def generator_plan(micro: int, ngf: int) -> list[tuple[int, int, bool]]:
    """(in_channels, out_channels, upsample) for each residual block of a micro-size generator."""
    ups = int(math.log2(micro)) - 1
    count = max(ups, MIN_BLOCKS)
    plan, channels = [], 16 * ngf
    for index in range(count):
        out = max(ngf, 8 * ngf >> index)
        plan.append((channels, out, index < ups))
        channels = out
    return plan


class GeneratorBlock(nn.Module):
    """Residual block with CBN; optionally doubles the resolution."""

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int,
                 upsample: bool) -> None:
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
    """G(z | c): a (B, 3, micro, micro) patch in [-1, 1] for latents z and micro coordinates c.

    Args:
        z_dim: latent size Z.
        coord_dim: coordinate size D (2 Cartesian, 3 cylindrical).
        micro: output patch side, a power of two >= 4.
        ngf: base width.
        margin: generate a 1.5x canvas and keep its centre (False: the paper).
        phase: cylindrical coordinates (y, cos, sin) only: turn the angle by pi * z[0].
    """

    def __init__(self, z_dim: int, coord_dim: int, micro: int, ngf: int = 64, *,
                 margin: bool = False, phase: bool = False) -> None:
        super().__init__()
        if phase and coord_dim != 3:
            raise ValueError("phase needs cylindrical coordinates (y, cos, sin)")
        self.z_dim, self.coord_dim, self.micro, self.phase = z_dim, coord_dim, micro, phase
        self.stem_size = 3 if margin else 2  # the canvas is stem_size / 2 micro patches wide
        cond_dim = z_dim + coord_dim
        self.stem_channels = 16 * ngf
        self.stem = sn_linear(cond_dim, self.stem_size ** 2 * self.stem_channels)
        self.blocks = nn.ModuleList(
            GeneratorBlock(cin, cout, cond_dim, up) for cin, cout, up in generator_plan(micro, ngf)
        )
        last = self.blocks[-1].conv2.out_channels
        self.tail_norm = nn.BatchNorm2d(last)
        self.tail_conv = sn_conv(last, 3, 3)

    @property
    def margin(self) -> int:
        """Pixels drawn beyond each side of the micro patch (0 without ``margin``)."""
        return self.micro // 4 if self.stem_size == 3 else 0

    def forward(self, z: Tensor, coords: Tensor, *, keep_margin: bool = False) -> Tensor:
        """Micro patches (B, 3, micro, micro); with ``keep_margin`` the whole canvas
        (B, 3, micro + 2 margin, ...), whose margins overlap the neighbouring patches."""
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z: got {tuple(z.shape)}"
        assert coords.shape == (z.shape[0], self.coord_dim), \
            f"coords: got {tuple(coords.shape)}, expected ({z.shape[0]}, {self.coord_dim})"
        coords = coords.to(z.dtype)
        if self.phase:
            coords = turn_angle(coords, math.pi * z[:, 0])
        cond = torch.cat([z, coords], dim=1)  # (B, Z + D)
        x = self.stem(cond).view(-1, self.stem_channels, self.stem_size, self.stem_size)
        for block in self.blocks:
            x = block(x, cond)
        x = torch.tanh(self.tail_conv(F.relu(self.tail_norm(x))))
        if keep_margin or not self.margin:
            return x
        return crop_margin(x, self.margin)


def turn_angle(coords: Tensor, angle: Tensor) -> Tensor:
    """Cylindrical coordinates (B, 3) = (y, cos t, sin t) at angle t + ``angle`` (B,)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = coords[:, 1], coords[:, 2]
    return torch.stack([coords[:, 0], x * cos - y * sin, x * sin + y * cos], dim=1)


def crop_margin(canvas: Tensor, margin: int) -> Tensor:
    """The micro patch at the centre of a canvas (..., S, S) with ``margin`` pixels per side."""
    if not margin:
        return canvas
    return canvas[..., margin:-margin, margin:-margin]
