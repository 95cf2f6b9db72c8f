"""Tiles of a trained run for the browser viewer: geometry, latents, batching and an LRU cache.
Tile (y, x) of side ``size`` is the pixel box [y size, (y + 1) size) x [x size, (x + 1) size),
(0, 0) the top-left trained pixel, rendered from the micro patches under it: an exact crop of
``generate full`` / ``huge`` (docs/serve.md). Shapes: Z latent dims, P micro patches, m micro side.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import heapq
import io
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import count
from typing import TypeVar

import torch
from PIL import Image
from torch import Tensor

from cocogan.apps.interpolate import latent_path
from cocogan.apps.io import to_uint8
from cocogan.apps.viewport import PixelBox, covering_rect, trim
from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.patches import assemble
from cocogan.render import (
    DEFAULT_CHUNK,
    GridRect,
    evaluating,
    latents,
    pick_generator,
    render_patches,
)

T = TypeVar("T")

MAX_TILE = 512  # largest tile side in pixels a request may ask for
MAX_BEYOND = 256  # micro patches a tile may reach past each border of the trained grid
MAX_SEED = 2**31 - 1
MAX_ABS_Z = 100.0  # an uploaded/explicit latent with larger entries is rejected, not clamped
MAX_QUEUED_PATCHES = 16384  # default bound of the micro patches queued per run (``Busy`` past)
MAX_WAITERS = 8  # requests that may wait for one queued tile (``Busy`` past: each holds a socket)
BATCH_WINDOW_S = 0.004  # how long the batcher waits for more requests before rendering
STEP_TARGET_S = 0.1  # a step lasts about this long: the wait of a small tile behind big ones
TARGET_TILE = 256  # default tile side is the largest fitting multiple of the micro patch


class TileError(ValueError):
    """A request the tile server refuses (bad or out-of-range parameters): HTTP 400."""


class Busy(RuntimeError):
    """More tiles are queued than the server accepts: HTTP 503, retry later."""


def default_tile(coords: CoordinateSystem) -> int:
    """The largest tile side <= 256 px (at least one micro patch) that divides both image
    sides: a panorama's turn and the trained image are then whole numbers of tiles."""
    k, m = math.gcd(coords.grid_h, coords.grid_w), coords.micro
    return m * max(d for d in range(1, k + 1) if k % d == 0 and d * m <= max(TARGET_TILE, m))


def tile_box(coords: CoordinateSystem, y: int, x: int, size: int) -> PixelBox:
    """The pixel box of tile (y, x), cylindrical columns wrapped into the first turn; TileError
    for a bad size or a tile more than :data:`MAX_BEYOND` micro patches past the trained grid."""
    m = coords.micro
    if size % m or not m <= size <= MAX_TILE:
        raise TileError(f"size={size}: tile side must be a multiple of the {m}-pixel micro patch "
                        f"between {m} and {MAX_TILE} pixels")
    reach, top, left = MAX_BEYOND * m, y * size, x * size
    full_h, full_w = coords.grid_h * m, coords.grid_w * m
    for name, index, start, full, side in (("y", y, top, full_h, "high"),
                                           ("x", x, left, full_w, "wide")):
        if (name == "y" or not coords.cyclic) and not -reach <= start <= full + reach - size:
            raise TileError(f"{name}={index} must be an integer in [{-(reach // size)}, "
                            f"{(full + reach) // size - 1}] for size={size}: tiles must stay "
                            f"within {MAX_BEYOND} micro patches of the {full}-pixel-{side} image")
    if coords.cyclic:
        left %= full_w
    return PixelBox(top, left, size, size)


@dataclass(frozen=True)
class Latent:
    """A latent z with a stable name: the cache key and the ETag depend only on the name."""

    key: str
    z: Tensor = field(compare=False)  # (Z,)


def seed_latent(z_dim: int, seed: int, seed2: int | None = None, t: float = 0.0, *,
                phase: bool = False) -> Latent:
    """z of ``seed`` (as every command draws it), or moved towards ``seed2`` by ``t`` as
    ``generate interpolate`` moves it (``phase``: model.z_phase, z[0] the short way round)."""
    for name, value in (("seed", seed), ("seed2", seed2)):
        if value is not None and not 0 <= value <= MAX_SEED:
            raise TileError(f"{name}={value} must be an integer in [0, {MAX_SEED}]")
    if not 0.0 <= t <= 1.0:
        raise TileError(f"t={t} must be in [0, 1] (0 = seed, 1 = seed2)")
    if seed2 is None or t == 0.0:
        return Latent(f"s{seed}", latents([seed], z_dim)[0])
    pair = latents([seed, seed2], z_dim)
    z = latent_path(pair[0], pair[1], torch.tensor([0.0, t, 1.0]), phase=phase)[1]
    return Latent(f"s{seed}-s{seed2}-t{t!r}", z)


