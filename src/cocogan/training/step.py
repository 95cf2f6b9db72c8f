"""One COCO-GAN training step (paper Section 2): a D update, a G update, then a Q update.

Objectives (weights from the config's ``loss`` section):
- D: -L_W + w_gp L_GP + w_spatial L_S(real) + w_content L_C(fake)
- G: -E[D(fake)] + w_spatial L_S(fake) + w_content L_C(fake) + w_overlap L_O (beyond the paper;
  ``w_spatial_g``, when set, replaces w_spatial here)
- Q (the content head, own optimiser): L_C(fake), last, on the features D's update gives
- cylindrical coordinates: L_S compares the vertical coordinate only (docs/design.md: the real
  panorama's angle is unknowable after its random roll)

Each phase changes only its own network: G runs forward once per step, with gradients (D gets
its output detached); in G's and Q's phases D neither builds weight gradients nor changes its
buffers (its batch norms use batch statistics without tracking them, spectral norm does no
power iteration), so D's eval-mode heads hold statistics of D's own phase only.
With ``loss.extrapolate`` (beyond-boundary fine-tuning, as the authors' release) every step
is followed by an extrapolation step: fakes from the extended grid, reals from independent
in-range positions, the penalty without the coordinate projection, and a G update of G's first
two blocks only (their own optimiser).

The returned dict holds 0-dim tensors on the training device (L_W is the Wasserstein estimate;
D_real / D_fake its two means, GP_norm / GP_norm_max the penalty's gradient norms, grad_D /
grad_G / grad_Q each update's gradient norm): nothing in a step reads a value back to the host,
so a GPU never waits for Python; the log reads them when it writes a record.

Speed options that leave the maths unchanged (``tests/test_step_equivalence.py`` compares them
with the plain step): randomness drawn on the device of ``rng``, bf16 autocast, channels-last
tensors and compiled G and D trunks (set up by the trainer; the gradient penalty's double
backward always runs the eager trunk, which AOTAutograd cannot differentiate twice).
``sn_once`` (the default) changes it slightly: see :func:`train_step`.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from dataclasses import MISSING, dataclass, fields

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

from cocogan.config import Config
from cocogan.losses import (
    content_consistency,
    gradient_penalty,
    overlap_consistency,
    spatial_consistency,
    wasserstein_estimate,
)
from cocogan.model import CocoGAN, generate_macro_canvases
from cocogan.patches import crop

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
    """TTUR Adam optimisers: G, D (trunk, projection, spatial head) and Q (content head);
    ``g_extrap``: G's first blocks in the extrapolation step (only with loss.extrapolate)."""

    g: torch.optim.Optimizer
    d: torch.optim.Optimizer
    q: torch.optim.Optimizer
    g_extrap: torch.optim.Optimizer | None = None


def build_optimizers(model: CocoGAN, train: Config) -> Optimizers:
    """Adam(beta1, beta2) with the TTUR learning rates (build after moving the model)."""
    betas = (train.optim.beta1, train.optim.beta2)
    disc = model.discriminator
    q_params = list(disc.content.parameters())
    q_ids = {id(p) for p in q_params}
    d_params = [p for p in disc.parameters() if id(p) not in q_ids]
    # CUDA: the fused kernel updates every tensor of an optimiser in one launch.
    fused = {"fused": True} if model.device.type == "cuda" else {}
    g_extrap = None
    if train.loss.extrapolate:
        first = model.generator.blocks[:EXTRAPOLATED_BLOCKS].parameters()
        g_extrap = torch.optim.Adam(first, lr=train.optim.lr_g, betas=betas, **fused)
    return Optimizers(
        g=torch.optim.Adam(model.generator.parameters(), lr=train.optim.lr_g, betas=betas, **fused),
        d=torch.optim.Adam(d_params, lr=train.optim.lr_d, betas=betas, **fused),
        q=torch.optim.Adam(q_params, lr=train.optim.lr_q, betas=betas, **fused),
        g_extrap=g_extrap,
    )


