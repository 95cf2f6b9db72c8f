"""``model.z_phase`` (beyond the paper): each panorama latent draws its scene at its own heading.

Real panoramas are seen at random rolls; without this a small G learnt one layout at one angle
for every z (docs/seams.md). G(z, (y, cos t, sin t)) is the paper's G at angle t + pi z[0];
one patch does not determine that heading, so L_C leaves z[0] out (``HeadingContent``).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cocogan.nn import Generator


class HeadingGenerator(Generator):
    """The generator with its angle turned by pi * z[0] (cylindrical coordinates only, as
    ``ModelConfig.validate`` checks)."""

    def forward(self, z: Tensor, coords: Tensor, **options: bool) -> Tensor:
        turned = turn_angle(coords.to(z.dtype), math.pi * z[:, 0])
        return super().forward(z, turned, **options)


def turn_angle(coords: Tensor, angle: Tensor) -> Tensor:
    """Cylindrical coordinates (B, 3) = (y, cos t, sin t) at angle t + ``angle`` (B,)."""
    cos, sin = torch.cos(angle), torch.sin(angle)
    x, y = coords[:, 1], coords[:, 2]
    return torch.stack([coords[:, 0], x * cos - y * sin, x * sin + y * cos], dim=1)
