"""One COCO-GAN training iteration: the phases of :mod:`cocogan.losses` (D, G, then Q), run.

The objectives are the loss's (options: :mod:`cocogan.loss_variants`); this module runs each
phase's forward, backward and optimiser step with precision, spectral-norm caching and ranks.
G runs forward once per step and D is frozen in G's and Q's phases (docs/design.md, "One step,
three phases"); ``loss.extrapolate`` adds an extrapolation step per iteration (docs/design.md,
"Beyond-boundary fine-tuning"), whose values are ``extrap/...``.

Values stay 0-dim tensors on the device, so a GPU never waits for Python. Speed options leave
the maths unchanged (tests/test_step_equivalence.py): device-side randomness, bf16 autocast,
channels-last, compiled G and D trunks (the penalty's double backward runs the eager trunk).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import MISSING, dataclass, fields

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from cocogan.config import Config
from cocogan.loss_variants import build_loss
from cocogan.losses import CocoGANLoss, StepBatch, at_least_float32
from cocogan.model import CocoGAN
from cocogan.patches import crop
from cocogan.variants.augment import augment, kinds_of

EXTRAPOLATED_BLOCKS = 2  # G blocks the extrapolation step trains (the release's g_resblock_0/1)


class NamedOptimizers:
    """A dataclass of optimisers by name; a field that is None (an optional one) is skipped."""

    def named(self) -> dict[str, torch.optim.Optimizer]:
        return {f.name: getattr(self, f.name) for f in fields(self)  # type: ignore[arg-type]
                if getattr(self, f.name) is not None}

    def state_dict(self) -> dict[str, dict]:
        return {name: optimizer.state_dict() for name, optimizer in self.named().items()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        """Each optimiser's state; an optional one missing from ``state`` keeps its own."""
        for item in fields(self):  # type: ignore[arg-type]
            optimizer = getattr(self, item.name)
            if optimizer is not None and (item.name in state or item.default is MISSING):
                optimizer.load_state_dict(state[item.name])


@dataclass
class Optimizers(NamedOptimizers):
    """TTUR Adam of G, D (trunk, projection, spatial head) and Q (content head); the
    extrapolation step's (loss.extrapolate) start fresh when a checkpoint lacks them."""

    g: torch.optim.Optimizer
    d: torch.optim.Optimizer
    q: torch.optim.Optimizer
    g_extrap: torch.optim.Optimizer | None = None
    d_extrap: torch.optim.Optimizer | None = None


def adam(params: Iterable[nn.Parameter], lr: float, train: Config, device: torch.device
         ) -> torch.optim.Optimizer:
    """Adam(beta1, beta2); on CUDA the fused kernel updates all tensors in one launch."""
    fused = {"fused": True} if device.type == "cuda" else {}
    return torch.optim.Adam(params, lr=lr, betas=(train.optim.beta1, train.optim.beta2),
                            **fused)


def build_optimizers(model: CocoGAN, train: Config) -> Optimizers:
    """TTUR Adam optimisers (build after moving the model)."""
    optim, device = train.optim, model.device
    q_params = list(model.discriminator.content.parameters())
    q_ids = {id(p) for p in q_params}
    d_params = [p for p in model.discriminator.parameters() if id(p) not in q_ids]
    extra = {}
    if train.loss.extrapolate:
        first = model.generator.blocks[:EXTRAPOLATED_BLOCKS].parameters()
        extra = {"g_extrap": adam(first, optim.lr_g, train, device),
                 "d_extrap": adam(d_params, optim.lr_d, train, device)}
    return Optimizers(g=adam(model.generator.parameters(), optim.lr_g, train, device),
                      d=adam(d_params, optim.lr_d, train, device),
                      q=adam(q_params, optim.lr_q, train, device), **extra)


