"""Options that make a step faster without changing what it computes (docs/training.md, "Speed").

:func:`prepare_model` applies the ``train`` options that act on the model once, before the
optimisers are built: channels-last memory format, ``torch.compile`` of G and D's trunk, and
cuDNN's autotuner or deterministic kernels (``run.deterministic``). The per-step options (bf16
autocast, ``sn_once``) are arguments of :func:`cocogan.training.step.train_step`.
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

    Compilation wraps ``forward`` of G and of D's residual trunk (``Module.compile``, so
    parameter names and checkpoints are unchanged); the gradient penalty calls the eager trunk,
    because compiled graphs cannot be differentiated twice. Graphs are built at the first step.
    """
    use_determinism(train.run.deterministic)  # else the autotuner: fixed shapes, fastest kernels
    if train.run.channels_last:
        model.to(memory_format=torch.channels_last)
    if train.run.compile != "off":
        options = {"backend": _BACKEND} if _BACKEND else {"mode": train.run.compile}
        model.generator.compile(**options)
        model.discriminator.blocks.compile(**options)
    return model
