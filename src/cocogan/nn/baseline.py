"""Full-image baseline GAN: a plain SN-ResNet WGAN-GP generator and critic for the whole image.

What generation by parts is compared with (the paper's Table 1): no coordinates, one pass per
full image. Widths follow COCO-GAN's for the same preset, so capacities are similar; G has no
CBN and starts from 4x4, D sees the full image.

Shapes: B batch, Z latent dims, H/W full image height/width, F final critic features.
"""

from __future__ import annotations

import itertools
import math

import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.discriminator import discriminator_trunk
from cocogan.nn.layers import sn_conv, sn_linear

BASE_SIDE = 4  # the generator's first feature map has this many pixels on its shorter side


def up_steps(height: int, width: int) -> int:
    """Number of x2 up-samplings from a BASE_SIDE map to (height, width); a size the baseline
    cannot draw is a ValueError."""
    short = min(height, width)
    steps = int(math.log2(short // BASE_SIDE)) if short >= BASE_SIDE else -1
    if steps < 1 or short != BASE_SIDE << steps or height % short or width % short:
        raise ValueError(f"model.family=baseline needs a power-of-two shorter side >= 8 that "
                         f"divides the other side, got {height}x{width}: use another preset")
    return steps


class BaselineBlock(nn.Module):
    """Residual up-block with plain batch norm: BN, ReLU, x2, conv3x3, BN, ReLU, conv3x3."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.norm1 = nn.BatchNorm2d(in_channels)
        self.conv1 = sn_conv(in_channels, out_channels, 3)
        self.norm2 = nn.BatchNorm2d(out_channels)
        self.conv2 = sn_conv(out_channels, out_channels, 3)
        self.shortcut = sn_conv(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        h = F.interpolate(F.relu(self.norm1(x)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.norm2(self.conv1(h))))
        return h + self.shortcut(F.interpolate(x, scale_factor=2, mode="nearest"))


class BaselineGenerator(nn.Module):
    """G(z): a full (B, 3, H, W) image in [-1, 1] from a latent z (B, Z); the shorter side
    of (height, width) a power of two >= 8 dividing the longer, widths 16 .. 1 x ngf."""

    def __init__(self, z_dim: int, height: int, width: int, ngf: int = 64) -> None:
        super().__init__()
        steps = up_steps(height, width)
        self.z_dim = z_dim
        self.base = (height >> steps, width >> steps)  # (h0, w0), the first feature map
        self.stem_channels = 16 * ngf
        self.stem = sn_linear(z_dim, self.base[0] * self.base[1] * self.stem_channels)
        widths = [self.stem_channels] + [max(ngf, 8 * ngf >> i) for i in range(steps)]
        self.blocks = nn.Sequential(*(BaselineBlock(a, b) for a, b in itertools.pairwise(widths)))
        self.tail_norm = nn.BatchNorm2d(widths[-1])
        self.tail_conv = sn_conv(widths[-1], 3, 3)

    def forward(self, z: Tensor) -> Tensor:
        assert z.ndim == 2 and z.shape[1] == self.z_dim, f"z: got {tuple(z.shape)}"
        x = self.blocks(self.stem(z).view(-1, self.stem_channels, *self.base))  # from (h0, w0)
        return self.tail_conv(F.relu(self.tail_norm(x))).tanh()


class BaselineDiscriminator(nn.Module):
    """Critic D(x) -> score (B,) on full images: COCO-GAN's down-blocks (their count follows
    ``height``), ReLU, sum pool, SN-linear; no projection, no heads."""

    def __init__(self, height: int, ndf: int = 64) -> None:
        super().__init__()
        self.blocks, channels = discriminator_trunk(height, ndf)
        self.score = sn_linear(channels, 1)

    def forward(self, images: Tensor) -> Tensor:
        assert images.ndim == 4 and images.shape[1] == 3, f"images: got {tuple(images.shape)}"
        h = F.relu(self.blocks(images)).sum(dim=(2, 3))  # (B, F)
        return self.score(h).squeeze(1)
