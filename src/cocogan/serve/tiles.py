"""Tiles of a trained run for the browser viewer: geometry, latents, batching and an LRU cache.

The viewer shows the (possibly endless) plane of micro patches as square tiles of ``size``
pixels; tile (y, x) is the pixel box [y size, (y + 1) size) x [x size, (x + 1) size) of the
image whose top-left trained pixel is (0, 0). Tiles outside the trained image are
beyond-boundary generation; a cylindrical run's columns wrap, so tile x and the tile one full
turn further are the same pixels (and the same cache entry). A tile is computed like
:func:`cocogan.apps.viewport`: only the micro patches under it, assembled and cut, so it is
exactly the crop of ``generate full`` / ``generate huge`` output with the same latent.

Concurrent requests are queued for a few milliseconds and rendered together: the tiles of one
latent share a single :func:`cocogan.render.render_patches` call (one forward pass per
``chunk`` micro patches), on one worker thread, so the model never runs twice at once.

Shapes: Z latent dims, P micro patches, m micro patch side, T tile side in pixels.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import torch
from PIL import Image
from torch import Tensor

from cocogan.apps.interpolate import slerp
from cocogan.apps.io import to_uint8
from cocogan.apps.viewport import PixelBox, covering_rect
from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.patches import assemble
from cocogan.render import DEFAULT_CHUNK, evaluating, latents, pick_generator, render_patches

T = TypeVar("T")

MAX_TILE = 512  # largest tile side in pixels a request may ask for
MAX_BEYOND = 256  # micro patches a tile may reach past each border of the trained grid
MAX_SEED = 2**31 - 1
MAX_ABS_Z = 100.0  # an uploaded/explicit latent with larger entries is rejected, not clamped
MAX_BATCH_PIXELS = 4 << 20  # pixels per batch: bounds the float buffers of one render call
BATCH_WINDOW_S = 0.004  # how long the batcher waits for more requests before rendering
TARGET_TILE = 256  # default tile side is the largest fitting multiple of the micro patch


class TileError(ValueError):
    """A request the tile server refuses (bad or out-of-range parameters): HTTP 400."""


class Busy(RuntimeError):
    """More tiles are queued than the server accepts: HTTP 503, retry later."""


def default_tile(coords: CoordinateSystem) -> int:
    """The largest tile side <= 256 px (at least one micro patch) that divides both image sides.

    Dividing the width makes a panorama's turn a whole number of tiles; dividing the height
    makes the trained image a whole number of tiles.
    """
    k = math.gcd(coords.grid_h, coords.grid_w)
    best = 1
    for d in range(1, k + 1):
        if k % d == 0 and d * coords.micro <= max(TARGET_TILE, coords.micro):
            best = d
    return best * coords.micro


def tile_box(coords: CoordinateSystem, y: int, x: int, size: int) -> PixelBox:
    """The pixel box of tile (y, x); cylindrical columns are wrapped into the first turn.

    Raises:
        TileError: a size that is not a multiple of the micro patch or too large, or a tile
            more than :data:`MAX_BEYOND` micro patches past the trained grid.
    """
    m = coords.micro
    if size % m or not m <= size <= MAX_TILE:
        raise TileError(f"size={size}: tile side must be a multiple of the {m}-pixel micro patch "
                        f"between {m} and {MAX_TILE} pixels")
    top, left = y * size, x * size
    full_h, full_w = coords.grid_h * m, coords.grid_w * m
    reach = MAX_BEYOND * m
    if top < -reach or top + size > full_h + reach:
        raise TileError(f"y={y}: tile rows must stay within {MAX_BEYOND} micro patches of the "
                        f"{full_h}-pixel-high image")
    if coords.cyclic:
        left %= full_w
    elif left < -reach or left + size > full_w + reach:
        raise TileError(f"x={x}: tile columns must stay within {MAX_BEYOND} micro patches of the "
                        f"{full_w}-pixel-wide image")
    return PixelBox(top, left, size, size)


@dataclass(frozen=True)
class Latent:
    """A latent z with a stable name: the cache key and the ETag depend only on the name."""

    key: str
    z: Tensor = field(compare=False)  # (Z,)


def seed_latent(z_dim: int, seed: int, seed2: int | None = None, t: float = 0.0) -> Latent:
    """z of ``seed`` (as every command draws it), or slerped towards ``seed2`` by ``t``."""
    for name, value in (("seed", seed), ("seed2", seed2)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise TileError(f"{name}={value} must be an integer in [0, {MAX_SEED}]")
    if not 0.0 <= t <= 1.0:
        raise TileError(f"t={t} must be in [0, 1] (0 = seed, 1 = seed2)")
    if seed2 is None or t == 0.0:
        return Latent(f"s{seed}", latents([seed], z_dim)[0])
    pair = latents([seed, seed2], z_dim)
    z = slerp(pair[0], pair[1], torch.tensor([t]))[0]
    return Latent(f"s{seed}-s{seed2}-t{t!r}", z)


def explicit_latent(z_dim: int, data: bytes) -> Latent:
    """A latent sent as little-endian float32 bytes (e.g. the estimate of patch inspiration)."""
    if len(data) != 4 * z_dim:
        raise TileError(f"z must be {z_dim} float32 values ({4 * z_dim} bytes), got "
                        f"{len(data)} bytes")
    z = torch.frombuffer(bytearray(data), dtype=torch.float32).clone()
    if not bool(torch.isfinite(z).all()) or float(z.abs().max()) > MAX_ABS_Z:
        raise TileError(f"z values must be finite and within [-{MAX_ABS_Z:g}, {MAX_ABS_Z:g}]")
    return Latent("z" + hashlib.sha1(data).hexdigest()[:20], z)


def encode_png(pixels: Tensor) -> bytes:
    """(3, h, w) in [-1, 1] -> PNG bytes (fast zlib level: tiles are small and short-lived)."""
    buffer = io.BytesIO()
    Image.fromarray(to_uint8(pixels)).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()


class LRUCache:
    """Encoded tiles by key, evicting the least recently used beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # total PNG bytes kept; 0 disables caching
        self.bytes = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple) -> bytes | None:
        with self._lock:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: tuple, value: bytes) -> None:
        with self._lock:
            if key in self._items or len(value) > self.max_bytes:
                return
            self._items[key] = value
            self.bytes += len(value)
            while self.bytes > self.max_bytes:
                _, old = self._items.popitem(last=False)
                self.bytes -= len(old)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class Stats:
    """Counters for /api/stats, the tests and the benchmark."""

    tiles: int = 0  # tiles rendered (cache misses)
    hits: int = 0  # tiles served from the cache or joined to an identical queued request
    batches: int = 0  # render_batch calls
    passes: int = 0  # generator forward passes

    def to_dict(self) -> dict[str, int]:
        return {"tiles": self.tiles, "hits": self.hits, "batches": self.batches,
                "passes": self.passes}


