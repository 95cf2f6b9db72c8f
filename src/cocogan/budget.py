"""Up-front budgets for work of user-given sizes (``huge --size``, many seeds, ``--set
model.ngf=...``, a checkpoint's config): peak memory, disk and time are estimated (upper
bounds) before any work, and a command refuses unless ``--force`` when they exceed the machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cocogan.config import ModelConfig
    from cocogan.nn import Discriminator, Generator

TIFF_INDEX_BYTES = 64  # tifffile keeps each tile's offset and byte count in Python lists
FLOAT_BYTES = 4
MEMORY_MARGIN = 0.1  # share of the available memory an estimate must leave free (it is approximate)


class BudgetError(ValueError):
    """The estimated memory or disk of a command exceeds what the machine has."""


@dataclass(frozen=True)
class Budget:
    """Estimated peak memory and output bytes of a command, and its time when measured."""

    what: str  # e.g. "huge 16384x16384"
    memory: int  # peak bytes held at once (arrays on the CPU side)
    disk: int  # bytes written (upper bound)
    seconds: float | None = None  # estimated run time, None when not measured

    def describe(self) -> str:
        time = f", ~{format_seconds(self.seconds)}" if self.seconds is not None else ""
        return (f"{self.what}: needs ~{format_bytes(self.memory)} of memory and up to "
                f"~{format_bytes(self.disk)} on disk{time}")


def image_bytes(count: int, height: int, width: int) -> int:
    """Raw 8-bit RGB bytes of ``count`` images: the upper bound of their PNG files."""
    return count * height * width * 3


def render_bytes(count: int, height: int, width: int) -> int:
    """Peak bytes to render ``count`` images at once: float patches, float images, 8-bit copy."""
    return count * height * width * 3 * (2 * FLOAT_BYTES + 1)


# A training step holds the activations of G's and D's forwards (real, fake, interpolated) and
# their gradients (the penalty keeps D's graph twice): leaf outputs of one G and D pass, times
ACTIVATION_FACTOR = 4
# Per parameter of G and D while training: weights, gradients and Adam's two moments; EMA G
# adds one copy of G. Inference (eval, generate) holds each network's weights once.
TRAIN_COPIES = 4


@dataclass(frozen=True)
class ModelSize:
    """Parameter and activation counts of a model config, from its shape-only networks."""

    g_params: int  # parameters of G (EMA G has as many)
    d_params: int  # parameters of D with its heads
    activations: int  # floats output by the leaf modules of one G and one D forward pass

    def weights_bytes(self) -> int:
        """A checkpoint's weights file: G, D and EMA G in float32."""
        return (2 * self.g_params + self.d_params) * FLOAT_BYTES


def shape_networks(model: ModelConfig) -> tuple[Generator, Discriminator]:
    """G and D of `model` built on the meta device (no memory, milliseconds, any size)."""
    from cocogan.coords import coordinate_system
    from cocogan.model import build_generator
    from cocogan.nn import Discriminator
    from cocogan.nn.layers import shapes_only

    system = coordinate_system(model)
    with shapes_only():
        return build_generator(model, system), Discriminator(
            system.coord_dim, model.z_dim, model.macro, model.ndf, model.aux_hidden)


def model_size(model: ModelConfig, batch: int) -> ModelSize:
    """Counts of the networks of `model` for `batch` macro patches per step."""
    import torch

    from cocogan.coords import coordinate_system
    from cocogan.nn.layers import shapes_only

    system = coordinate_system(model)
    outputs = [0]

    def count(module: torch.nn.Module, args: object, out: object) -> None:
        if isinstance(out, torch.Tensor):
            outputs[0] += out.numel()

    generator, disc = shape_networks(model)
    with shapes_only():
        for net in (generator, disc):
            for leaf in (m for m in net.modules() if not list(m.children())):
                leaf.register_forward_hook(count)
        patches = batch * system.patches_per_macro  # G draws every micro patch of each macro
        try:
            generator(torch.zeros(patches, model.z_dim), torch.zeros(patches, system.coord_dim))
            disc(torch.zeros(batch, 3, model.macro, model.macro_w),
                 torch.zeros(batch, system.coord_dim))
        except (RuntimeError, ValueError, NotImplementedError):  # an op without meta support
            outputs[0] = 0
    return ModelSize(g_params=sum(p.numel() for p in generator.parameters()),
                     d_params=sum(p.numel() for p in disc.parameters()), activations=outputs[0])


