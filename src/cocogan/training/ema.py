"""The EMA generator (beyond the paper; what applications sample from): decay and update."""

from __future__ import annotations

import math

import torch

from cocogan.config import Config
from cocogan.model import GAN


def ema_decay(train: Config) -> float:
    """The EMA's full decay per step: ``optim.ema_decay``, or from the half-life in images
    ``optim.ema_kimg`` (then the same horizon in images for any batch size)."""
    if train.optim.ema_kimg is None:
        return train.optim.ema_decay
    return 0.5 ** (train.optim.batch / (1000.0 * train.optim.ema_kimg))


def ema_beta(step: int, decay: float, warmup: int, rampup: float = 0.0) -> float:
    """The EMA's weight on its old value after step ``step`` (0-based): 0 (a copy of G) for
    ``warmup`` steps, then the half-life of ``decay`` capped at ``rampup`` times the steps done
    (StyleGAN's ``ema_rampup``; 0: no cap)."""
    if step < warmup or decay <= 0.0:
        return 0.0
    if rampup <= 0.0:
        return decay
    half_life = math.log(0.5) / math.log(decay)  # steps
    return 0.5 ** (1.0 / min(half_life, rampup * (step + 1)))


@torch.no_grad()
def update_ema(model: GAN, step: int, decay: float, warmup: int, rampup: float = 0.0
               ) -> None:
    """generator_ema <- beta * ema + (1 - beta) * G; buffers are copied (every rank keeps the
    same), and :meth:`CocoGAN.recalibrate_ema` replaces them before the EMA is used."""
    beta = ema_beta(step, decay, warmup, rampup)
    # Multi-tensor kernels: two launches per step instead of two per tensor.
    torch._foreach_lerp_(list(model.generator_ema.parameters()),
                         list(model.generator.parameters()), 1.0 - beta)
    torch._foreach_copy_(list(model.generator_ema.buffers()), list(model.generator.buffers()))
