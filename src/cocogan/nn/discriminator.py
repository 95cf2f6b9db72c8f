"""COCO-GAN discriminator with coordinate projection and two auxiliary heads (Appendix B, Fig. 12).

Residual down-blocks (the first without its leading ReLU) whose widths follow the macro size
(32 -> [1, 4, 8, 8] x ndf, 64 -> [1, 2, 4, 8, 8], 128 -> [1, 1, 2, 4, 8, 8], ...); every block
but the last average-pools, so a square macro patch ends at 4x4. Then ReLU and global *sum*
pooling to h. Outputs:
- adversarial score: linear(h) + <linear(c_M), h> (projection of the macro coordinate),
- spatial head: predicted macro coordinate c~_M,
- content head Q: predicted latent z~.
Both heads are linear(128) -> BN -> LeakyReLU(0.2) -> linear -> tanh on h.

Shapes: B batch, C/H/W image, D coordinate dims, Z latent dims, F = 8 ndf features.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.layers import sn_conv, sn_linear


def discriminator_widths(macro: int) -> list[int]:
    """Channel multipliers (x ndf) of D's blocks for a macro patch of ``macro`` pixels."""
    count = int(math.log2(macro // 4)) + 1
    tail = [1] * max(0, count - 5) + [2, 4, 8, 8]
    return [1, *tail[len(tail) - (count - 1):]]


def discriminator_trunk(size: int, ndf: int) -> tuple[nn.Sequential, int]:
    """D's residual down-blocks for ``size``-pixel-high inputs, and their output channels."""
    widths = [m * ndf for m in discriminator_widths(size)]
    blocks, channels = [], 3
    for index, width in enumerate(widths):
        blocks.append(DiscriminatorBlock(channels, width, first=index == 0,
                                         downsample=index < len(widths) - 1))
        channels = width
    return nn.Sequential(*blocks), channels


class DiscriminatorBlock(nn.Module):
    """Residual down-block: [ReLU], conv3x3, ReLU, conv3x3, [avg-pool]; shortcut conv1x1, pool."""

    def __init__(self, in_channels: int, out_channels: int, *, first: bool, downsample: bool):
        super().__init__()
        self.first, self.downsample = first, downsample
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.shortcut = sn_conv(in_channels, out_channels, 1)

    def _down(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: Tensor) -> Tensor:
        h = x if self.first else F.relu(x)
        h = self._down(self.conv2(F.relu(self.conv1(h))))
        skip = self.shortcut(self._down(x)) if self.first else self._down(self.shortcut(x))
        return h + skip


class AuxiliaryHead(nn.Module):
    """linear -> BN -> LeakyReLU(0.2) -> linear -> tanh: the spatial head and the content head Q."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            sn_linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            sn_linear(hidden, out_features), nn.Tanh(),
        )

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class Discriminator(nn.Module):
    """D(p_M, c_M) -> (score (B,), predicted coordinate (B, D), predicted z (B, Z)).

    The content head is kept as the attribute ``content`` so that it can have its own optimiser
    (the paper's Q); everything else is trained by D's optimiser.

    Args:
        coord_dim: macro coordinate size D.
        z_dim: latent size Z predicted by the content head.
        macro: macro patch height in pixels (block count follows it); any width works.
        ndf: base width.
        aux_hidden: hidden width of the auxiliary heads.
    """

    def __init__(self, coord_dim: int, z_dim: int, macro: int, ndf: int = 64,
                 aux_hidden: int = 128) -> None:
        super().__init__()
        self.blocks, channels = discriminator_trunk(macro, ndf)
        self.features_dim = channels
        self.score = sn_linear(channels, 1)
        self.projection = sn_linear(coord_dim, channels, bias=False)
        self.spatial = AuxiliaryHead(channels, aux_hidden, coord_dim)
        self.content = AuxiliaryHead(channels, aux_hidden, z_dim)

    def features(self, patches: Tensor, *, eager: bool = False) -> Tensor:
        """h: ReLU then global sum pooling of the last feature map, (B, F).

        ``eager`` bypasses a compiled trunk (``self.blocks.compile()``): the gradient penalty
        differentiates twice, which compiled graphs do not support.
        """
        assert patches.ndim == 4 and patches.shape[1] == 3, f"patches: got {tuple(patches.shape)}"
        trunk = self.blocks.forward if eager else self.blocks
        return F.relu(trunk(patches)).sum(dim=(2, 3))

    def adversarial(self, h: Tensor, coords: Tensor) -> Tensor:
        """Projection-discriminator score (B,) from features h and macro coordinates c_M."""
        projection = (self.projection(coords.to(h.dtype)) * h).sum(dim=1)
        return self.score(h).squeeze(1) + projection

    def forward(self, patches: Tensor, coords: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.features(patches)
        return self.adversarial(h, coords), self.spatial(h), self.content(h)
