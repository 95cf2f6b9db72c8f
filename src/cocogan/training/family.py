"""The network + loss pairs one Trainer drives, chosen by ``model.family``: a :class:`Family`
gives optimisers, step and sample images; all else (data, EMA, logging, hooks, checkpoints,
resume, ranks) is shared. The full-image baseline trains as COCO-GAN does minus generating by
parts (the paper's Table 1 question): the same WGAN-GP objective and penalty (eq. 2), TTUR
Adam, one G forward then a D and a G update, ``run.sn_once`` alike; no coordinates, L_S, L_C, Q.

Shapes: B (or N) images, Z latent dims, H/W full image.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn.utils import parametrize

from cocogan.apps.full import full_images
from cocogan.config import Config, ModelConfig
from cocogan.losses import gradient_penalty, wasserstein_estimate
from cocogan.model import BaselineGAN
from cocogan.render import evaluating
from cocogan.training.step import (
    NamedOptimizers,
    adam,
    build_optimizers,
    compute_parametrizations,
    frozen,
    train_step,
)

# (model, optimizers, images, train, rng, *, amp, sn_once) -> 0-dim losses on the device
Step = Callable[..., dict[str, Tensor]]


@dataclass
class BaselineOptimizers(NamedOptimizers):
    """TTUR Adam optimisers of the baseline's G and D (no content head, so no Q)."""

    g: torch.optim.Optimizer
    d: torch.optim.Optimizer


def build_baseline_optimizers(model: BaselineGAN, train: Config) -> BaselineOptimizers:
    """COCO-GAN's TTUR Adam settings (build after moving the model)."""
    return BaselineOptimizers(
        g=adam(model.generator.parameters(), train.optim.lr_g, train, model.device),
        d=adam(model.discriminator.parameters(), train.optim.lr_d, train, model.device))


def baseline_step(model: BaselineGAN, optimizers: BaselineOptimizers, images: Tensor,
                  train: Config, rng: torch.Generator, *, amp: bool = False,
                  sn_once: bool = True, iteration: int = 0) -> dict[str, Tensor]:
    """One WGAN-GP iteration on real full images (B, 3, H, W), arguments as ``train_step``'s:
    G forward once, a D update, a G update with D frozen. Returns 0-dim L_W, L_GP, loss_D/G."""
    del iteration
    G, D = model.generator.train(), model.discriminator.train()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16)
                if amp and images.is_cuda else contextlib.nullcontext())
    with autocast:
        fake = G(model.sample_z(images.shape[0], rng))  # (B, 3, H, W), the step's one forward

    # ---- D step ---------------------------------------------------------------------------
    detached = fake.detach().to(images.dtype)
    with parametrize.cached() if sn_once else contextlib.nullcontext():
        if sn_once:
            compute_parametrizations(D)
        with autocast:
            real_score, fake_score = (D(torch.cat([images, detached])).chunk(2) if sn_once
                                      else (D(images), D(detached)))
            l_w = wasserstein_estimate(real_score, fake_score).float()
        l_gp = gradient_penalty(D, images, detached, generator=rng)  # float32
        loss_d = -l_w + train.loss.w_gp * l_gp
        optimizers.d.zero_grad(set_to_none=True)
        loss_d.backward()
    optimizers.d.step()

    # ---- G step: D is frozen, so its weight gradients are not built -----------------------
    with frozen(D), autocast:
        loss_g = -D(fake).float().mean()
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    values = {"L_W": l_w, "L_GP": l_gp, "loss_D": loss_d, "loss_G": loss_g}
    return {name: value.detach() for name, value in values.items()}


@dataclass(frozen=True)
class Family:
    """What the Trainer needs of a network + loss pair beyond the model bundle."""

    build_optimizers: Callable[[Any, Config], NamedOptimizers]
    step: Step
    sample: Callable[[Any, Tensor], Tensor]  # (model, z (N, Z) on its device) -> EMA images


@torch.no_grad()
def baseline_images(model: BaselineGAN, z: Tensor) -> Tensor:
    """The EMA generator's full images in eval mode (running BN statistics)."""
    generator = model.generator_ema
    with evaluating(generator):
        return generator(z.to(model.device))


FAMILIES: dict[str, Family] = {
    "cocogan": Family(build_optimizers, train_step, full_images),
    "baseline": Family(build_baseline_optimizers, baseline_step, baseline_images),
}


def family_of(config: ModelConfig) -> Family:
    return FAMILIES[config.family]
