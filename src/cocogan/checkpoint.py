"""Checkpoints, and the one way from a ``--run`` value to a model.

Weights (G, D with heads, EMA G) are ``step-XXXXXXXX.safetensors`` with the config and version
as metadata; resume state (optimisers, step, data position, RNGs) is ``step-XXXXXXXX.state.pt``
beside it, tensors and numbers only (``torch.load(weights_only=True)``: unpickling would run
the file author's code). A step is resumable when both files exist. :func:`load_model` takes a
run directory, a weights file, an inference-only export (EMA G, and D unless exported without
it) or a shipped name, and checks the file's header, memory and weights before building anything.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import sys
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes
from torch import nn

from cocogan import shipped
from cocogan.budget import BudgetError, check_budget, inference_budget
from cocogan.config import Config, ConfigError
from cocogan.model import GAN, CocoGAN, build_model
from cocogan.nn.discriminator import legacy_shape
from cocogan.nn.layers import shapes_only
from cocogan.outputs import atomic_write_bytes
from cocogan.version import __version__

WEIGHTS_SUFFIX = ".safetensors"
STATE_SUFFIX = ".state.pt"
STATE_FORMAT = "cocogan-train-state"
CHECKPOINT_DIR = "checkpoints"
_STEP_NAME = re.compile(r"^step-(\d{8,})$")
INFERENCE_CONTENTS = "generator_ema"  # metadata "contents" of an inference-only weights file
WITH_D_CONTENTS = "generator_ema+discriminator"  # ... that also holds D and its heads (inspire)
EMA_PREFIX = "generator_ema."  # tensor names of the EMA generator in every weights file
D_PREFIX = "discriminator."
MAX_STEP = 2**63 - 1  # a step count fits a signed 64-bit integer (TensorBoard, torch)
_ANNOUNCED: set[str] = set()  # --run values shadowing a shipped name, said once per process


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt or not a cocogan checkpoint."""


def save_model(path: Path, config: Config, model: GAN, step: int) -> None:
    """Write every network's weights (G, D with heads, EMA G) and the config to ``path``."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": "cocogan", "version": __version__, "step": str(step),
                "config": json.dumps(config.to_dict())}
    # Serialised in memory first, so a full disk is a plain OSError naming the file.
    atomic_write_bytes(Path(path), safetensors_bytes(tensors, metadata=metadata))


def resolve_checkpoint(value: str | Path) -> Path:
    """The weights file of a ``--run`` value: a run directory (its newest checkpoint), a file
    or a shipped name (checked against its card); an existing path wins, with a note."""
    path = Path(value)
    model = shipped.find(str(value)) if shipped.is_name(value) else None
    if model is not None and not path.exists():
        try:
            return model.verified()
        except shipped.ShippedError as error:
            raise CheckpointError(str(error)) from None
    if model is not None and str(value) not in _ANNOUNCED:
        _ANNOUNCED.add(str(value))
        print(f"cocogan: using the local {'folder' if path.is_dir() else 'file'} "
              f"{path.absolute()}, not the shipped model {value} (run elsewhere to use that)",
              file=sys.stderr)
    if path.is_dir():
        files = sorted((path / CHECKPOINT_DIR).glob(f"step-*{WEIGHTS_SUFFIX}"))
        if not files:
            raise CheckpointError(f"no checkpoints under {path / CHECKPOINT_DIR}: "
                                  "train first (cocogan train) or pass a .safetensors file")
        return files[-1]
    if not path.is_file():
        names = ", ".join(m.name for m in shipped.models()) or "none"
        raise CheckpointError(f"checkpoint {path} does not exist: pass a run directory, a "
                              f".safetensors file written by cocogan train or a shipped model "
                              f"name (shipped: {names}; cocogan models)")
    return path


def _header(path: Path) -> tuple[dict[str, str], dict[str, tuple[int, ...]]]:
    """(metadata, name -> shape of every tensor) of a safetensors file, from its header."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}, {
                key: tuple(handle.get_slice(key).get_shape()) for key in handle.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as error:
        raise _unreadable(path, error) from None


def _unreadable(path: Path, error: Exception) -> CheckpointError:
    return CheckpointError(f"{path} is not a readable safetensors checkpoint "
                           f"({str(error).splitlines()[0]})")


def read_metadata(path: Path) -> dict[str, str]:
    metadata = _header(path)[0]
    if metadata.get("format") != "cocogan":
        raise CheckpointError(f"{path} is not a cocogan checkpoint (no cocogan metadata)")
    return metadata


