"""One COCO-GAN training step (paper Section 2): a D update, a G update, then a Q update.

Objectives (weights from TrainConfig):
- D: -L_W + w_gp L_GP + w_spatial L_S(real) + w_content L_C(fake)
- G: -E[D(fake)] + w_spatial L_S(fake) + w_content L_C(fake) + w_overlap L_O (beyond the paper;
  ``w_spatial_g``, when set, replaces w_spatial here)
- Q (the content head, own optimiser): L_C(fake)
The returned dict holds 0-dim tensors on the training device (L_W is the Wasserstein estimate):
nothing in a step reads a value back to the host, so a GPU never waits for Python; the log
reads them when it writes a record.

Speed options that leave the maths unchanged (``tests/test_step_equivalence.py`` compares them
with the plain step): randomness drawn on the device of ``rng``, bf16 autocast, channels-last
tensors and compiled G and D trunks (set up by the trainer; the gradient penalty's double
backward always runs the eager trunk, which AOTAutograd cannot differentiate twice). One option
changes it slightly: ``sn_once``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from cocogan.config import TrainConfig
from cocogan.losses import (
    content_consistency,
    gradient_penalty,
    overlap_consistency,
    spatial_consistency,
    wasserstein_estimate,
)
from cocogan.model import CocoGAN, generate_macro, generate_macro_canvases
from cocogan.patches import crop


@dataclass
class Optimizers:
    """TTUR Adam optimisers: G, D (trunk, projection, spatial head) and Q (content head)."""

    g: torch.optim.Optimizer
    d: torch.optim.Optimizer
    q: torch.optim.Optimizer

    def state_dict(self) -> dict[str, dict]:
        return {"g": self.g.state_dict(), "d": self.d.state_dict(), "q": self.q.state_dict()}

    def load_state_dict(self, state: dict[str, dict]) -> None:
        self.g.load_state_dict(state["g"])
        self.d.load_state_dict(state["d"])
        self.q.load_state_dict(state["q"])


def build_optimizers(model: CocoGAN, train: TrainConfig) -> Optimizers:
    """Adam(beta1, beta2) with the TTUR learning rates (build after moving the model)."""
    betas = (train.beta1, train.beta2)
    disc = model.discriminator
    q_params = list(disc.content.parameters())
    q_ids = {id(p) for p in q_params}
    d_params = [p for p in disc.parameters() if id(p) not in q_ids]
    # CUDA: the fused kernel updates every tensor of an optimiser in one launch.
    fused = {"fused": True} if model.device.type == "cuda" else {}
    return Optimizers(
        g=torch.optim.Adam(model.generator.parameters(), lr=train.lr_g, betas=betas, **fused),
        d=torch.optim.Adam(d_params, lr=train.lr_d, betas=betas, **fused),
        q=torch.optim.Adam(q_params, lr=train.lr_q, betas=betas, **fused),
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


def sample_step(model: CocoGAN, images: Tensor, train: TrainConfig,
                rng: torch.Generator) -> StepBatch:
    """Draw z and macro positions, crop the real macro patches T(X->M) at the same positions.

    When extrapolating, fake positions may leave the image; real ones are the nearest inside it.
    """
    system, cfg = model.coords, model.config
    batch = images.shape[0]
    z = model.sample_z(batch, rng)
    rows, cols = system.sample_macro(batch, continuous=cfg.sampling == "continuous",
                                     extend=train.extrapolate, generator=rng)
    real_rows = rows.clamp(0, system.macro_rows - 1)
    real_cols = cols if system.cyclic else cols.clamp(0, system.macro_cols - 1)
    top, left = system.pixel_offset(real_rows, real_cols)
    # Valid by construction (clamped or wrapped), so the host-side range check is skipped.
    real = crop(images, top, left, cfg.macro, cfg.macro_w, wrap=system.cyclic, check=False)
    device = images.device
    return StepBatch(
        z=z, rows=rows, cols=cols, real=real,
        real_coords=system.macro_coords(real_rows, real_cols).to(device),
        fake_coords=system.macro_coords(rows, cols).to(device),
    )


def train_step(model: CocoGAN, optimizers: Optimizers, images: Tensor, train: TrainConfig,
               rng: torch.Generator, *, amp: bool = False, sn_once: bool = False
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
        sn_once: D's spectrally normalised weights are computed once for the D update (one
            power iteration, as in Miyato et al.'s Algorithm 1) and real and fake patches go
            through D's trunk in one call; off, every call of D runs its own power iteration
            (3 per D update), which is the paper presets' reference behaviour.

    Returns:
        0-dim tensors on the device: L_W, L_GP, L_S_real, L_S_fake, L_C, loss_D, loss_G, loss_Q.
    """
    G, D = model.generator, model.discriminator
    G.train()
    D.train()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if amp and images.is_cuda else contextlib.nullcontext())
    step = sample_step(model, images, train, rng)
    inside = model.coords.in_bounds(step.rows, step.cols).to(images.device)  # (B,)

    # ---- D step ---------------------------------------------------------------------------
    with parametrize.cached() if sn_once else contextlib.nullcontext():
        with autocast:
            with torch.no_grad():
                fake = generate_macro(G, model.coords, step.z, step.rows, step.cols)
            if sn_once:  # same weights for both halves: one trunk call
                h_real, h_fake = D.features(torch.cat([step.real, fake.to(step.real.dtype)])
                                            ).chunk(2)
            else:
                h_real = D.features(step.real)
                h_fake = D.features(fake)
            real_score = D.adversarial(h_real, step.real_coords)
            fake_score = D.adversarial(h_fake, step.fake_coords)
            l_w = wasserstein_estimate(real_score, fake_score)
            l_s_real = spatial_consistency(D.spatial(h_real), step.real_coords)
            l_c_d = content_consistency(D.content(h_fake), step.z)
        l_gp = gradient_penalty(  # in the images' precision (fp32), also under autocast
            lambda x: D.adversarial(D.features(x, eager=True), step.real_coords),
            step.real, fake.to(step.real.dtype), generator=rng)
        loss_d = -l_w + train.w_gp * l_gp + train.w_spatial * l_s_real + train.w_content * l_c_d
        optimizers.d.zero_grad(set_to_none=True)
        loss_d.backward()
    optimizers.d.step()

    # ---- Q step: the content head alone, on the D step's fake features -----------------
    l_c_q = content_consistency(D.content(h_fake.detach().to(step.real.dtype)), step.z)
    optimizers.q.zero_grad(set_to_none=True)
    l_c_q.backward()
    optimizers.q.step()

    # ---- G step ---------------------------------------------------------------------------
    with autocast:
        fake, canvases = generate_macro_canvases(G, model.coords, step.z, step.rows, step.cols)
        h_fake = D.features(fake)
        loss_adv = -D.adversarial(h_fake, step.fake_coords).mean()
        spatial_error = ((D.spatial(h_fake) - step.fake_coords) ** 2).mean(dim=1)  # (B,)
        # Out-of-range fakes have no real ground truth: L_S does not reach G through them.
        l_s_fake = (spatial_error * inside).sum() / inside.sum().clamp(min=1)
        l_c_g = content_consistency(D.content(h_fake), step.z)
    w_spatial_g = train.w_spatial if train.w_spatial_g is None else train.w_spatial_g
    loss_g = loss_adv + w_spatial_g * l_s_fake + train.w_content * l_c_g
    if train.w_overlap:
        l_overlap = overlap_consistency(_at_least_float32(canvases), model.coords.macro_h,
                                        model.coords.macro_w, G.margin)
        loss_g = loss_g + train.w_overlap * l_overlap
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    # G's backward also filled D's grads; they are cleared by the next D step's zero_grad.

    values = {"L_W": l_w, "L_GP": l_gp, "L_S_real": l_s_real, "L_S_fake": l_s_fake,
              "L_C": l_c_q, "loss_D": loss_d, "loss_G": loss_g, "loss_Q": l_c_q}
    if train.w_overlap:
        values["L_O"] = l_overlap
    return {name: _at_least_float32(value.detach()) for name, value in values.items()}


@torch.no_grad()
def update_ema(model: CocoGAN, step: int, decay: float, warmup: int) -> None:
    """generator_ema <- decay * ema + (1 - decay) * G; buffers (BN statistics) are copied.

    During the first ``warmup`` steps the decay ramps up from 0 so early samples are not
    dominated by the random initialisation.
    """
    beta = 0.0 if step < warmup else decay
    # Multi-tensor kernels: two launches per step instead of two per tensor.
    torch._foreach_lerp_(list(model.generator_ema.parameters()),
                         list(model.generator.parameters()), 1.0 - beta)
    torch._foreach_copy_(list(model.generator_ema.buffers()), list(model.generator.buffers()))


def _at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 autocast outputs in float32 for a loss; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x