@dataclass
class StepBatch:
    """What one step samples: latents, fake and real macro positions, real macro patches."""

    z: Tensor  # (B, Z)
    rows: Tensor  # (B,) fake macro positions (grid units, may be out of range when extrapolating)
    cols: Tensor
    real: Tensor  # (B, 3, Mh, Mw) real macro patches
    real_coords: Tensor  # (B, D) macro coordinates of the real patches
    fake_coords: Tensor  # (B, D) macro coordinates of the fake patches
    extended: bool = False  # an extrapolation step's batch (fakes on the extended grid)

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
    device = images.device
    real_coords = system.macro_coords(real_rows, real_cols).to(device)
    fake_coords = real_coords if not extend else system.macro_coords(rows, cols).to(device)
    return StepBatch(z=z, rows=rows, cols=cols, real=real, real_coords=real_coords,
                     fake_coords=fake_coords, extended=extend > 0)


def train_step(model: CocoGAN, optimizers: Optimizers, images: Tensor, train: Config,
               rng: torch.Generator, *, amp: bool = False, sn_once: bool = True
               ) -> dict[str, Tensor]:
    """One full iteration on a batch of real full images (B, 3, H, W) in [-1, 1].

    Args:
        model: the bundle; its generator and discriminator are updated in place.
        optimizers: from :func:`build_optimizers`.
        images: real full images on the model's device.
        train: loss weights and extrapolation settings.
        rng: RNG for z, positions and GP factors (saved with checkpoints for exact resume); a
            generator on the model's device keeps the step free of host-to-device copies.
        amp: bfloat16 autocast for the forward passes (CUDA only).
        sn_once: D's spectrally normalised weights are computed once for the D update, in
            float32 outside autocast (one power iteration, as in Miyato et al.'s Algorithm 1),
            and real and fake patches go through D's trunk in one call; off, every call of D
            in its update runs its own power iteration (real, fake and penalty: three weight
            sets in one loss).

    Returns:
        0-dim tensors on the device: L_W, L_GP, L_S_real, L_S_fake, L_C, loss_D, loss_G,
        loss_Q (and L_O with ``w_overlap``), plus the diagnostics of the module docstring.
    """
    model.generator.train()
    model.discriminator.train()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if amp and images.is_cuda else contextlib.nullcontext())
    step = sample_step(model, images, train, rng)
    values = _iteration(model, optimizers, optimizers.g, step, train, rng, autocast, sn_once)
    if train.loss.extrapolate:
        assert optimizers.g_extrap is not None, "build_optimizers(train) with loss.extrapolate"
        step = sample_step(model, images, train, rng, extend=train.loss.extrapolate)
        _iteration(model, optimizers, optimizers.g_extrap, step, train, rng, autocast, sn_once,
                   project_gp=False)
    return {name: _at_least_float32(value.detach()) for name, value in values.items()}


def _iteration(model: CocoGAN, optimizers: Optimizers, g_optimizer: torch.optim.Optimizer,
               step: StepBatch, train: Config, rng: torch.Generator,
               autocast: contextlib.AbstractContextManager, sn_once: bool,
               project_gp: bool = True) -> dict[str, Tensor]:
    """G forward once, then the D, G and Q updates on that one batch of fakes."""
    with autocast:
        fake, canvases = generate_macro_canvases(model.generator, model.coords, step.z,
                                                 step.rows, step.cols)
    values = d_step(model, optimizers.d, step, fake.detach(), train, rng, autocast, sn_once,
                    project_gp)
    g_values, h_fake = g_step(model, g_optimizer, step, fake, canvases, train, autocast)
    values.update(g_values)
    values.update(q_step(model, optimizers.q, h_fake.detach(), step.z))
    return values