def stored_config(file: Path, metadata: dict[str, str]) -> Config:
    """The validated config a weights file carries (old one-section configs included)."""
    try:
        return Config.from_json(metadata["config"]).validate()
    except (KeyError, ConfigError) as error:
        raise CheckpointError(f"{file} has an invalid config: {error}") from None


def stored_step(file: Path, metadata: dict[str, str]) -> int:
    """The step a weights file says it was written at (0 when it says none)."""
    text = metadata.get("step", "0")
    if not text.isdigit() or int(text) > MAX_STEP:
        raise CheckpointError(f"{file}: its metadata step {text[:30]!r} is not a step count "
                              f"(0 to 2^63-1): the file is damaged or was edited")
    return int(text)


def load_model(path: str | Path, device: str | torch.device = "cpu", *,
               family: str | None = "cocogan") -> tuple[Config, GAN, int]:
    """Rebuild the model of a ``--run`` value: (config, model in eval mode, step); ``family``
    is the ``model.family`` the caller needs (None: the checkpoint's own). CheckpointError:
    nothing to load, a damaged file, or non-finite generator weights."""
    file = resolve_checkpoint(path)
    metadata = read_metadata(file)
    config, step = stored_config(file, metadata), stored_step(file, metadata)
    if family is not None and config.model.family != family:
        raise CheckpointError(f"{file} holds a model.family={config.model.family} model; this "
                              f"command needs a {family} run (benchmarks/quality_baseline.py "
                              "evaluates the baseline)")
    prefixes = {INFERENCE_CONTENTS: (EMA_PREFIX,), WITH_D_CONTENTS: (EMA_PREFIX, D_PREFIX)
                }.get(metadata.get("contents", ""))  # None: a training checkpoint
    check_stored_config(file, config, prefix=prefixes or ("",))
    model = build_model(config.model)
    state = _read_tensors(file)
    bad = next((name for name, tensor in state.items() if name.startswith("generator")
                and tensor.is_floating_point() and not torch.isfinite(tensor).all()), None)
    if bad is not None:
        raise CheckpointError(f"{file}: the generator's weights hold NaN or infinite values "
                              f"({bad}): the run diverged or the file is damaged; load an "
                              "earlier checkpoint")
    if prefixes:
        model = _inference_model(file, model, state)
    else:
        _load_into(file, model, state)
    return config, model.to(device).eval(), step


def _read_tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(file))
    except (RuntimeError, SafetensorError) as error:
        raise _unreadable(file, error) from None


