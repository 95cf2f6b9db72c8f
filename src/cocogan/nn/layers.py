"""Building blocks shared by G and D: spectrally normalised layers and conditional batch norm."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

_shapes_only = False  # set by shapes_only(): layers without spectral norm, on the meta device


@contextlib.contextmanager
def shapes_only() -> Iterator[None]:
    """Build networks for their shapes and parameter counts only: tensors on the meta device
    (no memory, no initialisation) and no spectral-norm parametrization (its power iterations
    are most of a build's time; it adds buffers, not parameters, so counts are unchanged)."""
    global _shapes_only
    previous, _shapes_only = _shapes_only, True
    try:
        with torch.device("meta"):
            yield
    finally:
        _shapes_only = previous


def _spectral_norm(module: nn.Module) -> nn.Module:
    return module if _shapes_only else spectral_norm(module)


def sn_conv(in_channels: int, out_channels: int, kernel: int) -> nn.Module:
    """Spectrally normalised conv with 'same' zero padding (Miyato et al. 2018)."""
    return _spectral_norm(nn.Conv2d(in_channels, out_channels, kernel, padding=kernel // 2))


def sn_linear(in_features: int, out_features: int, bias: bool = True) -> nn.Module:
    """Spectrally normalised linear layer."""
    return _spectral_norm(nn.Linear(in_features, out_features, bias=bias))


class ConditionalBatchNorm(nn.Module):
    """CBN (paper eq. 5): o = (x - mu) / sqrt(var + eps) * gamma(y) + beta(y) for the
    condition y = concat(z, micro coordinate) (the release divided by sqrt(var^2 + eps)).
    gamma's bias starts at 1 and beta's at 0: the layer starts as plain batch norm."""

    def __init__(self, channels: int, cond_dim: int) -> None:
        super().__init__()
        self.norm = nn.BatchNorm2d(channels, affine=False)
        self.gamma = sn_linear(cond_dim, channels)
        self.beta = sn_linear(cond_dim, channels)
        nn.init.ones_(self.gamma.bias)
        nn.init.zeros_(self.beta.bias)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        gamma = self.gamma(cond)[:, :, None, None]  # (B, C, 1, 1)
        beta = self.beta(cond)[:, :, None, None]
        return self.norm(x) * gamma + beta
