"""The training loop: a short driver over named steps (paper Section 2's alternating updates).

Per iteration: next_batch -> optimise (``model.family``'s step) -> update_ema -> log -> hooks
every K steps -> save_checkpoint at ``run.checkpoint_every``, the last step and after a stop
signal. Losses stay on the device and are checked for NaN before anything is written, so a GPU
runs steps back to back. Ranks run in lockstep; rank 0 alone writes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import torch
from PIL import Image
from torch import Tensor

from cocogan.checkpoint import (
    checkpoint_paths,
    prune_checkpoints,
    resumable_steps,
    save_model,
    save_state,
)
from cocogan.config import Config
from cocogan.model import GAN
from cocogan.outputs import atomic_write
from cocogan.patches import tile_images
from cocogan.training.datastream import BatchStream, roll_panoramas
from cocogan.training.distributed import (
    SINGLE,
    World,
    any_rank,
    average_norm_statistics,
    barrier,
    gather_rng_states,
    mean_losses,
)
from cocogan.training.family import Family, family_of
from cocogan.training.logging import MetricsLog, Progress, format_record, is_maximum
from cocogan.training.signals import StopFlag
from cocogan.training.state import TrainState, state_payload
from cocogan.training.step import NamedOptimizers
from cocogan.training.sync_norm import paused

SAMPLES_DIR = "samples"
STOPPED_BY_PEER = "a stop signal on another rank"


class TrainingDiverged(RuntimeError):
    """A loss term became NaN or infinite; nothing of the broken state was saved."""


class Hook(Protocol):
    """Work done every ``every`` steps, after the step's update and logging (e.g. evaluation)."""

    every: int

    def __call__(self, trainer: Trainer) -> None: ...


# ---- the EMA generator (beyond the paper; what applications sample from) ------------------
def ema_decay(train: Config) -> float:
    """The EMA's full decay per step: ``optim.ema_decay``, or from the half-life in images
    ``optim.ema_kimg`` (then the same horizon in images for any batch size)."""
    kimg = train.optim.ema_kimg
    return train.optim.ema_decay if kimg is None else 0.5 ** (train.optim.batch / (1000.0 * kimg))


def ema_beta(step: int, decay: float, warmup: int, rampup: float = 0.0) -> float:
    """The EMA's weight on its old value after step ``step`` (0-based): 0 (a copy of G) for
    ``warmup`` steps, then ``decay``'s half-life capped at ``rampup`` times the steps (0: none)."""
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


@dataclass
class SampleGrid:
    """``samples/step-XXXXXXXX.png`` (and a TensorBoard image): the EMA G's fixed latents."""

    every: int

    def __call__(self, trainer: Trainer) -> None:
        images = trainer.sample_images().float().cpu().clamp(-1, 1)  # (N, 3, H, W)
        count, _, height, width = images.shape
        columns = max(1, math.ceil(math.sqrt(count * height / width)))  # panoramas: fewer
        grid = (tile_images(images, columns) + 1) / 2  # (3, H', W') in [0, 1], on white
        array = (grid * 255).round().byte().permute(1, 2, 0).numpy()  # (H', W', 3)
        path = trainer.run_dir / SAMPLES_DIR / f"step-{trainer.state.step:08d}.png"
        atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
        trainer.log.image("samples", grid, trainer.state.step)


