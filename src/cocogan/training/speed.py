"""Options that make a step faster without changing what it computes (docs/training.md, "Speed"):
channels-last, ``torch.compile`` and cuDNN's autotuner or determinism, applied once before the
optimisers are built (per-step ones, bf16 and ``sn_once``, are train_step's arguments).
"""

from __future__ import annotations

import torch

from cocogan.config import Config
from cocogan.model import GAN
from cocogan.training.device import use_determinism

# A torch.compile backend that replaces run.compile's mode; tests set "aot_eager" (graph
# capture and AOTAutograd without code generation: seconds on a CPU instead of minutes).
_BACKEND: str | None = None


def prepare_model(model: GAN, train: Config) -> GAN:
    """Apply ``run.channels_last`` and ``run.compile`` to ``model`` in place; returns it.
    ``Module.compile`` of G and D's trunk keeps parameter names; the gradient penalty calls the
    eager trunk (compiled graphs cannot be differentiated twice)."""
    use_determinism(train.run.deterministic)  # else the autotuner: fixed shapes, fastest kernels
    if train.run.channels_last:
        model.to(memory_format=torch.channels_last)
    if train.run.compile != "off":
        options = {"backend": _BACKEND} if _BACKEND else {"mode": train.run.compile}
        model.generator.compile(**options)
        model.discriminator.blocks.compile(**options)
    return model
