"""The COCO-GAN model bundle: G, D (with its heads), the EMA generator and the coordinate system.

It also knows how to turn latents and grid positions into patches, which every later layer
(training, applications, metrics) needs.

Shapes: B batch, P micro patches per macro patch, Z latent dims, D coordinate dims.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from cocogan.config import ModelConfig
from cocogan.coords import CoordinateSystem, coordinate_system
from cocogan.nn import Discriminator, Generator
from cocogan.nn.generator import crop_margin
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
        """Latents z ~ U[-1, 1]^Z, (B, Z), on the model's device (drawn on the generator's
        device, so a CUDA generator needs no copy from the host)."""
        device = generator.device if generator is not None else None
        z = torch.rand(batch, self.config.z_dim, generator=generator, device=device) * 2.0 - 1.0
        return z.to(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @torch.no_grad()
    def recalibrate_ema(self, batch: int, batches: int = 32, seed: int = 0,
                        extend: int = 0) -> None:
        """Give the EMA generator spectral and batch norms of its own weights.

        The EMA generator averages G's weights, but its normalisation would otherwise be the
        live G's, measured on other weights: the running statistics (docs/seams.md: SWD
        139 -> 112 on a 1,000-step tiny run) and spectral norm's u, v (which left its
        effective weights' sigma_max up to 1.23). This sets every u, v to the top singular pair
        of the EMA's own weight (SVD, so sigma_max is 1 exactly), then runs it in training mode
        over ``batches`` training-like batches (z and macro positions drawn as
        :func:`cocogan.training.step.sample_step` does, continuous when the model samples so,
        every other batch on the grid extended by ``extend`` steps, from a private RNG seeded
        with ``seed``) and keeps the cumulative average, so sampling is deterministic and the
        training RNG is untouched. Only the BN layers run in training mode.
        """
        self.recalibrate_statistics(self.generator_ema, batch, batches, seed, extend)

    @torch.no_grad()
    def recalibrate_statistics(self, generator: Generator, batch: int, batches: int = 32,
                               seed: int = 0, extend: int = 0) -> None:
        """:meth:`recalibrate_ema` for any generator of this model's geometry (e.g. a copy)."""
        exact_spectral_norm(generator)
        norms = [m for m in generator.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        momenta = [m.momentum for m in norms]
        for module in norms:
            module.reset_running_stats()
            module.momentum = None  # cumulative average over the batches below
        rng = torch.Generator().manual_seed(seed)
        continuous = self.config.sampling == "continuous"
        generator.eval()
        try:
            for module in norms:
                module.train()
            for index in range(batches):
                rows, cols = self.coords.sample_macro(batch, continuous=continuous,
                                                      extend=extend if index % 2 else 0,
                                                      generator=rng)
                generate_macro(generator, self.coords, self.sample_z(batch, rng), rows, cols)
        finally:
            generator.eval()
            for module, momentum in zip(norms, momenta, strict=True):
                module.momentum = momentum


@torch.no_grad()
def exact_spectral_norm(module: nn.Module) -> None:
    """Set each spectral-norm parametrization's u, v to the top singular pair of its weight,
    so that its (eval-mode) estimate u^T W v is W's largest singular value."""
    for layer in module.modules():
        if not parametrize.is_parametrized(layer, "weight"):
            continue
        weights = layer.parametrizations.weight
        for norm in weights:
            if isinstance(norm, _SpectralNorm):
                matrix = norm._reshape_weight_to_matrix(weights.original)  # (out, in * k * k)
                u, _, vh = torch.linalg.svd(matrix.double(), full_matrices=False)
                norm._u.copy_(u[:, 0])
                norm._v.copy_(vh[0])


def build_generator(config: ModelConfig, coords: CoordinateSystem) -> Generator:
    """The generator a model config describes, with its options beyond the paper."""
    pixel = None
    if config.pixel_coords:
        step_y, step_x = coords.micro_step
        pixel = PixelGeometry(step_y, step_x, coords.cyclic, config.pixel_fourier)
    return Generator(config.z_dim, coords.coord_dim, config.micro, config.ngf, pixel=pixel,
                     padding=config.g_padding, margin=config.g_margin, field=config.g_field)


def generate_micro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor, *, keep_margin: bool = False) -> Tensor:
    """Micro patches for each latent at each of its grid positions, in one forward pass.

    Args:
        z: (B, Z) latents.
        rows, cols: (B, P) grid positions (fractional and out-of-range positions allowed).
        keep_margin: return G's whole canvases (with ``model.g_margin``), not just the patches.

    Returns:
        (B, P, 3, micro, micro), or (B, P, 3, S, S) canvases with ``keep_margin``.
    """
    batch, count = rows.shape
    c = coords.micro_coords(rows, cols).to(z.device)  # (B, P, D)
    z_rep = z[:, None, :].expand(batch, count, z.shape[1])  # same z for all patches of a sample
    patches = generator(z_rep.reshape(batch * count, -1), c.reshape(batch * count, -1),
                        keep_margin=keep_margin)
    return patches.view(batch, count, *patches.shape[1:])


def generate_macro_canvases(generator: Generator, coords: CoordinateSystem, z: Tensor,
                            rows: Tensor, cols: Tensor) -> tuple[Tensor, Tensor]:
    """Fake macro patches (as :func:`generate_macro`) and the canvases their micro patches were
    cut from, (B, P, 3, S, S) (S = micro without ``model.g_margin``), for L_O."""
    micro_rows, micro_cols = coords.micro_in_macro(rows, cols)  # (B, P)
    canvases = generate_micro(generator, coords, z, micro_rows, micro_cols, keep_margin=True)
    micro = crop_margin(canvases, generator.margin)
    return merge(micro, coords.macro_h, coords.macro_w), canvases


def generate_macro(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor) -> Tensor:
    """Fake macro patches T(m->M)(G(z | c_i)) at macro positions ``rows``/``cols`` (B,).

    Returns (B, 3, n_y * micro, n_x * micro).
    """
    micro_rows, micro_cols = coords.micro_in_macro(rows, cols)  # (B, P)
    micro = generate_micro(generator, coords, z, micro_rows, micro_cols)
    return merge(micro, coords.macro_h, coords.macro_w)