def d_step(model: CocoGAN, optimizer: torch.optim.Optimizer, step: StepBatch, fake: Tensor,
           train: Config, rng: torch.Generator, autocast: contextlib.AbstractContextManager,
           sn_once: bool, project_gp: bool = True) -> dict[str, Tensor]:
    """D minimises -L_W + w_gp L_GP + w_spatial L_S(real) + w_content L_C(fake)."""
    D = model.discriminator
    real = step.real
    fake = fake.to(real.dtype)
    with parametrize.cached() if sn_once else contextlib.nullcontext():
        if sn_once:
            _compute_parametrizations(D)  # float32, before autocast
        with autocast:
            if sn_once:  # same weights for both halves: one trunk call
                h_real, h_fake = D.features(torch.cat([real, fake])).chunk(2)
            else:
                h_real = D.features(real)
                h_fake = D.features(fake)
            real_score = D.adversarial(h_real, step.real_coords)
            fake_score = D.adversarial(h_fake, step.fake_coords)
            l_w = wasserstein_estimate(real_score, fake_score)
            l_s_real = spatial_loss(model, D.spatial(h_real), step.real_coords)
            l_c_d = content_consistency(D.content(h_fake), step.z)

        def critic(x: Tensor) -> Tensor:  # the release drops the projection where coords differ
            h = D.features(x, eager=True)
            return D.adversarial(h, step.real_coords) if project_gp else D.score(h).squeeze(1)

        # in the images' precision (fp32), also under autocast
        l_gp, norms = gradient_penalty(critic, real, fake, generator=rng, with_norms=True)
        loss = train.loss
        loss_d = -l_w + loss.w_gp * l_gp + loss.w_spatial * l_s_real + loss.w_content * l_c_d
        optimizer.zero_grad(set_to_none=True)
        loss_d.backward()
    optimizer.step()  # (multi-process: gradients are averaged by a pre-step hook)
    return {"L_W": l_w, "L_GP": l_gp, "L_S_real": l_s_real, "loss_D": loss_d,
            "D_real": real_score.mean(), "D_fake": fake_score.mean(),
            "GP_norm": norms.mean(), "GP_norm_max": norms.max(),
            "grad_D": gradient_norm(optimizer)}


def g_step(model: CocoGAN, optimizer: torch.optim.Optimizer, step: StepBatch, fake: Tensor,
           canvases: Tensor, train: Config, autocast: contextlib.AbstractContextManager
           ) -> tuple[dict[str, Tensor], Tensor]:
    """G minimises -E[D(fake)] + w L_S(fake) + w_content L_C(fake) (+ w_overlap L_O).

    Returns the values and D's features of the fakes (after D's update, for Q).
    """
    D = model.discriminator
    inside = model.coords.in_bounds(step.rows, step.cols).to(fake.device)  # (B,)
    with frozen(D), autocast:
        h_fake = D.features(fake)
        loss_adv = -D.adversarial(h_fake, step.fake_coords).mean()
        # Out-of-range fakes have no real ground truth: L_S does not reach G through them.
        l_s_fake = _masked_mean(spatial_loss(model, D.spatial(h_fake), step.fake_coords,
                                             reduce=False), inside, across_ranks=step.extended)
        l_c_g = content_consistency(D.content(h_fake), step.z)
        loss = train.loss
        w_spatial_g = loss.w_spatial if loss.w_spatial_g is None else loss.w_spatial_g
        loss_g = loss_adv + w_spatial_g * l_s_fake + train.loss.w_content * l_c_g
        values = {"L_S_fake": l_s_fake}
        if train.loss.w_overlap:
            l_overlap = overlap_consistency(_at_least_float32(canvases), model.coords.macro_h,
                                            model.coords.macro_w, model.generator.margin)
            loss_g = loss_g + train.loss.w_overlap * l_overlap
            values["L_O"] = l_overlap
    optimizer.zero_grad(set_to_none=True)
    loss_g.backward()  # D's weights were frozen in the forward: no gradient reaches them
    optimizer.step()
    values.update({"loss_G": loss_g, "grad_G": gradient_norm(optimizer)})
    return values, h_fake


def q_step(model: CocoGAN, optimizer: torch.optim.Optimizer, h_fake: Tensor, z: Tensor
           ) -> dict[str, Tensor]:
    """Q (the content head) minimises L_C on D's features of the step's fakes."""
    content = model.discriminator.content
    with frozen(content, grads=False):
        l_c = content_consistency(content(_at_least_float32(h_fake)), z)
    optimizer.zero_grad(set_to_none=True)
    l_c.backward()
    optimizer.step()
    return {"L_C": l_c, "loss_Q": l_c, "grad_Q": gradient_norm(optimizer)}