def sample_step(model: CocoGAN, images: Tensor, train: Config, rng: torch.Generator,
                *, extend: int = 0) -> StepBatch:
    """Draw z and macro positions, crop the real macro patches T(X->M) at the same positions.

    ``extend`` > 0 (the extrapolation step): fake positions come from the grid extended by
    ``extend`` steps past each border, real ones are drawn independently inside the image.
    """
    system, cfg = model.coords, model.config
    batch = images.shape[0]
    continuous = cfg.sampling == "continuous"
    z = model.sample_z(batch, rng)
    rows, cols = system.sample_macro(batch, continuous=continuous, extend=extend, generator=rng)
    real_rows, real_cols = (rows, cols) if not extend else system.sample_macro(
        batch, continuous=continuous, generator=rng)
    top, left = system.pixel_offset(real_rows, real_cols)
    # Valid by construction (in range or wrapped), so the host-side range check is skipped.
    real = crop(images, top, left, cfg.macro, cfg.macro_w, wrap=system.cyclic, check=False)
    real_coords = system.macro_coords(real_rows, real_cols).to(images.device)
    fake_coords = real_coords if not extend else system.macro_coords(rows, cols).to(images.device)
    return StepBatch(z=z, rows=rows, cols=cols, real=real, real_coords=real_coords,
                     fake_coords=fake_coords, extended=extend > 0)


def train_step(model: CocoGAN, optimizers: Optimizers, images: Tensor, train: Config,
               rng: torch.Generator, *, amp: bool = False, sn_once: bool = True,
               iteration: int = 0) -> dict[str, Tensor]:
    """One iteration on real full images (B, 3, H, W) in [-1, 1]; updates G and D in place and
    returns 0-dim tensors on the device: the phases' values, loss_D/G/Q and the diagnostics.

    Args:
        rng: z, positions, GP factors and augmentation (saved for exact resume); on the
            model's device it keeps the step free of host-to-device copies.
        amp: bfloat16 autocast for the forward passes (CUDA only).
        sn_once: D's spectrally normalised weights computed once per D update, in float32
            (one power iteration, Miyato et al.'s Algorithm 1), real and fake in one trunk
            call; off, each D call (real, fake, penalty) runs its own power iteration.
        iteration: the run's step count before this step (``loss.gp_every`` counts it).
    """
    model.generator.train()
    model.discriminator.train()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if amp and images.is_cuda else contextlib.nullcontext())
    phases = Phases(build_loss(model, train, iteration), rng, autocast, sn_once,
                    kinds_of(train.loss.augment))
    step = sample_step(model, images, train, rng)
    values, h_fake = phases.iteration(step, optimizers.d, optimizers.g)
    values.update(phases.q(step, h_fake, optimizers.q))
    if train.loss.extrapolate:
        assert optimizers.g_extrap is not None and optimizers.d_extrap is not None, \
            "build_optimizers(train) with loss.extrapolate"
        step = sample_step(model, images, train, rng, extend=train.loss.extrapolate)
        extra, _ = phases.iteration(step, optimizers.d_extrap, optimizers.g_extrap)
        values.update({f"extrap/{name}": value for name, value in extra.items()})
    return {name: at_least_float32(value.detach()) for name, value in values.items()}


