"""Computation-friendly generation of images of any size (paper Section 3.5): micro patches are
independent once z and their positions are fixed, so the image is made tile by tile, each
written before the next is computed: ``.tif``/``.tiff`` as tiled BigTIFF by ``tifffile``
(memory: one tile), ``.png`` in bands through a streaming zlib compressor (memory grows with
the width only). The output covers a rectangle of the micro grid whose top-left patch is at
``origin``; by default the trained image is centred in it (a larger output extends the grid
past [-1, 1]). Cylindrical runs start at column 0 and wrap. Shapes: Z latent dims, T tile side
in pixels, H/W output height/width in pixels.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import itertools
import re
import struct
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor
from tqdm import tqdm

from cocogan.apps.io import to_uint8
from cocogan.budget import TIFF_INDEX_BYTES, Budget, image_bytes, render_bytes
from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.outputs import atomic_write
from cocogan.render import (
    DEFAULT_CHUNK,
    GridRect,
    evaluating,
    pick_generator,
    render_patches,
    sample_rect,
)

DEFAULT_TILE = 256  # pixels; TIFF tiles must be multiples of 16
FORMATS = (".tif", ".tiff", ".png")


@dataclass(frozen=True)
class HugePlan:
    """Where an output of ``height`` x ``width`` pixels lies on the micro grid, and its tiling."""

    height: int  # output height in pixels (a multiple of the micro patch)
    width: int  # output width in pixels
    origin_row: int  # grid position of the output's top-left micro patch
    origin_col: int
    tile: int  # tile (TIFF) or band (PNG) side in pixels: a multiple of 16 and of the micro patch
    micro: int  # micro patch side in pixels

    @property
    def tiles(self) -> tuple[int, int]:
        """Tile rows and columns (edge tiles may be partial)."""
        return -(-self.height // self.tile), -(-self.width // self.tile)

    def tile_rect(self, row: int, col: int) -> GridRect:
        """The grid rectangle of tile (row, col), clipped to the output."""
        per, whole = self.tile // self.micro, self.rect()
        top, left = whole.top + row * per, whole.left + col * per
        return GridRect(top, min(top + per, whole.bottom), left, min(left + per, whole.right))

    def rect(self) -> GridRect:
        """The whole output's grid rectangle."""
        return GridRect(self.origin_row, self.origin_row + self.height // self.micro,
                        self.origin_col, self.origin_col + self.width // self.micro)


def plan_huge(coords: CoordinateSystem, height: int, width: int, *, tile: int | None = None,
              origin: tuple[int, int] | None = None) -> HugePlan:
    """Validate an output size and tile, and place it on the grid centred on the trained image."""
    m = coords.micro
    for name, size in (("height", height), ("width", width)):
        if size <= 0 or size % m:
            raise ValueError(f"--size {name} {size} must be a positive multiple of the "
                             f"{m}-pixel micro patch")
    tile = max(DEFAULT_TILE, m) if tile is None else tile
    if tile <= 0 or tile % 16 or tile % m:
        raise ValueError(f"--tile {tile} must be a positive multiple of 16 and of the {m}-pixel "
                         "micro patch")
    if origin is None:
        rows, cols = height // m, width // m
        origin = ((coords.grid_h - rows) // 2, 0 if coords.cyclic else (coords.grid_w - cols) // 2)
    return HugePlan(height, width, int(origin[0]), int(origin[1]), tile, m)


def huge_budget(plan: HugePlan, suffix: str, seconds_per_patch: float | None = None) -> Budget:
    """Memory, disk (uncompressed) and time of :func:`write_huge` for ``plan``, before any
    work: TIFF holds one tile plus tifffile's index of tiles; PNG one band of ``plan.tile`` rows."""
    tile_rows, tile_cols = plan.tiles
    tiles = tile_rows * tile_cols
    memory = render_bytes(1, min(plan.tile, plan.height), min(plan.tile, plan.width))
    if suffix.lower() == ".png":
        memory += 3 * plan.tile * plan.width * 3 + plan.tile  # band, its filtered copy, lines
        disk = plan.height * (plan.width * 3 + 1)
    else:
        memory += TIFF_INDEX_BYTES * tiles
        disk = tiles * (image_bytes(1, plan.tile, plan.tile) + 16)  # edge tiles are padded
    patches = (plan.height // plan.micro) * (plan.width // plan.micro)
    seconds = None if seconds_per_patch is None else patches * seconds_per_patch
    return Budget(f"huge {plan.height}x{plan.width} ({tiles} tiles)", memory, disk + 4096, seconds)


@torch.no_grad()
def patch_seconds(model: CocoGAN, chunk: int = DEFAULT_CHUNK, *, raw: bool = False,
                  probe: int = 256) -> float:
    """Measured seconds per micro patch: one forward pass of ``min(chunk, probe)`` patches."""
    count = max(1, min(chunk, probe))
    generator = pick_generator(model, raw)
    z = torch.zeros(1, model.config.z_dim, device=model.device)
    rows = torch.zeros(count)
    with evaluating(generator):
        for _ in range(2):  # the first pass warms up; the second is timed
            start = time.perf_counter()
            render_patches(generator, model.coords, z, rows, rows, chunk=count)
            if model.device.type == "cuda":
                torch.cuda.synchronize(model.device)
    return (time.perf_counter() - start) / count


def iter_tiles(model: CocoGAN, z: Tensor, plan: HugePlan, *, raw: bool = False,
               chunk: int = DEFAULT_CHUNK, bar: tqdm | None = None) -> Iterator[np.ndarray]:
    """Tiles (h, w, 3) uint8 in row-major order; edge tiles are partial. ``z`` is (1, Z)."""
    for row, col in itertools.product(*map(range, plan.tiles)):
        rect = plan.tile_rect(row, col)
        pixels = to_uint8(sample_rect(model, z, rect, raw=raw, chunk=chunk)[0])  # (h, w, 3)
        if bar is not None:
            bar.update(1)
        yield pixels


def write_huge(model: CocoGAN, z: Tensor, path: str | Path, plan: HugePlan, *,
               raw: bool = False, chunk: int = DEFAULT_CHUNK, progress: bool = True,
               compress: bool = False) -> Path:
    """Stream the planned image of one latent z (1, Z) to ``path`` (a :data:`FORMATS` suffix)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--output must end in one of {', '.join(FORMATS)}, got {path.name!r}")
    if z.ndim != 2 or z.shape[0] != 1:
        raise ValueError(f"huge generates one image at a time; got z of shape {tuple(z.shape)}")
    tile_rows, tile_cols = plan.tiles
    remove_stale_temps(path)  # of an earlier run killed with SIGKILL: space the output needs

    locks: list[BinaryIO] = []  # held until the rename: see remove_stale_temps

    def write(tmp: Path) -> None:  # into a temporary file, renamed only when complete
        locks.append(open(tmp, "rb"))  # noqa: SIM115 (closed after the rename)
        fcntl.flock(locks[0], fcntl.LOCK_EX)  # "being written", until renamed or dead
        with tqdm(total=tile_rows * tile_cols, unit="tile", desc=path.name,
                  disable=not progress) as bar:
            tiles = iter_tiles(model, z, plan, raw=raw, chunk=chunk, bar=bar)
            if suffix == ".png":  # full-width bands of tile rows: at most two bands at once
                bands = (np.concatenate([next(tiles) for _ in range(tile_cols)], axis=1)
                         for _ in range(tile_rows))
                write_png_stream(tmp, plan.height, plan.width, bands, level=6 if compress else 1)
            else:
                import tifffile

                tifffile.imwrite(tmp, data=tiles, shape=(plan.height, plan.width, 3),
                                 dtype=np.uint8, tile=(plan.tile, plan.tile), bigtiff=True,
                                 photometric="rgb", compression="zlib" if compress else None)

    try:
        return atomic_write(path, write)
    finally:
        for lock in locks:
            lock.close()


def remove_stale_temps(path: Path) -> list[Path]:
    """Delete the temporary files (``.NAME.XXXXXXXX.tmp``, `outputs.atomic_write`'s) that
    killed runs left for ``path``; returns them. Only unlocked ones go: a running `write_huge`
    holds a flock on its own, which the kernel releases when it dies, even by SIGKILL."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    for candidate in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        if not pattern.match(candidate.name) or not candidate.is_file():
            continue
        with contextlib.suppress(OSError), open(candidate, "rb") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # another process is writing it now
            candidate.unlink()
            removed.append(candidate)
    return removed


def write_png_stream(path: Path, height: int, width: int, bands: Iterator[np.ndarray],
                     level: int = 1) -> None:
    """Write an RGB PNG from row bands without holding the image (IHDR, IDAT*, IEND); each
    scanline uses the Sub filter (one vectorised subtraction; compresses smooth images well)."""
    compressor = zlib.compressobj(level)
    with open(path, "wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        _chunk(handle, b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        rows = 0
        for band in bands:
            assert band.shape[1:] == (width, 3), f"band: got {band.shape}, expected (h, {width}, 3)"
            flat = band.reshape(band.shape[0], width * 3)
            filtered = flat.copy()
            filtered[:, 3:] -= flat[:, :-3]  # Sub filter, modulo 256 in uint8
            lines = np.concatenate([np.ones((band.shape[0], 1), np.uint8), filtered], axis=1)
            data = compressor.compress(lines.tobytes())
            if data:
                _chunk(handle, b"IDAT", data)
            rows += band.shape[0]
        _chunk(handle, b"IDAT", compressor.flush())
        _chunk(handle, b"IEND", b"")
    assert rows == height, f"PNG stream: wrote {rows} rows, expected {height}"


def _chunk(handle: BinaryIO, kind: bytes, data: bytes) -> None:
    handle.write(struct.pack(">I", len(data)) + kind + data)
    handle.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