@dataclass
class Trainer:
    """Everything a running training needs; built by :mod:`cocogan.training.run`."""

    run_dir: Path  # checkpoints, logs and samples go here
    config: Config  # resolved; optim.steps is the total to reach
    model: GAN  # G, D and EMA G of ``config.model.family``, on the training device
    optimizers: NamedOptimizers
    state: TrainState  # step, RNGs, fixed sample latents
    stream: BatchStream
    log: MetricsLog
    hooks: list[Hook] = field(default_factory=list)  # every-K-steps work, e.g. SampleGrid
    amp: bool = False  # bf16 autocast (CUDA only)
    notify: Callable[[str], None] = print  # a line that does not garble the bar (set by fit)
    world: World = SINGLE
    warm_start: bool = False  # weights from --init-from: its EMA is kept (no warm-up)
    _session_start: float = field(default=0.0, init=False)
    _elapsed_at_start: float = field(default=0.0, init=False)
    _ema_refreshed: int = field(default=-1, init=False)  # step of the last refresh_ema

    @property
    def device(self) -> torch.device:
        return self.model.device

    @property
    def family(self) -> Family:
        return family_of(self.config.model)

    # ---- the named steps --------------------------------------------------------------------
    def next_batch(self) -> Tensor:
        waiting = time.perf_counter()
        images = next(self.stream)  # (B, 3, H, W)
        self.log.data_wait += time.perf_counter() - waiting
        if self.config.model.coords == "cylindrical":
            images = roll_panoramas(images, self.state.step_rng)
        if self.config.run.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        return images

    def optimise(self, images: Tensor) -> dict[str, Tensor]:
        losses = self.family.step(self.model, self.optimizers, images, self.config,
                                  self.state.step_rng, amp=self.amp,
                                  sn_once=self.config.run.sn_once, iteration=self.state.step)
        if self.world.enabled:  # gradients were averaged inside the optimisers' step
            average_norm_statistics(self.world, self.model.generator)
            average_norm_statistics(self.world, self.model.discriminator)
            losses = mean_losses(self.world, losses, self.device, maximum=is_maximum)
        return losses

    def check_finite(self) -> None:
        """Raise TrainingDiverged if a loss so far was NaN or infinite (reads the device)."""
        bad = self.log.first_non_finite()  # (term, step)
        if bad is not None:
            raise TrainingDiverged(
                f"loss {bad[0]} became non-finite at step {bad[1]}; stopped without saving this "
                f"state (the last good checkpoint is kept): lower the learning rates "
                f"(--set optim.lr_d=...) or raise loss.w_gp")

    def update_ema(self) -> None:
        """Average G's weights into the EMA generator (its BN statistics: refresh_ema)."""
        optim = self.config.optim
        warmup, rampup = (0, 0.0) if self.warm_start else (optim.ema_warmup, optim.ema_rampup)
        update_ema(self.model, self.state.step, ema_decay(self.config), warmup, rampup)

    def log_step(self, losses: dict[str, Tensor]) -> dict | None:
        """Accumulate this step; every ``log_every`` steps write a record and return it."""
        self.log.accumulate(losses, self.state.step)
        if self.state.step % self.config.run.log_every:
            return None
        self.check_finite()
        lrs = {f"lr_{name}": optimizer.param_groups[0]["lr"]
               for name, optimizer in self.optimizers.named().items()}
        return self.log.write(self.state.step, self.config.optim.batch, lrs, self.elapsed())

    def run_hooks(self, final: bool = False) -> None:
        """Rank 0 only: the other ranks wait for it at the next collective."""
        if not self.world.is_main:
            return
        for hook in self.hooks:
            if final or self.state.step % hook.every == 0:
                self.check_finite()
                with paused(self.model):
                    hook(self)

    def refresh_ema(self) -> None:
        """The EMA generator's own BN statistics before it is saved or sampled (once a step)."""
        if self._ema_refreshed != self.state.step:
            self.model.recalibrate_ema(self.config.optim.batch, seed=self.state.step,
                                       extend=self.config.loss.extrapolate)
            self._ema_refreshed = self.state.step

    def save_checkpoint(self) -> Path:
        """Weights then state, atomic, by rank 0 (with every rank's step RNG); old ones pruned."""
        self.check_finite()
        self.refresh_ema()  # every rank: the same weights and seed give the same statistics
        self.state.elapsed = self.elapsed()
        weights, state_file = checkpoint_paths(self.run_dir, self.state.step)
        rngs = gather_rng_states(self.world, self.state.step_rng, self.device)
        if self.world.is_main:
            try:
                save_model(weights, self.config, self.model, self.state.step)
                save_state(state_file, state_payload(self.state, self.optimizers,
                                                     self.stream.position, rngs))
            except OSError as error:  # e.g. a full disk: leave no weights without their state
                if not state_file.exists():
                    weights.unlink(missing_ok=True)
                steps = resumable_steps(self.run_dir)  # say what is intact and how to go on
                intact = (f"the step-{steps[-1]} checkpoint is intact: fix this, then cocogan "
                          f"train --resume {self.run_dir}" if steps else
                          "no earlier checkpoint exists")
                raise OSError(error.errno, f"{error.strerror or error} (checkpoint of step "
                              f"{self.state.step} not written; {intact})",
                              error.filename) from error
            prune_checkpoints(self.run_dir, self.config.run.keep_checkpoints)
        barrier(self.world, self.device, "the checkpoint barrier")
        return weights

    # ---- helpers ----------------------------------------------------------------------------
    def elapsed(self) -> float:
        """Training seconds of this run so far, including earlier sessions."""
        return self._elapsed_at_start + time.perf_counter() - self._session_start

    def sample_images(self, z: Tensor | None = None) -> Tensor:
        """Full images (N, 3, H, W) from the EMA generator for z (default: the fixed latents)."""
        z = self.state.sample_z if z is None else z
        self.refresh_ema()
        return self.family.sample(self.model, z.to(self.device))

    # ---- the driver -------------------------------------------------------------------------
    def fit(self, stop: StopFlag | None = None, progress: Progress | None = None) -> str | None:
        """Train until ``optim.steps``; returns None when done, else the stop signal's name.
        Raises TrainingDiverged on a non-finite loss (that state is not saved)."""
        total = self.config.optim.steps
        stop = stop or StopFlag()
        quiet = None if self.world.is_main else open(os.devnull, "w")  # noqa: SIM115
        progress = progress or Progress(self.state.step, total, stream=quiet)
        self.notify = progress.note
        self._session_start, self._elapsed_at_start = time.perf_counter(), self.state.elapsed
        sampler = next((h for h in self.hooks if isinstance(h, SampleGrid)), None)
        try:
            if self.state.step == 0 and sampler is not None and self.world.is_main:
                sampler(self)  # what the untrained generator draws, for comparison
            stopping = self.stop_agreed(stop)
            while self.state.step < total and not stopping:
                losses = self.optimise(self.next_batch())
                self.update_ema()
                self.state.step += 1
                progress.update(self.log_step(losses))
                if not progress.interactive and self.log.last and \
                        self.state.step % self.config.run.sample_every == 0:
                    progress.note(format_record(self.log.last, total))  # a line now and then
                self.run_hooks(final=self.state.step == total)
                stopping = self.stop_agreed(stop)
                if self.state.step % self.config.run.checkpoint_every == 0 or \
                        self.state.step == total or stopping:
                    self.save_checkpoint()
            missing = self.world.is_main and not all(
                p.is_file() for p in checkpoint_paths(self.run_dir, self.state.step))
            if stopping and any_rank(self.world, missing, self.device, "the final check"):
                self.save_checkpoint()  # stopped before the first step: still resumable
        finally:
            progress.close()
            self.close()
            if quiet is not None:
                quiet.close()
        return None if self.state.step >= total else stop.signal_name or STOPPED_BY_PEER

    def stop_agreed(self, stop: StopFlag) -> bool:
        """Whether a stop was requested on any rank (all ranks get the same answer)."""
        return any_rank(self.world, stop.requested, self.device, "the stop-signal check")

    def close(self) -> None:
        """Stop the data workers and close the log files (fit does this when it returns)."""
        self.stream.close()
        self.log.close()
