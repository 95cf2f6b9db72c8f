"""Resume state: everything beside the weights that an exact resume needs (step, optimisers,
data position, sample latents, the step and global RNGs), as ``weights_only``-loadable values.
"""

from __future__ import annotations

import hashlib
import random
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from cocogan.checkpoint import CheckpointError
from cocogan.model import sample_latents
from cocogan.training.step import NamedOptimizers


def derive_seed(seed: int, purpose: str) -> int:
    """An independent 63-bit seed per purpose ("init", "steps", "samples"): e.g. changing the
    number of sample images never changes the training stream."""
    entropy = [seed & 0xFFFFFFFF, (seed >> 32) & 0xFFFFFFFF, zlib.crc32(purpose.encode())]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_globals(seed: int) -> None:
    """Seed torch, NumPy and Python's global RNGs: training draws only from the step RNG, but
    libraries may use these; seeding (and saving) them keeps a resume identical."""
    torch.manual_seed(derive_seed(seed, "init"))
    np.random.seed(derive_seed(seed, "numpy") % 2**32)
    random.seed(derive_seed(seed, "python"))


@dataclass
class TrainState:
    """The mutable bookkeeping of a run (weights and optimisers live elsewhere)."""

    step: int  # optimisation steps completed
    step_rng: torch.Generator  # RNG handed to train_step and the panorama roll
    sample_z: Tensor  # (N, Z) latents of every sample grid, fixed for the whole run
    elapsed: float = 0.0  # training wall seconds so far, summed over resumes

    @classmethod
    def fresh(cls, seed: int, n_samples: int, z_dim: int, device: torch.device | str = "cpu",
              rank: int = 0) -> TrainState:
        """Step 0, the step RNG on ``device``; ``rank`` > 0 gets its own stream."""
        sample_rng = torch.Generator().manual_seed(derive_seed(seed, "samples"))
        return cls(step=0, sample_z=sample_latents(n_samples, z_dim, sample_rng),
                   step_rng=rank_step_generator(seed, rank, device=device))


def step_generator(device: torch.device | str) -> torch.Generator:
    """The step RNG on the training device (a CUDA step then copies no randomness from the
    host; its Philox stream differs from the CPU one, and is saved and restored exactly)."""
    device = torch.device(device)
    return torch.Generator(device) if device.type == "cuda" else torch.Generator()


def rank_step_generator(seed: int, rank: int = 0, step: int = 0,
                        device: torch.device | str = "cpu") -> torch.Generator:
    """Rank 0 draws what a single process draws; other ranks independent, reproducible
    streams (``step`` > 0: re-derived at a resume by more ranks than saved)."""
    purpose = "steps" if rank == 0 and step == 0 else f"steps/rank{rank}/from{step}"
    return step_generator(device).manual_seed(derive_seed(seed, purpose))


def restore_step_generator(saved: Tensor, device: torch.device | str) -> torch.Generator:
    """The saved step RNG on ``device``; resumed on another device kind (CPU <-> CUDA, other
    state layouts) a stream seeded from a hash of the saved state, still deterministic."""
    generator = step_generator(device)
    try:
        generator.set_state(saved)
    except RuntimeError:
        digest = hashlib.sha256(saved.numpy().tobytes()).digest()
        generator.manual_seed(int.from_bytes(digest[:8], "little") >> 1)
    return generator


def capture_global_rng() -> dict[str, Any]:
    """Global RNG states as weights_only-loadable values."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos,
                  "has_gauss": has_gauss, "cached_gaussian": cached},
        "python": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_global_rng(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np_state = state["numpy"]
    np.random.set_state((np_state["name"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached_gaussian"]))
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        for index, cuda_state in enumerate(state["cuda"][:torch.cuda.device_count()]):
            torch.cuda.set_rng_state(cuda_state, index)


def state_payload(state: TrainState, optimizers: NamedOptimizers, data_position: dict[str, int],
                  rank_rngs: list[Tensor] | None = None) -> dict[str, Any]:
    """The dict of ``step-XXXXXXXX.state.pt``; ``rank_rngs``: every rank's step RNG."""
    rngs = {"step_ranks": list(rank_rngs)} if rank_rngs and len(rank_rngs) > 1 else {}
    return {
        "step": state.step,
        "elapsed": state.elapsed,
        "optimizers": optimizers.state_dict(),
        "data": dict(data_position),
        "sample_z": state.sample_z.cpu(),
        "rng": {"step": state.step_rng.get_state(), **rngs, **capture_global_rng()},
    }


def _keep_first_rows(optimizers: NamedOptimizers) -> None:
    """Adam moments with more rows than their parameter (old cylindrical spatial heads,
    nn.discriminator) keep their first rows, as the weights do."""
    for optimizer in optimizers.named().values():
        for param, state in optimizer.state.items():
            for name, value in state.items():
                if isinstance(value, Tensor) and value.ndim and value.shape != param.shape \
                        and value.shape[1:] == param.shape[1:]:
                    state[name] = value[: param.shape[0]].clone()


def restore_payload(payload: dict[str, Any], optimizers: NamedOptimizers, expected_step: int,
                    device: torch.device | str = "cpu", rank: int = 0, seed: int = 0
                    ) -> TrainState:
    """Load optimisers and RNGs from a state file's dict; returns the TrainState with
    ``rank``'s step RNG on ``device`` (a rank the checkpoint lacks: derived from ``seed``)."""
    try:
        if int(payload["step"]) != expected_step:
            raise CheckpointError(f"state file is for step {payload['step']}, weights for "
                                  f"step {expected_step}")
        optimizers.load_state_dict(payload["optimizers"])
        _keep_first_rows(optimizers)
        saved = payload["rng"].get("step_ranks") or [payload["rng"]["step"]]
        step_rng = (restore_step_generator(saved[rank], device) if rank < len(saved)
                    else rank_step_generator(seed, rank, expected_step, device))
        restore_global_rng(payload["rng"])
        return TrainState(step=expected_step, step_rng=step_rng,
                          sample_z=payload["sample_z"], elapsed=float(payload["elapsed"]))
    except (KeyError, TypeError, ValueError, RuntimeError) as error:
        if isinstance(error, CheckpointError):
            raise
        raise CheckpointError(f"state file does not match this run ({error!r})") from None
