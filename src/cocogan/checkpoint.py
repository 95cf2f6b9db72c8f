"""Model weights on disk: safetensors with the resolved config and package version as metadata.

Inference weights (G, D with heads, EMA G) live here; resume state (optimisers, step, RNG) lives
in a separate file written by the training layer. Files are written atomically (temp file +
rename), so an interruption never leaves a half-written checkpoint behind.
A run directory holds ``checkpoints/step-XXXXXXXX.safetensors``; :func:`load_model` accepts the
run directory (newest checkpoint) or one file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from cocogan.config import Config, ConfigError
from cocogan.model import CocoGAN

WEIGHTS_SUFFIX = ".safetensors"
CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or not a cocogan checkpoint."""


def atomic_write(path: Path, write: callable) -> None:
    """Call ``write(tmp_path)`` then rename onto ``path``: readers never see partial files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_model(path: Path, config: Config, model: CocoGAN, step: int) -> None:
    """Write every network's weights (G, D with heads, EMA G) and the config to ``path``."""
    from cocogan import __version__

    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "cocogan", "version": __version__, "step": str(step),
                "config": json.dumps(config.to_dict())}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def checkpoint_files(run_dir: Path) -> list[Path]:
    """Checkpoints of a run, oldest first."""
    return sorted((Path(run_dir) / CHECKPOINT_DIR).glob(f"step-*{WEIGHTS_SUFFIX}"))


def resolve_checkpoint(path: str | Path) -> Path:
    """A weights file from a run directory (its newest checkpoint) or a file path."""
    path = Path(path)
    if path.is_dir():
        files = checkpoint_files(path)
        if not files:
            raise CheckpointError(f"no checkpoints under {path / CHECKPOINT_DIR}: "
                                  "train first (cocogan train) or pass a .safetensors file")
        return files[-1]
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory or a "
                              ".safetensors file written by cocogan train")
    return path


def read_metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint "
                              f"({str(error).splitlines()[0]})") from None
    if metadata.get("format") != "cocogan":
        raise CheckpointError(f"{path} is not a cocogan checkpoint (no cocogan metadata)")
    return metadata


def load_model(path: str | Path, device: str | torch.device = "cpu"
               ) -> tuple[Config, CocoGAN, int]:
    """Rebuild the model of a checkpoint: (config, model in eval mode, step)."""
    file = resolve_checkpoint(path)
    metadata = read_metadata(file)
    try:
        config = Config.from_dict(json.loads(metadata["config"])).validate()
    except (KeyError, json.JSONDecodeError, ConfigError) as error:
        raise CheckpointError(f"{file} has an invalid config: {error}") from None
    model = CocoGAN(config.model)
    try:
        state = load_file(str(file))
        model.load_state_dict(state, strict=True)
    except (RuntimeError, SafetensorError) as error:
        raise CheckpointError(f"{file} does not match its config "
                              f"({str(error).splitlines()[0]})") from None
    return config, model.to(device).eval(), int(metadata.get("step", 0))