@dataclass
class Phases:
    """Runs the phases of ``loss``: each one's forward, backward and optimiser step."""

    loss: CocoGANLoss
    rng: torch.Generator
    autocast: contextlib.AbstractContextManager
    sn_once: bool
    augment: tuple[str, ...]  # loss.augment's kinds, applied to every patch D sees

    def iteration(self, step: StepBatch, d_optimizer: torch.optim.Optimizer,
                  g_optimizer: torch.optim.Optimizer) -> tuple[dict[str, Tensor], Tensor]:
        """G forward once, then the D and G updates on that one batch of fakes; returns the
        values and D's features of the fakes in G's phase (for Q)."""
        with self.autocast:
            fake = self.loss.generate(step)
        values = self.d(step, fake.detach(), d_optimizer)
        g_values, h_fake = self.g(step, fake, g_optimizer)
        return {**values, **g_values}, h_fake

    def d(self, step: StepBatch, fake: Tensor, optimizer: torch.optim.Optimizer
          ) -> dict[str, Tensor]:
        D = self.loss.model.discriminator
        real = augment(step.real, self.augment, self.rng)
        fake = augment(fake.to(real.dtype), self.augment, self.rng)
        with parametrize.cached() if self.sn_once else contextlib.nullcontext():
            if self.sn_once:
                compute_parametrizations(D)  # float32, before autocast
            with self.autocast:  # sn_once: the same weights for both halves, one trunk call
                h_real, h_fake = (D.features(torch.cat([real, fake])).chunk(2) if self.sn_once
                                  else (D.features(real), D.features(fake)))
                loss, values = self.loss.d_phase(step, h_real, h_fake, real, fake, self.rng)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
        optimizer.step()  # (multi-process: gradients are averaged by a pre-step hook)
        return {**values, "loss_D": loss, "grad_D": gradient_norm(optimizer)}

    def g(self, step: StepBatch, fake: Tensor, optimizer: torch.optim.Optimizer
          ) -> tuple[dict[str, Tensor], Tensor]:
        D = self.loss.model.discriminator
        in_range = in_range_weights(self.loss.model, step)
        with frozen(D), self.autocast:
            h_fake = D.features(augment(fake, self.augment, self.rng))
            loss, values = self.loss.g_phase(step, h_fake, in_range)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()  # D's weights were frozen in the forward: no gradient reaches them
        optimizer.step()
        return {**values, "loss_G": loss, "grad_G": gradient_norm(optimizer)}, h_fake

    def q(self, step: StepBatch, h_fake: Tensor, optimizer: torch.optim.Optimizer
          ) -> dict[str, Tensor]:
        with frozen(self.loss.model.discriminator.content, grads=False):
            loss, values = self.loss.q_phase(step, at_least_float32(h_fake.detach()))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return {**values, "loss_Q": loss, "grad_Q": gradient_norm(optimizer)}


def in_range_weights(model: CocoGAN, step: StepBatch) -> Tensor:
    """Weights (B,) of each fake's L_S in G's objective: 1 / count inside the grid, 0 outside;
    in a multi-process extrapolation step the global count over R (the averaging undoes R)."""
    inside = model.coords.in_bounds(step.rows, step.cols).to(step.z)  # (B,)
    count = inside.sum()
    if step.extended and dist.is_available() and dist.is_initialized():
        dist.all_reduce(count)
        return inside * dist.get_world_size() / count.clamp(min=1)
    return inside / count.clamp(min=1)


@contextlib.contextmanager
def frozen(module: nn.Module, *, grads: bool = True) -> Iterator[None]:
    """``module`` in training mode minus its side effects: batch norms keep their running
    statistics (momentum 0, count restored), spectral norm skips its power iteration and
    (``grads``) no parameter builds a gradient."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
             and m.track_running_stats]
    saved = [(m.momentum, m.num_batches_tracked.clone()) for m in norms]
    spectral = [m for m in module.modules() if isinstance(m, _SpectralNorm) and m.training]
    trainable = [p for p in module.parameters() if p.requires_grad] if grads else []
    for m in norms:
        m.momentum = 0.0  # running = 1 * running + 0 * batch: unchanged
    for m in spectral:
        m.eval()
    for p in trainable:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, (momentum, count) in zip(norms, saved, strict=True):
            m.momentum = momentum
            m.num_batches_tracked.copy_(count)
        for m in spectral:
            m.train()
        for p in trainable:
            p.requires_grad_(True)


def gradient_norm(optimizer: torch.optim.Optimizer) -> Tensor:
    """L2 norm of the gradients an optimiser just stepped with (0-dim, on the device)."""
    grads = [p.grad for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None]
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float()) if grads \
        else torch.zeros(())


def compute_parametrizations(module: nn.Module) -> None:
    """Fill parametrize's cache: every parametrized weight (spectral norm) computed now."""
    for m in module.modules():
        if parametrize.is_parametrized(m):
            for name in m.parametrizations:
                getattr(m, name)
