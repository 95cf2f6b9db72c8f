"""COCO-GAN generator: one micro patch from (z, micro coordinate) (paper Appendix B, Fig. 11).

SN-linear to a 2x2 map of 16 ngf channels, then residual up-blocks (CBN, ReLU, nearest x2,
conv3x3, CBN, ReLU, conv3x3; shortcut x2 + conv1x1) whose count follows the micro size
(log2(micro) - 1; the paper duplicates or removes the last block), then BN, ReLU, conv3x3, tanh.
Widths halve from 8 ngf to ngf and stay at ngf for extra blocks. Micro patches smaller than 16
keep three blocks, the extra ones without up-sampling, as the authors' ablation configs do.

Options beyond the paper (all off by default, so the paper's G is unchanged), each aimed at
seams between independently generated patches (docs/seams.md):
- ``pixel``: per-pixel global coordinate channels (:mod:`cocogan.nn.pixel_coords`) concatenated
  to the input of every 3x3 conv, so structures can continue across patch borders;
- ``padding``: the 3x3 convs' padding mode (zeros as released, replicate or reflect);
- ``margin``: a 3x3 instead of 2x2 stem, so G draws a canvas 1.5x the micro patch and the centre
  is cropped: the pixels kept never touch the convs' padding;
- ``field`` (needs ``pixel``): the position reaches G only as a continuous field of per-pixel
  global coordinates: the stem is a small per-cell network of (z, the cell's global coordinate)
  instead of a linear map of (z, c) to a patch-specific 2x2 map, and CBN is conditioned on z
  alone. Every layer then computes the same function at every place of the image, so two
  neighbouring patches differ only as the content of one image differs from place to place
  (up to the convs' padding at the patch edge), as in coordinate-based generators.

Shapes: B batch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.layers import ConditionalBatchNorm, sn_conv, sn_linear
from cocogan.nn.pixel_coords import PixelGeometry

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
    """Residual block with CBN; optionally doubles the resolution.

    Args:
        extra: per-pixel coordinate channels concatenated to each 3x3 conv's input (0: none).
        padding: the 3x3 convs' padding mode.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int,
                 upsample: bool, extra: int = 0, padding: str = "zeros") -> None:
        super().__init__()
        self.upsample = upsample
        self.norm1 = ConditionalBatchNorm(in_channels, cond_dim)
        self.conv1 = sn_conv(in_channels + extra, out_channels, 3, padding)
        self.norm2 = ConditionalBatchNorm(out_channels, cond_dim)
        self.conv2 = sn_conv(out_channels + extra, out_channels, 3, padding)
        self.shortcut = sn_conv(in_channels, out_channels, 1)

    def _up(self, x: Tensor) -> Tensor:
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.upsample else x

    def forward(self, x: Tensor, cond: Tensor, pixels: PixelFeatures | None = None) -> Tensor:
        h = self._up(F.relu(self.norm1(x, cond)))
        h = self.conv1(_with_pixels(h, pixels))
        h = self.conv2(_with_pixels(F.relu(self.norm2(h, cond)), pixels))
        return h + self.shortcut(self._up(x))


class PixelFeatures:
    """Per-pixel coordinate maps of one forward pass, computed once per resolution."""

    def __init__(self, geometry: PixelGeometry, coords: Tensor) -> None:
        self.geometry, self.coords = geometry, coords
        self.cache: dict[int, Tensor] = {}

    def at(self, size: int, dtype: torch.dtype) -> Tensor:
        if size not in self.cache:
            self.cache[size] = self.geometry.features(self.coords, size)
        return self.cache[size].to(dtype)


def _with_pixels(h: Tensor, pixels: PixelFeatures | None) -> Tensor:
    if pixels is None:
        return h
    return torch.cat([h, pixels.at(h.shape[-1], h.dtype)], dim=1)  # (B, C + F, n, n)


class Generator(nn.Module):
    """G(z | c): a (B, 3, micro, micro) patch in [-1, 1] for latents z and micro coordinates c.

    Args:
        z_dim: latent size Z.
        coord_dim: coordinate size D (2 Cartesian, 3 cylindrical).
        micro: output patch side, a power of two >= 4.
        ngf: base width.
        pixel: per-pixel coordinate geometry; None (the paper) feeds none.
        padding: padding mode of the 3x3 convs: zeros (the paper), replicate or reflect.
        margin: generate a 1.5x canvas and keep its centre (False: the paper).
        field: position only through the per-pixel coordinate field (needs ``pixel``).
    """

    def __init__(self, z_dim: int, coord_dim: int, micro: int, ngf: int = 64, *,
                 pixel: PixelGeometry | None = None, padding: str = "zeros",
                 margin: bool = False, field: bool = False) -> None:
        super().__init__()
        if field and pixel is None:
            raise ValueError("a field generator needs per-pixel coordinates (pixel)")
        self.z_dim, self.coord_dim, self.micro, self.field = z_dim, coord_dim, micro, field
        if pixel is not None and margin:
            pixel = PixelGeometry(pixel.step_y, pixel.step_x, pixel.cyclic, pixel.fourier, 1.5)
        self.pixel = pixel
        self.stem_size = 3 if margin else 2  # the canvas is stem_size / 2 micro patches wide
        extra = pixel.channels if pixel is not None else 0
        cond_dim = z_dim if field else z_dim + coord_dim
        self.stem_channels = 16 * ngf
        if field:  # per cell: (z, global cell coordinate) -> features, the same everywhere
            self.stem = nn.Sequential(sn_conv(z_dim + extra, self.stem_channels, 1), nn.ReLU(),
                                      sn_conv(self.stem_channels, self.stem_channels, 1))
        else:
            self.stem = sn_linear(cond_dim, self.stem_size ** 2 * self.stem_channels)
        self.blocks = nn.ModuleList(
            GeneratorBlock(cin, cout, cond_dim, up, extra, padding)
            for cin, cout, up in generator_plan(micro, ngf)
        )
        last = self.blocks[-1].conv2.out_channels
        self.tail_norm = nn.BatchNorm2d(last)
        self.tail_conv = sn_conv(last + extra, 3, 3, padding)

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
        pixels = PixelFeatures(self.pixel, coords) if self.pixel is not None else None
        if self.field:
            assert pixels is not None
            cond = z  # (B, Z): CBN sees the content only
            size = self.stem_size
            cells = pixels.at(size, z.dtype)  # (B, F, s, s) global coordinates of the cells
            x = self.stem(torch.cat([z[:, :, None, None].expand(-1, -1, size, size), cells], 1))
        else:
            cond = torch.cat([z, coords], dim=1)  # (B, Z + D)
            x = self.stem(cond).view(-1, self.stem_channels, self.stem_size, self.stem_size)
        for block in self.blocks:
            x = block(x, cond, pixels)
        x = torch.tanh(self.tail_conv(_with_pixels(F.relu(self.tail_norm(x)), pixels)))
        if keep_margin or not self.margin:
            return x
        return crop_margin(x, self.margin)


def crop_margin(canvas: Tensor, margin: int) -> Tensor:
    """The micro patch at the centre of a canvas (..., S, S) with ``margin`` pixels per side."""
    if not margin:
        return canvas
    return canvas[..., margin:-margin, margin:-margin]