def explicit_latent(z_dim: int, text: str) -> Latent:
    """A latent sent as base64url little-endian float32 bytes (e.g. patch inspiration's)."""
    try:
        data = base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise TileError("z must be base64url-encoded float32 values") from None
    if len(data) != 4 * z_dim:
        raise TileError(f"z must be {z_dim} float32 values ({4 * z_dim} bytes), got "
                        f"{len(data)} bytes")
    z = torch.frombuffer(bytearray(data), dtype=torch.float32).clone()
    if not bool(torch.isfinite(z).all()) or float(z.abs().max()) > MAX_ABS_Z:
        raise TileError(f"z values must be finite and within [-{MAX_ABS_Z:g}, {MAX_ABS_Z:g}]")
    return Latent("z" + hashlib.sha1(data).hexdigest()[:20], z)


class LRUCache:
    """Encoded tiles by key, evicting the least recently used beyond ``max_bytes`` (used on the
    event loop only: the render thread never touches it)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes  # total PNG bytes kept; 0 disables caching
        self.bytes = 0
        self._items: OrderedDict[tuple, bytes] = OrderedDict()

    def get(self, key: tuple) -> bytes | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: tuple, value: bytes) -> None:
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
    batches: int = 0  # render steps (each at most one forward pass of ``chunk`` patches)
    passes: int = 0  # generator forward passes
    dropped: int = 0  # queued tiles abandoned by all their clients before they were finished
    refused: int = 0  # requests refused with Busy (queue full, or a tile's waiters)
    peak_queued: int = 0  # most micro patches ever queued at once
    peak_step: int = 0  # most micro patches rendered in one step


@dataclass(eq=False)
class _Job:
    """One queued tile: its patch positions and the patches rendered so far."""

    key: tuple
    latent: Latent
    box: PixelBox
    rect: GridRect
    rows: Tensor  # (P,) grid positions of the covering rectangle, row-major
    cols: Tensor  # (P,)
    future: asyncio.Future
    waiters: int = 1  # requests waiting for it; at 0 it is dropped
    done: int = 0  # patches rendered so far (the first ``done`` positions)
    scheduled: int = 0  # patches given to a step (done, or in the step under way)
    parts: list[Tensor] = field(default_factory=list)  # (p, 3, m, m) each
    dropped: bool = False

    @property
    def unscheduled(self) -> int:
        """Patches not yet given to a step: what the job still adds to the queue."""
        return self.rows.numel() - self.scheduled


class TileRenderer:
    """Renders tiles of one model (eval mode) on one worker thread, step by step, smallest tiles
    first: at most ``chunk`` micro patches (one forward pass) a step; ``cache_bytes`` of PNG kept
    (0: none); past ``max_queued`` queued patches :class:`Busy` (an empty queue takes any tile)."""

    def __init__(self, model: CocoGAN, *, raw: bool = False, chunk: int = DEFAULT_CHUNK,
                 cache_bytes: int = 64 << 20, max_queued: int = MAX_QUEUED_PATCHES) -> None:
        self.model = model
        self.generator = pick_generator(model, raw)
        self.chunk = chunk
        self.cache = LRUCache(cache_bytes)
        self.max_queued = max_queued
        self.stats = Stats()
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="cocogan-render")
        self.queued = 0  # micro patches left to render in live jobs
        self.seconds_per_patch = 0.0  # running estimate (0: unknown, the first step is chunk)
        self._heap: list[tuple[int, int, _Job]] = []  # (remaining, arrival, job)
        self._arrival = count()
        self._jobs: dict[tuple, _Job] = {}
        self._worker: asyncio.Task | None = None

    async def tile(self, latent: Latent, box: PixelBox) -> bytes:
        """PNG bytes of ``box`` for ``latent``, from the cache or the queue. Cancelling the call
        (the client went away) withdraws its interest: a tile nobody waits for is dropped."""
        key = (latent.key, box.top, box.left, box.height, box.width)
        cached = self.cache.get(key)
        if cached is not None:
            self.stats.hits += 1
            return cached
        job = self._jobs.get(key)
        if job is not None and job.waiters >= MAX_WAITERS:
            self.stats.refused += 1
            raise Busy(f"{job.waiters} requests already wait for this tile; retry shortly (it "
                       "will come from the cache)")
        if job is not None:  # the same tile is already queued: share its result
            self.stats.hits += 1
            job.waiters += 1
        else:
            job = self._enqueue(key, latent, box)
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            job.waiters -= 1
            if job.waiters == 0 and not job.future.done():  # nobody waits: forget it
                self._forget(job)
                job.future.cancel()
                self.stats.dropped += 1
            raise

    def _enqueue(self, key: tuple, latent: Latent, box: PixelBox) -> _Job:
        rect = covering_rect(self.model.coords, box)
        if self.queued and self.queued + rect.count > self.max_queued:
            self.stats.refused += 1
            raise Busy(f"{self.queued} micro patches are queued (at most {self.max_queued}); "
                       "retry shortly")
        rows, cols = rect.positions()
        job = _Job(key, latent, box, rect, rows, cols, asyncio.get_running_loop().create_future())
        self._jobs[key] = job
        heapq.heappush(self._heap, (job.unscheduled, next(self._arrival), job))
        self.queued += rect.count
        self.stats.peak_queued = max(self.stats.peak_queued, self.queued)
        if self._worker is None or self._worker.done():
            self._worker = asyncio.create_task(self._drain())
        return job

    def _forget(self, job: _Job) -> None:
        """Take a job out of the queue (its heap entry is skipped when popped)."""
        job.dropped = True
        job.parts.clear()
        self.queued -= job.unscheduled
        self._jobs.pop(job.key, None)

    async def run(self, function: Callable[..., T], *args: object) -> T:
        """Run a model call on the render thread (so it never overlaps tile rendering)."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, function, *args)

    async def _drain(self) -> None:
        await asyncio.sleep(BATCH_WINDOW_S)  # let the browser's parallel requests arrive
        while True:
            work = self._next_step()
            if not work:
                return
            start = time.perf_counter()
            try:
                finished = await self.run(self.render_step, work)
            except Exception as error:
                for job in {job for job, _ in work if not job.dropped}:
                    self._forget(job)
                    job.future.set_exception(error)
                continue
            spp = (time.perf_counter() - start) / sum(n for _, n in work)
            self.seconds_per_patch = spp if not self.seconds_per_patch else (
                0.7 * self.seconds_per_patch + 0.3 * spp)
            for job, png in finished:
                if not job.dropped:
                    self._jobs.pop(job.key, None)
                    self.cache.put(job.key, png)
                    job.future.set_result(png)
            await asyncio.sleep(0)  # new arrivals and disconnects are seen between steps

    def _next_step(self) -> list[tuple[_Job, int]]:
        """(job, patches) of the next step: fewest remaining patches first, at most ``chunk``
        in all and about :data:`STEP_TARGET_S` seconds of work."""
        work: list[tuple[_Job, int]] = []
        budget = self.chunk
        if self.seconds_per_patch:
            budget = max(1, min(budget, int(STEP_TARGET_S / self.seconds_per_patch)))
        while budget and self._heap:
            _, arrival, job = heapq.heappop(self._heap)
            if job.dropped:
                continue
            take = min(job.unscheduled, budget)
            work.append((job, take))
            budget -= take
            self.queued -= take
            job.scheduled += take
            if job.unscheduled:  # the rest waits for a later step, ahead of later arrivals
                heapq.heappush(self._heap, (job.unscheduled, arrival, job))
        return work

    def render_step(self, work: list[tuple[_Job, int]]) -> list[tuple[_Job, bytes]]:
        """Render the next ``n`` patches of each (job, n); PNG bytes of the jobs it finishes.
        The slices of one latent share one :func:`render_patches` call."""
        groups: dict[str, list[tuple[_Job, int]]] = {}
        for job, n in work:
            groups.setdefault(job.latent.key, []).append((job, n))
        finished = []
        with evaluating(self.generator):
            for items in groups.values():
                rows = torch.cat([j.rows[j.done:j.done + n] for j, n in items])
                cols = torch.cat([j.cols[j.done:j.done + n] for j, n in items])
                z = items[0][0].latent.z[None].to(self.model.device)  # (1, Z)
                patches = render_patches(self.generator, self.model.coords, z, rows, cols,
                                         chunk=self.chunk)[0].cpu()  # (p, 3, m, m)
                self.stats.passes += -(-rows.numel() // self.chunk)
                for (job, n), part in zip(items, patches.split([n for _, n in items]), strict=True):
                    job.parts.append(part)
                    job.done += n
                    if job.done == job.rows.numel() and not job.dropped:
                        finished.append((job, self._encode(job)))
        self.stats.tiles += len(finished)
        self.stats.batches += 1
        self.stats.peak_step = max(self.stats.peak_step, sum(n for _, n in work))
        return finished

    def _encode(self, job: _Job) -> bytes:
        """Assemble a finished job's patches and cut its box: PNG bytes."""
        part, rect = torch.cat(job.parts)[None], job.rect  # (1, P, 3, m, m)
        job.parts.clear()
        region = assemble(part, job.rows - rect.top, job.cols - rect.left)[0]  # (3, h, w)
        buffer = io.BytesIO()  # a fast zlib level: tiles are small and short-lived
        pixels = trim(region, rect, job.box, self.model.coords.micro)
        Image.fromarray(to_uint8(pixels)).save(buffer, format="PNG", compress_level=3)
        return buffer.getvalue()

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
