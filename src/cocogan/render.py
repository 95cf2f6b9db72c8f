"""Batched patch rendering shared by every application (paper Section 3.5).

In eval mode (running CBN statistics) each micro patch depends only on its own (z, c), so every
application reduces to one primitive: the micro patches of grid positions for a batch of
latents, (image, position) pairs flattened into as few forward passes as ``chunk`` allows (the
authors' release ran one pass per position). Passes of other batch sizes agree to ~1e-7 on CPU.
Positions are (row, column) in grid units; rectangles may extend past the trained grid
(beyond-boundary generation) and, for cylindrical runs, past the 360-degree seam.

Shapes: B batch, P micro patches, Z latent dims, m micro patch side, H/W region height/width.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN, generate_micro, sample_latents
from cocogan.nn import Generator
from cocogan.patches import assemble

# Micro patches per forward pass on a CPU: both backends are fastest with small passes (in cache;
# docs/applications.md "Backends": torch 2180 patches/s at 128, 1633 at 1024).
DEFAULT_CHUNK = 128
GPU_CHUNK = 4096  # on a GPU a pass must be large to outweigh its ~100 kernel launches


def default_chunk(device: torch.device | str) -> int:
    """Micro patches per forward pass for ``--chunk`` when not given: larger on a GPU."""
    return GPU_CHUNK if torch.device(device).type == "cuda" else DEFAULT_CHUNK


@dataclass(frozen=True)
class GridRect:
    """A rectangle of micro grid positions: rows [top, bottom) and columns [left, right)."""

    top: int
    bottom: int
    left: int
    right: int

    @property
    def rows(self) -> int:
        return self.bottom - self.top

    @property
    def cols(self) -> int:
        return self.right - self.left

    @property
    def count(self) -> int:
        return self.rows * self.cols

    def positions(self) -> tuple[Tensor, Tensor]:
        """Row-major (P,) long tensors of the rectangle's grid positions."""
        rows, cols = torch.meshgrid(torch.arange(self.top, self.bottom),
                                    torch.arange(self.left, self.right), indexing="ij")
        return rows.reshape(-1), cols.reshape(-1)


def trained_rect(coords: CoordinateSystem) -> GridRect:
    """The grid rectangle of the trained full image."""
    return GridRect(0, coords.grid_h, 0, coords.grid_w)


@contextlib.contextmanager
def evaluating(*modules: nn.Module) -> Iterator[None]:
    """Eval mode (running BN statistics) inside the block, each module's mode restored after
    (applications must not leave a training run's raw G or D in eval mode)."""
    modes = [module.training for module in modules]
    try:
        for module in modules:
            module.eval()
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def pick_generator(model: CocoGAN, raw: bool = False) -> Generator:
    """The EMA generator, or the raw G when ``raw``; or the stand-in for it that
    :func:`cocogan.apps.backend.use_backend` installed, while its weights are unchanged."""
    source = model.generator if raw else model.generator_ema
    backend = getattr(model, "backend", None)
    if backend is not None and backend.raw == raw and backend.version == weights_version(source):
        return backend
    return source


def weights_version(module: nn.Module) -> tuple[tuple[int, int], ...]:
    """What changes when any tensor of ``module`` does: each one's id and in-place version
    counter (optimizer steps, EMA updates, loads and batch norm statistics all bump it)."""
    return tuple((id(t), t._version) for t in (*module.parameters(), *module.buffers()))


def latents(seeds: list[int], z_dim: int, device: torch.device | str = "cpu") -> Tensor:
    """z (B, Z) for each seed from ``torch.Generator().manual_seed(seed)``: a pure function of
    (seed, z_dim), so a seed names the same image in every command and in Python."""
    rows = [sample_latents(1, z_dim, torch.Generator().manual_seed(int(seed)))
            for seed in seeds]  # one RNG per seed, not per patch
    return torch.cat(rows).to(device) if rows else torch.empty(0, z_dim, device=device)


@torch.no_grad()
def render_patches(generator: Generator, coords: CoordinateSystem, z: Tensor, rows: Tensor,
                   cols: Tensor, *, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Micro patches (B, P, 3, m, m) on z's device of every latent z (B, Z) at every grid
    position ``rows``, ``cols`` (P,) (fractional allowed), at most ``chunk`` per forward pass
    of ``generator`` (already in the mode wanted). Cylindrical columns are wrapped to [0, K)
    first, so column K + j gives exactly the patch of column j."""
    assert chunk >= 1, f"chunk: got {chunk}, expected >= 1 (the CLI checks --chunk)"
    assert z.ndim == 2, f"z: got {tuple(z.shape)}, expected (B, Z)"
    assert rows.shape == cols.shape, f"rows {tuple(rows.shape)} != cols {tuple(cols.shape)}"
    # On z's device a pass needs no copy from the host, and a call's passes queue up on a GPU.
    rows = rows.to(z.device, torch.float32).reshape(-1)
    cols = cols.to(z.device, torch.float32).reshape(-1)
    if coords.cyclic:
        cols = torch.remainder(cols, coords.grid_w)
    batch, count = z.shape[0], rows.numel()
    total = batch * count
    out = torch.empty(total, 3, coords.micro, coords.micro, device=z.device)
    # In eval mode spectral norm's weights are constant: normalise them once, not per chunk.
    cache = contextlib.nullcontext() if generator.training else parametrize.cached()
    with cache:
        for start in range(0, total, chunk):  # one pass per chunk of (image, position) pairs
            index = torch.arange(start, min(start + chunk, total), device=z.device)
            pos = index % count  # sample-major flattening: pair i = (image i // P, position i % P)
            out[start:start + index.numel()] = generate_micro(
                generator, coords, z[index // count], rows[pos, None], cols[pos, None])[:, 0]
    return out.view(batch, count, 3, coords.micro, coords.micro)


def render_rect(generator: Generator, coords: CoordinateSystem, z: Tensor, rect: GridRect, *,
                chunk: int = DEFAULT_CHUNK) -> Tensor:
    """The image region (B, 3, rect.rows * m, rect.cols * m) of a grid rectangle, assembled."""
    rows, cols = rect.positions()
    patches = render_patches(generator, coords, z, rows, cols, chunk=chunk)  # (B, P, 3, m, m)
    return assemble(patches, rows - rect.top, cols - rect.left)


def sample_rect(model: CocoGAN, z: Tensor, rect: GridRect, *, raw: bool = False,
                chunk: int = DEFAULT_CHUNK) -> Tensor:
    """:func:`render_rect` by :func:`pick_generator`'s generator, in eval mode."""
    generator = pick_generator(model, raw)
    with evaluating(generator):
        return render_rect(generator, model.coords, z, rect, chunk=chunk)


def axis_coordinates(coords: CoordinateSystem, rect: GridRect) -> dict[str, list[float]]:
    """The normalised coordinate of each row and column of ``rect`` (for JSON sidecars): y and
    x (in [-1, 1] on the trained grid), or on a cylinder y and the wrapped angle theta."""
    rows = torch.arange(rect.top, rect.bottom)
    cols = torch.arange(rect.left, rect.right)
    y = coords.micro_coords(rows, torch.zeros_like(rows))[:, 0]
    if coords.cyclic:
        theta = torch.remainder(cols.float() / coords.grid_w * 2.0, 2.0) - 1.0
        return {"y": _round(y), "theta": _round(theta)}
    x = coords.micro_coords(torch.zeros_like(cols), cols)[:, 1]
    return {"y": _round(y), "x": _round(x)}


def _round(values: Tensor) -> list[float]:
    return [round(float(v), 6) for v in values]
