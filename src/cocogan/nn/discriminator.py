"""COCO-GAN discriminator with coordinate projection and two auxiliary heads (Appendix B, Fig. 12).

Residual down-blocks (the first without its leading ReLU) whose widths follow the macro size
(32 -> [1, 4, 8, 8] x ndf, 64 -> [1, 2, 4, 8, 8], 128 -> [1, 1, 2, 4, 8, 8], ...); every block
but the last average-pools, so a square macro patch ends at 4x4. Then ReLU and global *sum*
pooling to h. Outputs:
- adversarial score: linear(h) + <linear(c_M), h> (projection of the macro coordinate),
- spatial head: predicted macro coordinate c~_M; on the cylinder (D = 3) the vertical one alone,
  the only one L_S trains (a rolled real panorama has no heading to learn),
- content head Q: predicted latent z~ (both heads: :class:`AuxiliaryHead`).

Shapes: B batch, C/H/W image, D coordinate dims, Z latent dims, F = 8 ndf features.
"""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.layers import sn_conv, sn_linear

CYLINDER_DIM = 3  # (y, cos, sin): the cylinder's macro coordinate
_SPATIAL_LAST = "spatial.net.3."  # the spatial head's last linear layer


def discriminator_trunk(size: int, ndf: int) -> tuple[nn.Sequential, int]:
    """D's residual down-blocks for ``size``-pixel-high inputs, and their output channels."""
    count = int(math.log2(size // 4)) + 1
    tail = [1] * max(0, count - 5) + [2, 4, 8, 8]
    widths = [3] + [m * ndf for m in [1, *tail[len(tail) - (count - 1):]]]  # RGB, then blocks
    blocks = (DiscriminatorBlock(a, b, first=index == 0, downsample=index < count - 1)
              for index, (a, b) in enumerate(itertools.pairwise(widths)))
    return nn.Sequential(*blocks), widths[-1]


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
    """linear(128) -> BN -> LeakyReLU(0.2) -> linear -> tanh on h: the spatial head and Q."""

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__()
        self.net = nn.Sequential(sn_linear(in_features, hidden), nn.BatchNorm1d(hidden),
                                 nn.LeakyReLU(0.2), sn_linear(hidden, out_features), nn.Tanh())

    def forward(self, h: Tensor) -> Tensor:
        return self.net(h)


class Discriminator(nn.Module):
    """D(p_M, c_M) -> (score (B,), predicted coordinate (B, S), predicted z (B, Z)); S = D but
    on the cylinder (S = 1). The content head Q (``content``) has its own optimiser. ``macro``
    is the patch height in pixels (the block count follows it; any width works)."""

    def __init__(self, coord_dim: int, z_dim: int, macro: int, ndf: int = 64,
                 aux_hidden: int = 128) -> None:
        super().__init__()
        self.blocks, channels = discriminator_trunk(macro, ndf)
        self.score = sn_linear(channels, 1)
        self.projection = sn_linear(coord_dim, channels, bias=False)
        self.spatial = AuxiliaryHead(channels, aux_hidden, spatial_dim(coord_dim))
        self.content = AuxiliaryHead(channels, aux_hidden, z_dim)
        if coord_dim == CYLINDER_DIM:
            self._register_load_state_dict_pre_hook(_legacy_cylinder_head)

    def features(self, patches: Tensor, *, eager: bool = False) -> Tensor:
        """h (B, F): ReLU then global sum pooling of the last feature map; ``eager`` bypasses a
        compiled trunk (the gradient penalty's double backward needs it)."""
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


def spatial_dim(coord_dim: int) -> int:
    """Outputs of the spatial head: the coordinate, or y alone on the cylinder."""
    return 1 if coord_dim == CYLINDER_DIM else coord_dim


def legacy_shape(name: str, stored: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    """A stored tensor of the old 3-output cylindrical spatial head, which loads (below)."""
    return (_SPATIAL_LAST in name and expected[:1] == (1,)
            and stored == (CYLINDER_DIM, *expected[1:]))


def _legacy_cylinder_head(state: dict, prefix: str, *args: object) -> None:
    """Load a cylindrical D saved with a 3-output spatial head (y, cos, sin; before 2026-12b):
    keep the y row, and keep its outputs exact. Spectral norm divides the old last layer by the
    sigma of all three rows, the new one by the norm of the y row; scaling the batch norm before
    the LeakyReLU (positively homogeneous) by norm / sigma makes up the difference."""
    last, norm = prefix + _SPATIAL_LAST, prefix + "spatial.net.1."
    weight, u, v = (last + "parametrizations.weight." + k for k in ("original", "0._u", "0._v"))
    if weight not in state or state[weight].shape[0] != CYLINDER_DIM:
        return
    old, row = state[weight], state[weight][:1]
    scale = row.norm() / (state[u] @ old @ state[v])  # sigma: what the old layer divided by
    state[weight], state[last + "bias"] = row, state[last + "bias"][:1]
    state[u], state[v] = torch.ones(1, dtype=old.dtype), (row[0] / row.norm()).clone()
    for name in ("weight", "bias"):
        state[norm + name] = state[norm + name] * scale
