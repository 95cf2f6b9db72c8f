"""The model bundles: G, D and the EMA generator of :class:`CocoGAN` (the paper's model) or
:class:`BaselineGAN` (the full-image GAN it is compared with), the one latent sampler, and
latents plus grid positions to patches.

Shapes: B batch, P micro patches per macro patch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import copy
import itertools
from collections.abc import Callable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from cocogan.config import ModelConfig
from cocogan.coords import CoordinateSystem, coordinate_system
from cocogan.nn import Discriminator, Generator
from cocogan.nn.baseline import BaselineDiscriminator, BaselineGenerator
from cocogan.patches import merge
from cocogan.variants import build_generator


def sample_latents(count: int, z_dim: int, generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> Tensor:
    """Latents z ~ U[-1, 1]^Z, (B, Z): the one sampler of training, sample grids and seeds,
    drawn on ``generator``'s device, then moved to ``device`` (None: left there)."""
    where = generator.device if generator is not None else None
    z = torch.rand(count, z_dim, generator=generator, device=where) * 2.0 - 1.0
    return z if device is None else z.to(device)


@torch.no_grad()
def recalibrate_norms(generator: nn.Module, forward: Callable[[], object], batches: int) -> None:
    """Give ``generator`` spectral norms of its own weights (:func:`exact_spectral_norm`), then
    its batch-norm running statistics as the cumulative average over ``batches`` calls of
    ``forward``; only BN layers run in training mode (spectral norm does not advance), and the
    generator is left in eval mode."""
    exact_spectral_norm(generator)
    norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    generator.eval()
    try:
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
            module.train()
        for _ in range(batches):
            forward()
    finally:
        generator.eval()
        for module, momentum in zip(norms, momenta, strict=True):
            module.momentum = momentum


class GANBundle(nn.Module):
    """What every model family's bundle shares: its config, latents and device."""

    config: ModelConfig

    def sample_z(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """:func:`sample_latents` on the model's device."""
        return sample_latents(batch, self.config.z_dim, generator, self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device


class CocoGAN(GANBundle):
    """G, D and an exponential moving average of G, built from a validated ModelConfig."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.coords: CoordinateSystem = coordinate_system(config)
        self.generator = build_generator(config, self.coords)
        self.discriminator = Discriminator(self.coords.coord_dim, config.z_dim, config.macro,
                                           config.ndf, config.aux_hidden)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

    @torch.no_grad()
    def recalibrate_ema(self, batch: int, batches: int = 32, seed: int = 0, extend: int = 0,
                        generator: Generator | None = None) -> None:
        """Give the EMA generator (or ``generator``, e.g. a copy of this model's geometry)
        spectral and batch norms of its own weights, not the live G's (docs/seams.md: SWD 139 ->
        112): u, v from the SVD of each weight, then BN statistics averaged over ``batches``
        training-like batches (every other one on the grid extended by ``extend``) from a
        private RNG seeded with ``seed``."""
        generator = self.generator_ema if generator is None else generator
        rng = torch.Generator().manual_seed(seed)
        continuous = self.config.sampling == "continuous"
        draws = itertools.count()

        def forward() -> None:
            # every other batch on the extended grid when beyond-boundary training draws there
            extended = extend if next(draws) % 2 else 0
            rows, cols = self.coords.sample_macro(batch, continuous=continuous, extend=extended,
                                                  generator=rng)
            generate_macro(generator, self.coords, self.sample_z(batch, rng), rows, cols)

        recalibrate_norms(generator, forward, batches)


class BaselineGAN(GANBundle):
    """Full-image G, D and EMA G (:mod:`cocogan.nn.baseline`) sized from a COCO-GAN ModelConfig
    (same full size, latent size and base widths): what a user would train instead."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.generator = BaselineGenerator(config.z_dim, config.full_height, config.full_width,
                                           config.ngf)
        self.discriminator = BaselineDiscriminator(config.full_height, config.ndf)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

    def recalibrate_ema(self, batch: int, batches: int = 32, seed: int = 0,
                        extend: int = 0) -> None:
        """As :meth:`CocoGAN.recalibrate_ema` (``extend`` is unused: no coordinates)."""
        del extend
        rng = torch.Generator().manual_seed(seed)
        recalibrate_norms(self.generator_ema, lambda: self.generator_ema(self.sample_z(batch, rng)),
                          batches)


GAN = CocoGAN | BaselineGAN  # what the Trainer, checkpoints and evaluation accept


def build_model(config: ModelConfig) -> GAN:
    """The bundle ``model.family`` names (on the CPU, freshly initialised)."""
    return BaselineGAN(config) if config.family == "baseline" else CocoGAN(config)


@torch.no_grad()
def exact_spectral_norm(module: nn.Module) -> None:
    """Set each spectral-norm parametrization's u, v to the top singular pair of its weight,
    so that its (eval-mode) estimate u^T W v is W's largest singular value."""
    for weights in module.modules():
        if isinstance(weights, parametrize.ParametrizationList):
            for norm in weights:
                if isinstance(norm, _SpectralNorm):
                    matrix = norm._reshape_weight_to_matrix(weights.original)  # (out, in k k)
                    u, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
                    norm._u.copy_(u[:, 0])
                    norm._v.copy_(vh[0])


def generate_micro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor, **options: bool) -> Tensor:
    """Micro patches (B, P, 3, micro, micro) for latents z (B, Z) at grid positions
    ``rows``/``cols`` (B, P; fractional or out of range too), in one forward pass; ``options``
    go to the generator (a variant's, e.g. ``keep_margin``)."""
    batch, count = rows.shape
    c = coords.micro_coords(rows, cols).to(z.device)  # (B, P, D)
    z_rep = z[:, None, :].expand(batch, count, z.shape[1])  # same z for all patches of a sample
    patches = generator(z_rep.reshape(batch * count, -1), c.reshape(batch * count, -1),
                        **options)
    return patches.view(batch, count, *patches.shape[1:])


def generate_macro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor) -> Tensor:
    """Fake macro patches T(m->M)(G(z | c_i)) (B, 3, n_y micro, n_x micro) at macro positions
    ``rows``/``cols`` (B,)."""
    micro_rows, micro_cols = coords.micro_in_macro(rows, cols)  # (B, P)
    micro = generate_micro(generator, coords, z, micro_rows, micro_cols)
    return merge(micro, coords.macro_h, coords.macro_w)