def spatial_loss(model: CocoGAN, predicted: Tensor, target: Tensor, *, reduce: bool = True
                 ) -> Tensor:
    """L_S (eq. 3); cylindrical: the vertical coordinate only (a rolled real panorama's angle
    is unknowable, docs/design.md). ``reduce=False``: per sample (B,)."""
    if model.coords.cyclic:
        predicted, target = predicted[:, :1], target[:, :1]
    if reduce:
        return spatial_consistency(predicted, target)
    return ((predicted - target) ** 2).mean(dim=1)


@contextlib.contextmanager
def frozen(module: nn.Module, *, grads: bool = True) -> Iterator[None]:
    """``module`` as in training, minus its side effects: batch norms use batch statistics
    without moving their running ones (momentum 0, the count restored), spectral norm does no
    power iteration and (``grads``) no parameter builds a gradient. Restored on exit."""
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
    if not grads:
        return torch.zeros(())
    return torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())


def _compute_parametrizations(module: nn.Module) -> None:
    """Fill parametrize's cache: every parametrized weight (spectral norm) computed now."""
    for m in module.modules():
        if parametrize.is_parametrized(m):
            for name in m.parametrizations:
                getattr(m, name)


def _masked_mean(values: Tensor, mask: Tensor, across_ranks: bool = False) -> Tensor:
    """Mean of ``values`` (B,) over ``mask``; ``across_ranks`` (the extrapolation step, where
    ranks mask different counts): over all ranks of a multi-process run, each rank dividing by
    the global count over the rank count, which the gradient and loss averaging undo."""
    count = mask.sum()
    masked = (values * mask).sum()
    if across_ranks and dist.is_available() and dist.is_initialized():
        count = count.float()
        dist.all_reduce(count)
        return masked * dist.get_world_size() / count.clamp(min=1)
    return masked / count.clamp(min=1)


def ema_decay(train: Config) -> float:
    """The EMA's full decay per step: ``optim.ema_decay``, or from the half-life in images
    ``optim.ema_kimg`` (then the same horizon in images for any batch size)."""
    if train.optim.ema_kimg is None:
        return train.optim.ema_decay
    return 0.5 ** (train.optim.batch / (1000.0 * train.optim.ema_kimg))


def ema_beta(step: int, decay: float, warmup: int, rampup: float = 0.0) -> float:
    """The EMA's weight on its old value after step ``step`` (0-based).

    0 (a copy of G) for the first ``warmup`` steps; then the half-life of ``decay`` (in steps),
    capped at ``rampup`` times the steps done, so the average covers at most that fraction of
    training until the cap passes the full half-life (StyleGAN's ``ema_rampup``; 0: no cap).
    """
    if step < warmup or decay <= 0.0:
        return 0.0
    if rampup <= 0.0:
        return decay
    half_life = math.log(0.5) / math.log(decay)  # steps
    return 0.5 ** (1.0 / min(half_life, rampup * (step + 1)))


@torch.no_grad()
def update_ema(model: CocoGAN, step: int, decay: float, warmup: int, rampup: float = 0.0
               ) -> None:
    """generator_ema <- beta * ema + (1 - beta) * G, beta from :func:`ema_beta`; buffers are
    copied (cheap, and every rank keeps identical state). Both buffer kinds are then the live
    G's, so before the EMA is sampled or saved :meth:`CocoGAN.recalibrate_ema` replaces them
    with its own: spectral norm's u, v from the SVD of its weights, BN statistics measured."""
    beta = ema_beta(step, decay, warmup, rampup)
    # Multi-tensor kernels: two launches per step instead of two per tensor.
    torch._foreach_lerp_(list(model.generator_ema.parameters()),
                         list(model.generator.parameters()), 1.0 - beta)
    torch._foreach_copy_(list(model.generator_ema.buffers()), list(model.generator.buffers()))


def _at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 autocast outputs in float32 for a loss; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
