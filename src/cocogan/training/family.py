"""The network + loss pairs one Trainer drives, chosen by ``model.family``.

As StyleGAN2-ADA's training loop takes its networks and loss by name (``G_kwargs``,
``loss_kwargs``), the Trainer takes a :class:`Family`: how to build the optimisers, the step
(the updates of one iteration) and how to draw full images for sample grids. The model bundle
itself comes from :func:`cocogan.model.build_model`, so checkpoints name their family in
their config. Everything else (data stream, EMA and its recalibration, logging, hooks,
checkpoints, resume, multi-process training) is shared.

Shapes: N images, Z latent dims, H/W full image.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import torch
from torch import Tensor

from cocogan.config import ModelConfig, TrainConfig
from cocogan.model import BaselineGAN, CocoGAN
from cocogan.render import evaluating, render_rect, trained_rect
from cocogan.training.baseline_step import baseline_step, build_baseline_optimizers
from cocogan.training.step import build_optimizers, train_step

# (model, optimizers, images, train, rng, *, amp, sn_once) -> 0-dim losses on the device
Step = Callable[..., dict[str, Tensor]]


@dataclass(frozen=True)
class Family:
    """What the Trainer needs of a network + loss pair beyond the model bundle."""

    build_optimizers: Callable[[Any, TrainConfig], Any]  # dataclass of named optimisers
    step: Step
    sample: Callable[[Any, Tensor], Tensor]  # (model, z (N, Z)) -> EMA images (N, 3, H, W)


@torch.no_grad()
def cocogan_images(model: CocoGAN, z: Tensor) -> Tensor:
    """The EMA generator's full images, every micro patch assembled by T(m->M)."""
    generator = model.generator_ema
    with evaluating(generator):
        return render_rect(generator, model.coords, z.to(model.device),
                           trained_rect(model.coords))


@torch.no_grad()
def baseline_images(model: BaselineGAN, z: Tensor) -> Tensor:
    """The EMA generator's full images in eval mode (running BN statistics)."""
    generator = model.generator_ema
    with evaluating(generator):
        return generator(z.to(model.device))


FAMILIES: dict[str, Family] = {
    "cocogan": Family(build_optimizers, train_step, cocogan_images),
    "baseline": Family(build_baseline_optimizers, baseline_step, baseline_images),
}


def family_of(config: ModelConfig) -> Family:
    return FAMILIES[config.family]


def named_optimizers(optimizers: Any) -> dict[str, torch.optim.Optimizer]:
    """``{"g": ..., "d": ..., ["q": ...]}`` of a family's optimiser dataclass."""
    return {item.name: getattr(optimizers, item.name) for item in fields(optimizers)}

