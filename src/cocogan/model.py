"""The COCO-GAN model bundle: G, D (with its heads), the EMA generator and the coordinate system.

It also knows how to turn latents and grid positions into patches, which every later layer
(training, applications, metrics) needs.

Shapes: B batch, P micro patches per macro patch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from cocogan.config import ModelConfig
from cocogan.coords import CoordinateSystem, coordinate_system
from cocogan.nn import Discriminator, Generator
from cocogan.nn.pixel_coords import PixelGeometry
from cocogan.patches import merge


class CocoGAN(nn.Module):
    """G, D and an exponential moving average of G, built from a validated ModelConfig."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.coords: CoordinateSystem = coordinate_system(config)
        dim = self.coords.coord_dim
        self.generator = build_generator(config, self.coords)
        self.discriminator = Discriminator(dim, config.z_dim, config.macro, config.ndf,
                                           config.aux_hidden)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

    def sample_z(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """Latents z ~ U[-1, 1]^Z, (B, Z), on the model's device."""
        z = torch.rand(batch, self.config.z_dim, generator=generator) * 2.0 - 1.0
        return z.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


def build_generator(config: ModelConfig, coords: CoordinateSystem) -> Generator:
    """The generator a model config describes, with its options beyond the paper."""
    pixel = None
    if config.pixel_coords:
        step_y, step_x = coords.micro_step
        pixel = PixelGeometry(step_y, step_x, coords.cyclic, config.pixel_fourier)
    return Generator(config.z_dim, coords.coord_dim, config.micro, config.ngf, pixel=pixel,
                     padding=config.g_padding, margin=config.g_margin, field=config.g_field)


def generate_micro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor) -> Tensor:
    """Micro patches for each latent at each of its grid positions, in one forward pass.

    Args:
        z: (B, Z) latents.
        rows, cols: (B, P) grid positions (fractional and out-of-range positions allowed).

    Returns:
        (B, P, 3, micro, micro).
    """
    batch, count = rows.shape
    c = coords.micro_coords(rows, cols).to(z.device)  # (B, P, D)
    z_rep = z[:, None, :].expand(batch, count, z.shape[1])  # same z for all patches of a sample
    patches = generator(z_rep.reshape(batch * count, -1), c.reshape(batch * count, -1))
    return patches.view(batch, count, *patches.shape[1:])


def generate_macro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor) -> Tensor:
    """Fake macro patches T(m->M)(G(z | c_i)) at macro positions ``rows``/``cols`` (B,).

    Returns (B, 3, n_y * micro, n_x * micro).
    """
    micro_rows, micro_cols = coords.micro_in_macro(rows, cols)  # (B, P)
    micro = generate_micro(generator, coords, z, micro_rows, micro_cols)
    return merge(micro, coords.macro_h, coords.macro_w)