def training_budget(model: ModelConfig, batch: int, n_samples: int, keep: int,
                    workers: int = 0) -> Budget:
    """Peak memory (weights, gradients, Adam moments, EMA G, activations, real batches in
    flight, the sample grid) and disk (`keep` + 1 checkpoints) of training `model`."""
    size = model_size(model, batch)
    full = model.full_height * model.full_width * 3
    in_flight = 1 + 2 * workers  # torch DataLoader: prefetch_factor 2 per worker
    memory = ((TRAIN_COPIES * (size.g_params + size.d_params) + size.g_params) * FLOAT_BYTES
              + ACTIVATION_FACTOR * size.activations * FLOAT_BYTES
              + in_flight * batch * full * FLOAT_BYTES
              + render_bytes(n_samples, model.full_height, model.full_width))
    state = 2 * (size.g_params + size.d_params) * FLOAT_BYTES
    return Budget(what=f"training {describe_model(model, size)}", memory=memory,
                  disk=(keep + 1) * (size.weights_bytes() + state))


def inference_budget(model: ModelConfig) -> Budget:
    """Memory to load a checkpoint of `model`: its tensors as read, then in the networks."""
    size = model_size(model, 1)
    return Budget(what=f"loading {describe_model(model, size)}",
                  memory=2 * size.weights_bytes(), disk=0)


def describe_model(model: ModelConfig, size: ModelSize) -> str:
    """'a 64x64 model (ngf 64, ndf 64, z_dim 128; G 4.3M, D 3.1M parameters)'."""
    return (f"a {model.full_height}x{model.full_width} model (ngf {model.ngf}, ndf {model.ndf}, "
            f"z_dim {model.z_dim}; G {format_count(size.g_params)}, D "
            f"{format_count(size.d_params)} parameters)")


def format_count(count: float, units: tuple[str, ...] = ("", "K", "M", "G", "T", "P"),
                 space: str = "") -> str:
    """'4.3M' (or with units and a space, '1.2 GB'): whole numbers below 1000."""
    for unit in units[:-1]:
        if count < 1000:
            return f"{count:.{0 if unit == units[0] else 1}f}{space}{unit}"
        count /= 1000
    return f"{count:.1f}{space}{units[-1]}"


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (MemAvailable on Linux)."""
    with contextlib.suppress(OSError), open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse on memory


def free_disk(path: Path) -> int:
    """Free bytes on the file system that will hold ``path`` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free


def check_budget(budget: Budget, destination: Path | None,
                 fix: str = "choose a smaller size", memory: int | None = None,
                 memory_name: str = "memory") -> str:
    """Its description, or BudgetError when ``budget`` does not fit the disk of ``destination``
    (None: unchecked) or ``memory`` bytes of ``memory_name`` (None: `available_memory()`)."""
    problems = []
    memory = available_memory() if memory is None else memory
    disk = free_disk(destination) if destination is not None else 2**62
    if budget.memory > memory * (1 - MEMORY_MARGIN):
        problems.append(f"only {format_bytes(memory)} of {memory_name} is available (and "
                        f"{MEMORY_MARGIN:.0%} of it is kept free)")
    if budget.disk > disk:
        problems.append(f"only {format_bytes(disk)} is free on the disk of {destination}")
    if problems:
        raise BudgetError(f"{budget.describe()}, but {' and '.join(problems)}: {fix} "
                          "(or pass --force to try anyway)")
    return budget.describe()


def format_bytes(count: float) -> str:
    return format_count(count, ("B", "KB", "MB", "GB", "TB", "PB"), " ")


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.0f} min" if seconds < 7200 else f"{seconds / 3600:.0f} h"
