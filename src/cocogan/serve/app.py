"""The ASGI application of `cocogan serve`: the page, run descriptions, tiles and inspiration
(routes and limits: docs/serve.md, "HTTP API"). Every request passes :mod:`cocogan.serve.guard`
first; bad parameters get a 400 with a one-line JSON ``error``; uploads stay in memory, bounded
in size and time, decoded from an allow-list of formats; no request names a file."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import hashlib
import io
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image, ImageOps
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cocogan.apps.backend import use_backend
from cocogan.apps.inspire import check_patch, content_warning, crop_patch, macro_size
from cocogan.apps.inspire import inspire as inspire_patch
from cocogan.checkpoint import load_model, resolve_checkpoint
from cocogan.config import Config
from cocogan.data.imaging import fit_stretch, to_rgb, to_tensor
from cocogan.model import CocoGAN
from cocogan.outputs import first_line
from cocogan.render import DEFAULT_CHUNK
from cocogan.serve import tiles
from cocogan.serve.guard import HostRule, guard

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 4 << 20  # inspiration uploads are held in memory, never written
MAX_UPLOAD_PIXELS = 4096 * 4096  # checked from the header, before decoding
MAX_UPLOADS = 4  # uploads decoded and read by D at once (a decoded upload is large)
MAX_RECEIVING_BYTES = 16 * MAX_UPLOAD_BYTES  # bytes of uploads still arriving, all together
BODY_TIMEOUT_S = 30.0  # the whole upload must arrive within this time (408 past it)
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
CLIENT_GONE = 499  # status of a response nobody receives (the client disconnected)
TILE_CACHE_CONTROL = "private, max-age=3600"  # a tile is a pure function of its URL and run


@dataclass
class ServedRun:
    """One loaded run and its renderer."""

    name: str  # shown in the page
    config: Config
    model: CocoGAN
    step: int
    renderer: tiles.TileRenderer
    version: str  # changes with the checkpoint; part of every ETag

    def describe(self, index: int) -> dict:
        model, coords = self.config.model, self.model.coords
        return {
            "id": index, "name": self.name, "preset": self.config.name, "step": self.step,
            "height": model.full_height, "width": model.full_width, "micro": coords.micro,
            "macro": list(macro_size(self.model)), "cyclic": coords.cyclic, "z_dim": model.z_dim,
            "tile": tiles.default_tile(coords), "max_tile": tiles.MAX_TILE,
            "reach": tiles.MAX_BEYOND * coords.micro, "extrapolate": self.config.loss.extrapolate,
            "content_loss": self.config.loss.w_content > 0,
            "content_warning": content_warning(self.config), "version": self.version,
        }


def load_runs(paths: list[str] | list[Path], device: str | torch.device = "cpu", *,
              raw: bool = False, chunk: int = DEFAULT_CHUNK, cache_bytes: int = 64 << 20,
              max_queued: int = tiles.MAX_QUEUED_PATCHES, backend: str = "torch"
              ) -> list[ServedRun]:
    """Load each run directory or checkpoint file (newest checkpoint) for serving, sampled
    through ``backend`` (:func:`cocogan.apps.backend.use_backend`)."""
    runs = []
    for path in paths:
        checkpoint = resolve_checkpoint(path)
        config, model, step = load_model(checkpoint, device)
        use_backend(model, backend, raw=raw)
        version = hashlib.sha1(f"{checkpoint.resolve()}:{checkpoint.stat().st_mtime_ns}:{raw}"
                               .encode()).hexdigest()[:12]  # changes with the checkpoint
        renderer = tiles.TileRenderer(model, raw=raw, chunk=chunk, cache_bytes=cache_bytes,
                                max_queued=max_queued)
        parts = [part for part in Path(path).parts if part not in ("/", "\\", ".", "..")]
        name = "/".join(parts[-2:]) or "run"  # the last two parts: never an absolute path
        runs.append(ServedRun(name, config, model, step, renderer, version))
    return runs


def create_app(runs: list[ServedRun], hosts: HostRule | None = None) -> Callable:
    """The ASGI app serving ``runs`` (at least one), answering only to ``hosts`` (default:
    the loopback names, :func:`cocogan.serve.guard.host_rule`)."""
    assert runs, "create_app needs at least one run"
    decoding, receiving = asyncio.Semaphore(MAX_UPLOADS), [0]  # bytes of uploads arriving: [0]

    def pick(request: Request) -> ServedRun:
        index = request.path_params["run"]
        if not 0 <= index < len(runs):
            raise _HTTPError(404, f"run {index} does not exist; this server has runs "
                             f"0..{len(runs) - 1} (GET /api/runs)")
        return runs[index]

    async def page(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-cache"})

    async def list_runs(request: Request) -> Response:
        return JSONResponse([run.describe(i) for i, run in enumerate(runs)])

    async def stats(request: Request) -> Response:
        return JSONResponse([{"cache_tiles": len(run.renderer.cache),
                              "cache_bytes": run.renderer.cache.bytes,
                              **dataclasses.asdict(run.renderer.stats)} for run in runs])

    async def tile(request: Request) -> Response:
        run = pick(request)
        query = request.query_params
        known = {"y", "x", "size", "seed", "seed2", "t", "z", "v"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise _HTTPError(400, f"unknown parameter(s) {', '.join(unknown)}; a tile takes "
                             f"{', '.join(sorted(known))}")
        coords = run.model.coords
        box = tiles.tile_box(coords, _param(query, "y"), _param(query, "x"),
                             _param(query, "size", tiles.default_tile(coords)))
        z_dim = run.config.model.z_dim
        if "z" in query:
            if {"seed", "seed2", "t"} & set(query):
                raise _HTTPError(400, "pass either z or seed (with seed2 and t), not both")
            latent = tiles.explicit_latent(z_dim, query["z"])
        else:
            seed2 = _param(query, "seed2", None)
            t = _param(query, "t", 0.0, float)
            if seed2 is None and t != 0.0:
                raise _HTTPError(400, "t needs seed2 (interpolation from seed to seed2)")
            latent = tiles.seed_latent(z_dim, _param(query, "seed", 0), seed2, t,
                                 phase=run.config.model.z_phase)
        etag = f'"{run.version}-{hashlib.sha1(repr((latent.key, box)).encode()).hexdigest()[:16]}"'
        headers = {"Cache-Control": TILE_CACHE_CONTROL, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        png = await _unless_disconnected(request, run.renderer.tile(latent, box))
        return Response(status_code=CLIENT_GONE) if png is None else \
            Response(png, media_type="image/png", headers=headers)

    async def inspire(request: Request) -> Response:
        run = pick(request)
        query = request.query_params
        model = run.model
        height, width = macro_size(model)
        full_h, full_w = run.config.model.full_height, run.config.model.full_width
        top = _param(query, "top", low=0, high=full_h - height)
        left = _param(query, "left", low=0, high=full_w - (1 if model.coords.cyclic else width))
        data = await _read_body(request, receiving)  # a slow upload holds no decoding slot
        if decoding.locked():
            raise tiles.Busy(f"{MAX_UPLOADS} inspirations are in progress; retry shortly")
        async with decoding:
            image = await run.renderer.run(_decode_upload, data, run.config)
        patch = check_patch(model, crop_patch(model, image, top, left), "the picked patch")
        found = await run.renderer.run(inspire_patch, model, patch[None])  # panorama: searched
        bound = tiles.MAX_ABS_Z  # what the tile route accepts (an estimate that far means nothing)
        z32 = found.z[0].detach().float().cpu().clamp(-bound, bound).contiguous()
        return JSONResponse({
            "z": base64.urlsafe_b64encode(z32.numpy().tobytes()).decode().rstrip("="),
            "top": int(found.top[0]), "left": int(found.left[0]),
            "row": int(found.rows[0]), "col": int(found.cols[0]),
            "warning": content_warning(run.config),
        })

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, tiles.Busy):
            return JSONResponse({"error": str(exc)}, 503, headers={"Retry-After": "1"})
        status = exc.status if isinstance(exc, _HTTPError) else 400
        return JSONResponse({"error": first_line(exc)}, status)

    routes = [
        Route("/", page),
        Route("/api/runs", list_runs),
        Route("/api/stats", stats),
        Route("/api/runs/{run:int}/tile", tile),
        Route("/api/runs/{run:int}/inspire", inspire, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {_HTTPError: handle, tiles.Busy: handle, ValueError: handle}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for run in runs:
            run.renderer.close()

    app = Starlette(routes=routes, exception_handlers=handlers,  # type: ignore[arg-type]
                    lifespan=lifespan)
    return guard(app, hosts)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


_REQUIRED = object()


def _param(query: QueryParams, name: str, default: object = _REQUIRED, kind: type = int,
           low: int | None = None, high: int | None = None) -> Any:
    """A query parameter as an integer (within [low, high] when given) or a finite float."""
    if name not in query:
        if default is _REQUIRED:
            raise _HTTPError(400, f"missing parameter {name} (an integer)")
        return default
    text = query[name]
    shown = text if len(text) <= 40 else text[:40] + "..."  # one short line
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise _HTTPError(400, f"{name}={shown!r} is not {noun}") from None
    if kind is float and not math.isfinite(value):
        raise _HTTPError(400, f"{name}={shown!r} must be finite")
    if low is not None and high is not None and not low <= value <= high:
        raise _HTTPError(400, f"{name}={shown} must be an integer in [{low}, {high}]")
    return value


async def _unless_disconnected(request: Request, work: Awaitable[bytes]) -> bytes | None:
    """The result of ``work``, or None (and ``work`` cancelled) if the client disconnects."""
    async def gone() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    task, watch = asyncio.ensure_future(work), asyncio.ensure_future(gone())
    try:
        done, _ = await asyncio.wait({task, watch}, return_when=asyncio.FIRST_COMPLETED)
    except BaseException:
        task.cancel()
        raise
    finally:
        watch.cancel()
    if task in done:
        return task.result()
    task.cancel()  # the renderer withdraws the tile if nobody else waits for it
    return None


async def _read_body(request: Request, receiving: list[int]) -> bytes:
    """The body within MAX_UPLOAD_BYTES (413), BODY_TIMEOUT_S (408) and, with the other uploads
    arriving (``receiving[0]`` bytes), MAX_RECEIVING_BYTES (503): slow uploads hold no slot."""
    limit = MAX_UPLOAD_BYTES
    too_big = _HTTPError(413, f"upload larger than {limit >> 20} MiB; send a smaller image")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, total = [], 0
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.stream():
                total += len(chunk)
                receiving[0] += len(chunk)
                if total > limit:
                    raise too_big
                if receiving[0] > MAX_RECEIVING_BYTES:
                    raise tiles.Busy(f"more than {MAX_RECEIVING_BYTES >> 20} MiB of uploads are "
                               "arriving; retry shortly")
                chunks.append(chunk)
    except TimeoutError:
        raise _HTTPError(408, f"the upload did not arrive within {BODY_TIMEOUT_S:g} s; "
                         "send it again") from None
    finally:
        receiving[0] -= total
    if not total:
        raise _HTTPError(400, "empty body: POST the image file's bytes")
    return b"".join(chunks)


def _decode_upload(data: bytes, config: Config) -> torch.Tensor:
    """An uploaded image, decoded within the bounds by the data loader's decoder (as the same
    file reads in training and ``generate inspire``), at the run's full size: (3, H, W)."""
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as handle:
            width, height = handle.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise _too_large(f"{width}x{height}")
            handle.load()
            rgb = to_rgb(ImageOps.exif_transpose(handle))
    except Image.DecompressionBombError:  # Pillow's own bound, checked when the header is read
        raise _too_large("more than 178 million") from None
    except (OSError, SyntaxError, ValueError):
        raise _HTTPError(415, f"the body is not a readable image; send one of "
                         f"{', '.join(UPLOAD_FORMATS)}") from None
    return to_tensor(fit_stretch(rgb, config.model.full_height, config.model.full_width))


def _too_large(size: str) -> _HTTPError:
    return _HTTPError(413, f"image of {size} pixels is too large; at most "
                      f"{MAX_UPLOAD_PIXELS} pixels (4096x4096)")