def _load_into(file: Path, module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise CheckpointError(f"{file} does not match its config "
                              f"({str(error).splitlines()[0]})") from None


class MissingNetworkError(CheckpointError, AttributeError):
    """A network an inference-only file lacks was used (an AttributeError for ``hasattr``)."""


class MissingNetwork(nn.Module):
    """Stands in for a network an inference-only file lacks: calling it or reading its layers
    is a MissingNetworkError; one empty parameter (not saved) answers device questions."""

    def __init__(self, what: str, file: Path) -> None:
        super().__init__()
        self.what, self.file = what, str(file)
        self.placeholder = nn.Parameter(torch.empty(0), requires_grad=False)

    def error(self) -> MissingNetworkError:
        return MissingNetworkError(
            f"{self.file} is an inference-only file (cocogan export --format safetensors) "
            f"without {self.what}: pass the training run or its checkpoint instead")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name.startswith("_"):
                raise
            raise self.error() from None

    def _save_to_state_dict(self, destination: Any, prefix: str, keep_vars: bool) -> None:
        pass  # the placeholder is not a weight


def _inference_model(file: Path, model: CocoGAN, state: dict[str, torch.Tensor]) -> CocoGAN:
    """``model`` with the EMA generator (and D, where the file has it) of an inference-only
    file; the networks it lacks are MissingNetworks."""
    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

    _load_into(file, model.generator_ema, part(EMA_PREFIX))
    model.generator = MissingNetwork("the raw generator (--raw)", file)
    if any(name.startswith(D_PREFIX) for name in state):
        _load_into(file, model.discriminator, part(D_PREFIX))
    else:
        model.discriminator = MissingNetwork("the discriminator (inspire, the spatial metric)",
                                             file)
    return model


_SN_WEIGHT = ".parametrizations.weight.original"  # spectral norm's name of a layer's weight


def check_stored_config(path: Path, config: Config, prefix: tuple[str, ...] = ("",)) -> None:
    """Check that a checkpoint's config describes its tensors (those under ``prefix``: an
    inference file holds the EMA G, and D where exported with it) and fits in memory, from the
    header and shape-only networks (an 8 MB file claiming ngf 512 once allocated 5.3 GB)."""
    stored = _header(path)[1]
    with shapes_only():
        expected = {name: tensor for name, tensor in build_model(config.model).state_dict().items()
                    if name.startswith(prefix)}
    m = config.model
    claim = f"its config (ngf {m.ngf}, ndf {m.ndf}, z_dim {m.z_dim}, micro {m.micro})"
    for name, tensor in expected.items():
        key = name if name in stored or not name.endswith(".weight") \
            else name.removesuffix(".weight") + _SN_WEIGHT
        if key not in stored:
            raise CheckpointError(f"{path} lacks the tensor {key} that {claim} implies: the "
                                  "file is damaged or its config was edited")
        if stored[key] != tuple(tensor.shape) and not legacy_shape(key, stored[key],
                                                                   tuple(tensor.shape)):
            raise CheckpointError(f"{path}: tensor {key} is {list(stored[key])} but {claim} "
                                  f"implies {list(tensor.shape)}: the file is damaged or its "
                                  "config was edited")
    try:
        check_budget(inference_budget(m), None, fix="load it on a machine with more memory")
    except BudgetError as error:
        raise CheckpointError(f"{path}: {error}") from None


# ---- resume state ---------------------------------------------------------------------------
def save_state(path: Path, state: dict[str, Any]) -> None:
    """Write resume state (tensors, numbers, strings and containers of them) atomically."""
    payload = {"format": STATE_FORMAT, "version": __version__, **state}
    buffer = io.BytesIO()  # torch's zip writer reports a full disk as "unexpected pos": avoid it
    torch.save(payload, buffer)
    atomic_write_bytes(Path(path), buffer.getvalue())


def load_tensors(path: str | Path, what: str) -> Any:
    """``torch.load(weights_only=True)`` with one-line errors naming ``what`` (the kind of
    file); pickled objects are refused."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch's pickle-protocol notes are not for users
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if "Weights only load failed" in str(error) or "Unsupported global" in str(error):
            raise CheckpointError(f"{path} contains pickled Python objects; refusing to load it "
                                  f"({what} files hold only tensors and numbers, and unpickling "
                                  "would run code chosen by the file's author)") from None
        raise CheckpointError(f"{path} is corrupt or not a {what} file") from None
    except (OSError, RuntimeError, EOFError, ValueError) as error:
        if isinstance(error, OSError) and error.errno:
            raise
        detail = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise CheckpointError(f"{path} is not a readable {what} file ({detail})") from None


def load_state(path: Path) -> dict[str, Any]:
    state = load_tensors(path, "cocogan state")
    if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
        raise CheckpointError(f"{path} is not a cocogan training-state file")
    return state


def resumable_steps(run_dir: Path) -> list[int]:
    """Steps with both a weights and a state file, oldest first."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    steps = []
    for weights in folder.glob(f"step-*{WEIGHTS_SUFFIX}"):
        match = _STEP_NAME.match(weights.name[:-len(WEIGHTS_SUFFIX)])
        if match and (folder / f"{match[0]}{STATE_SUFFIX}").is_file():
            steps.append(int(match[1]))
    return sorted(steps)


def checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    """(weights, state) files of ``step`` in a run directory: ``step-00001234.*``."""
    stem = Path(run_dir) / CHECKPOINT_DIR / f"step-{step:08d}"
    return stem.with_name(stem.name + WEIGHTS_SUFFIX), stem.with_name(stem.name + STATE_SUFFIX)


def prune_checkpoints(run_dir: Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` resumable steps, plus leftovers of killed writes
    (temp files, older weights without a state file); returns the deleted paths."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    steps = resumable_steps(run_dir)
    kept = set(steps[-keep:]) if keep > 0 else set()
    newest = steps[-1] if steps else -1
    removed = list(folder.glob(".step-*.tmp"))
    for path in folder.glob("step-*"):
        name = path.name.removesuffix(WEIGHTS_SUFFIX).removesuffix(STATE_SUFFIX)
        match = _STEP_NAME.match(name)
        if match and int(match[1]) not in kept and int(match[1]) <= newest:
            removed.append(path)
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def read_weights(path: Path, config: Config, model: GAN) -> int:
    """Load a weights file into ``model`` after checking it fits ``config.model``; its step."""
    metadata = read_metadata(path)
    if stored_config(path, metadata).model != config.model:
        raise CheckpointError(f"{path} was trained with a different model config than "
                              "this run's config.yaml")
    _load_into(path, model, _read_tensors(path))
    return stored_step(path, metadata)
