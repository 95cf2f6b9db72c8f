"""The ASGI application of `cocogan serve`: the page, run descriptions, tiles and inspiration.

Routes (``RUN`` is the index of a run given to ``cocogan serve``):

- ``GET /``: the viewer page; ``/static/*`` its script and style (package data, no CDN).
- ``GET /api/runs``: what the page needs to know about each run (sizes, tile side, options).
- ``GET /api/runs/RUN/tile?y=&x=&seed=[&seed2=&t=][&z=][&size=]``: one PNG tile (see
  :mod:`cocogan.serve.tiles`); ``z`` is a base64url float32 latent instead of a seed.
- ``POST /api/runs/RUN/inspire?top=&left=``: the request body is an image (PNG, JPEG, WebP,
  GIF or BMP, resized to the run's size); the macro patch at (top, left) is read by D's content
  and spatial heads (paper Section 3.4) and the estimated latent and position come back as JSON.
- ``GET /api/stats``: render counters.

Bad parameters get a 400 with a one-line JSON ``error``; uploads are read into memory up to a
size limit and decoded by Pillow from an allow-list of formats; nothing in a request names a
file, and nothing is unpickled.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import io
import math
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from starlette.applications import Starlette
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from cocogan.apps.inspire import check_patch, content_warning, crop_patch, estimate, macro_size
from cocogan.apps.io import image_tensor
from cocogan.checkpoint import load_model, resolve_checkpoint
from cocogan.config import Config
from cocogan.model import CocoGAN
from cocogan.render import DEFAULT_CHUNK
from cocogan.serve.tiles import (
    MAX_ABS_Z,
    MAX_BEYOND,
    MAX_TILE,
    Busy,
    TileError,
    TileRenderer,
    default_tile,
    explicit_latent,
    seed_latent,
    tile_box,
)

STATIC = Path(__file__).parent / "static"
MAX_UPLOAD_BYTES = 4 << 20  # inspiration uploads are held in memory, never written
MAX_UPLOAD_PIXELS = 4096 * 4096  # checked from the header, before decoding
UPLOAD_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
TILE_CACHE_CONTROL = "private, max-age=3600"  # a tile is a pure function of its URL and run


@dataclass
class ServedRun:
    """One loaded run and its renderer."""

    name: str  # shown in the page: the run directory or checkpoint path
    config: Config
    model: CocoGAN
    step: int
    renderer: TileRenderer
    version: str  # changes with the checkpoint; part of every ETag

    def describe(self, index: int) -> dict:
        model, coords = self.config.model, self.model.coords
        height, width = macro_size(self.model)
        return {
            "id": index, "name": self.name, "preset": self.config.name, "step": self.step,
            "height": model.full_height, "width": model.full_width, "micro": coords.micro,
            "macro": [height, width], "cyclic": coords.cyclic, "z_dim": model.z_dim,
            "tile": default_tile(coords), "max_tile": MAX_TILE,
            "reach": MAX_BEYOND * coords.micro,
            "extrapolate": self.config.train.extrapolate,
            "content_loss": self.config.train.w_content > 0,
            "content_warning": content_warning(self.config),
            "version": self.version,
        }


def served_run(name: str, config: Config, model: CocoGAN, step: int, checkpoint: Path, *,
               raw: bool = False, chunk: int, cache_bytes: int, max_pending: int) -> ServedRun:
    """Wrap a loaded model for serving."""
    digest = hashlib.sha1(f"{checkpoint.resolve()}:{checkpoint.stat().st_mtime_ns}:{raw}"
                          .encode()).hexdigest()[:12]
    renderer = TileRenderer(model, raw=raw, chunk=chunk, cache_bytes=cache_bytes,
                            max_pending=max_pending)
    return ServedRun(name, config, model, step, renderer, digest)


def load_runs(paths: list[str] | list[Path], device: str | torch.device = "cpu", *,
              raw: bool = False, chunk: int = DEFAULT_CHUNK, cache_bytes: int = 64 << 20,
              max_pending: int = 256) -> list[ServedRun]:
    """Load each run directory or checkpoint file (newest checkpoint) for serving."""
    runs = []
    for path in paths:
        checkpoint = resolve_checkpoint(path)
        config, model, step = load_model(checkpoint, device)
        runs.append(served_run(str(path), config, model, step, checkpoint, raw=raw,
                               chunk=chunk, cache_bytes=cache_bytes, max_pending=max_pending))
    return runs


def create_app(runs: list[ServedRun]) -> Starlette:
    """The Starlette app serving ``runs`` (at least one)."""
    assert runs, "create_app needs at least one run"

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status)

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
                              **run.renderer.stats.to_dict()} for run in runs])

    async def tile(request: Request) -> Response:
        run = pick(request)
        query = request.query_params
        known = {"y", "x", "size", "seed", "seed2", "t", "z", "v"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise _HTTPError(400, f"unknown parameter(s) {', '.join(unknown)}; a tile takes "
                             f"{', '.join(sorted(known))}")
        coords = run.model.coords
        y, x = _int(query, "y"), _int(query, "x")
        size = _optional_int(query, "size", default_tile(coords))
        box = tile_box(coords, y, x, size)
        z_dim = run.config.model.z_dim
        if "z" in query:
            if {"seed", "seed2", "t"} & set(query):
                raise _HTTPError(400, "pass either z or seed (with seed2 and t), not both")
            latent = explicit_latent(z_dim, _base64(query["z"]))
        else:
            seed2 = _optional_int(query, "seed2", None)
            t = _float(query, "t", 0.0)
            if seed2 is None and t != 0.0:
                raise _HTTPError(400, "t needs seed2 (interpolation from seed to seed2)")
            latent = seed_latent(z_dim, _optional_int(query, "seed", 0), seed2, t)
        etag = f'"{run.version}-{hashlib.sha1(repr((latent.key, box)).encode()).hexdigest()[:16]}"'
        headers = {"Cache-Control": TILE_CACHE_CONTROL, "ETag": etag}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        png = await run.renderer.tile(latent, box)
        return Response(png, media_type="image/png", headers=headers)

    async def inspire(request: Request) -> Response:
        run = pick(request)
        query = request.query_params
        top, left = _int(query, "top"), _int(query, "left")
        data = await _read_body(request)
        image = await run.renderer.run(_decode_upload, data, run.config)
        model = run.model
        patch = check_patch(model, crop_patch(model, image, top, left), "the picked patch")
        z, coords = await run.renderer.run(estimate, model, patch[None])
        rows, cols = model.coords.nearest_macro(coords.cpu())
        est_top, est_left = model.coords.pixel_offset(rows, cols)
        # Within the bound the tile route accepts (an estimate that far out means nothing).
        z32 = z[0].detach().float().cpu().clamp(-MAX_ABS_Z, MAX_ABS_Z).contiguous()
        return JSONResponse({
            "z": base64.urlsafe_b64encode(z32.numpy().tobytes()).decode().rstrip("="),
            "top": int(est_top[0]), "left": int(est_left[0]),
            "row": int(rows[0]), "col": int(cols[0]),
            "warning": content_warning(run.config),
        })

    async def handle(request: Request, exc: Exception) -> Response:
        if isinstance(exc, _HTTPError):
            return error(exc.status, str(exc))
        if isinstance(exc, Busy):
            return JSONResponse({"error": str(exc)}, status_code=503,
                                headers={"Retry-After": "1"})
        return error(400, (str(exc).strip().splitlines() or [type(exc).__name__])[0])

    routes = [
        Route("/", page),
        Route("/api/runs", list_runs),
        Route("/api/stats", stats),
        Route("/api/runs/{run:int}/tile", tile),
        Route("/api/runs/{run:int}/inspire", inspire, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    handlers = {_HTTPError: handle, Busy: handle, ValueError: handle}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        for run in runs:
            run.renderer.close()

    return Starlette(routes=routes, exception_handlers=handlers,  # type: ignore[arg-type]
                     lifespan=lifespan)


class _HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _int(query: QueryParams, name: str) -> int:
    """A required integer query parameter."""
    if name not in query:
        raise _HTTPError(400, f"missing parameter {name} (an integer)")
    return _optional_int(query, name, 0)


def _optional_int(query: QueryParams, name: str, default: int | None) -> int | None:
    if name not in query:
        return default
    try:
        return int(query[name])
    except ValueError:
        raise _HTTPError(400, f"{name}={query[name]!r} is not an integer") from None


def _float(query: QueryParams, name: str, default: float) -> float:
    if name not in query:
        return default
    try:
        value = float(query[name])
    except ValueError:
        raise _HTTPError(400, f"{name}={query[name]!r} is not a number") from None
    if not math.isfinite(value):
        raise _HTTPError(400, f"{name}={query[name]!r} must be finite")
    return value


def _base64(text: str) -> bytes:
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=b"-_", validate=True)
    except ValueError:  # binascii.Error is a ValueError
        raise TileError("z must be base64url-encoded float32 values") from None


async def _read_body(request: Request) -> bytes:
    """The request body, refused with 413 once it passes :data:`MAX_UPLOAD_BYTES`."""
    limit = MAX_UPLOAD_BYTES
    too_big = _HTTPError(413, f"upload larger than {limit >> 20} MiB; send a smaller image")
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_big
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise too_big
        chunks.append(chunk)
    if not total:
        raise _HTTPError(400, "empty body: POST the image file's bytes")
    return b"".join(chunks)


def _decode_upload(data: bytes, config: Config) -> torch.Tensor:
    """Decode an uploaded image safely and resize it to the run's full size: (3, H, W)."""
    try:
        with Image.open(io.BytesIO(data), formats=UPLOAD_FORMATS) as handle:
            width, height = handle.size
            if width * height > MAX_UPLOAD_PIXELS:
                raise _HTTPError(413, f"image of {width}x{height} pixels is too large; at most "
                                 f"{MAX_UPLOAD_PIXELS} pixels")
            handle.load()
            size = (config.model.full_width, config.model.full_height)
            resized = handle.convert("RGBA").resize(size, Image.Resampling.LANCZOS)
    except (OSError, Image.DecompressionBombError, SyntaxError):
        raise _HTTPError(415, f"the body is not a readable image; send one of "
                         f"{', '.join(UPLOAD_FORMATS)}") from None
    return image_tensor(resized)