@dataclass
class _Job:
    key: tuple
    latent: Latent
    box: PixelBox
    future: asyncio.Future


class TileRenderer:
    """Renders tiles of one model on one worker thread, batching concurrent requests.

    Args:
        model: the loaded run (eval mode).
        raw: sample from the raw generator instead of the EMA one.
        chunk: micro patches per forward pass.
        cache_bytes: LRU cache size in PNG bytes (0: no cache).
        max_pending: queued tiles beyond which requests are refused with :class:`Busy`.
    """

    def __init__(self, model: CocoGAN, *, raw: bool = False, chunk: int = DEFAULT_CHUNK,
                 cache_bytes: int = 64 << 20, max_pending: int = 256) -> None:
        self.model = model
        self.generator = pick_generator(model, raw)
        self.chunk = chunk
        self.cache = LRUCache(cache_bytes)
        self.max_pending = max_pending
        self.stats = Stats()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cocogan-render")
        self._queue: list[_Job] = []
        self._inflight: dict[tuple, asyncio.Future] = {}
        self._worker: asyncio.Task | None = None

    async def tile(self, latent: Latent, box: PixelBox) -> bytes:
        """PNG bytes of ``box`` for ``latent``, from the cache or the next batch."""
        key = (latent.key, box.top, box.left, box.height, box.width)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.hits += 1
            return cached
        if key in self._inflight:  # the same tile is already queued: share its result
            self.stats.hits += 1
            return await asyncio.shield(self._inflight[key])
        if len(self._inflight) >= self.max_pending:
            raise Busy(f"more than {self.max_pending} tiles are queued; retry shortly")
        future = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        self._queue.append(_Job(key, latent, box, future))
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return await asyncio.shield(future)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run a model call on the render thread (so it never overlaps tile rendering)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _drain(self) -> None:
        while self._queue:
            await asyncio.sleep(BATCH_WINDOW_S)  # let the browser's parallel requests arrive
            count, pixels = 0, 0
            for job in self._queue:  # as many as the pixel budget allows, at least one
                pixels += job.box.height * job.box.width
                if count and pixels > MAX_BATCH_PIXELS:
                    break
                count += 1
            jobs, self._queue = self._queue[:count], self._queue[count:]
            try:
                results = await self.run(self.render_batch, [(j.latent, j.box) for j in jobs])
            except Exception as error:
                for job in jobs:
                    self._inflight.pop(job.key, None)
                    job.future.set_exception(error)
                continue
            for job, png in zip(jobs, results, strict=True):
                self.cache.put(job.key, png)
                self._inflight.pop(job.key, None)
                job.future.set_result(png)

    def render_batch(self, requests: list[tuple[Latent, PixelBox]]) -> list[bytes]:
        """PNG bytes of each (latent, box); the boxes of one latent share one render call."""
        coords, m = self.model.coords, self.model.coords.micro
        groups: dict[str, list[int]] = {}
        for index, (latent, _) in enumerate(requests):
            groups.setdefault(latent.key, []).append(index)
        out: list[bytes] = [b""] * len(requests)
        with evaluating(self.generator):
            for indices in groups.values():
                rects = [covering_rect(coords, requests[i][1]) for i in indices]
                positions = [rect.positions() for rect in rects]
                rows = torch.cat([r for r, _ in positions])
                cols = torch.cat([c for _, c in positions])
                z = requests[indices[0]][0].z[None].to(self.model.device)  # (1, Z)
                patches = render_patches(self.generator, coords, z, rows, cols,
                                         chunk=self.chunk)[0]  # (P, 3, m, m)
                self.stats.passes += -(-rows.numel() // self.chunk)
                start = 0
                for i, rect, (r, c) in zip(indices, rects, positions, strict=True):
                    part = patches[start:start + rect.count][None]  # (1, p, 3, m, m)
                    start += rect.count
                    region = assemble(part, r - rect.top, c - rect.left)[0]  # (3, h, w)
                    box = requests[i][1]
                    top, left = box.top - rect.top * m, box.left - rect.left * m
                    out[i] = encode_png(region[:, top:top + box.height, left:left + box.width])
        self.stats.tiles += len(requests)
        self.stats.batches += 1
        return out

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
