"""Small outputs of the applications (PNG, GIF, grids, boxes, JSON sidecars that say what
produced each image) and the value syntaxes the commands share (seeds ``0-15,20``, tuples).
Tensors are (3, H, W) in [-1, 1], arrays (H, W, 3) uint8; B batch, F frames.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cocogan.data.imaging import to_rgb, to_tensor
from cocogan.outputs import atomic_write
from cocogan.patches import tile_images
from cocogan.version import __version__

MAX_SEEDS = 1_000_000  # a guard against typos such as 0-1000000000
MAX_SEED = 2**63 - 1  # torch.Generator.manual_seed takes a signed 64-bit integer


@dataclass(frozen=True)
class Provenance:
    """Where generated images come from; the common part of every sidecar."""

    checkpoint: str  # weights file that was loaded
    step: int  # training step of the checkpoint
    preset: str  # config name stored in the checkpoint
    generator: str  # "ema" (default) or "raw"

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "cocogan_version": __version__}


# ---- parsing ---------------------------------------------------------------------------------
def parse_seeds(text: str, flag: str = "--seeds") -> list[int]:
    """``"0-3,7,10-11"`` -> [0, 1, 2, 3, 7, 10, 11] (order kept, repeats dropped)."""
    seeds: dict[int, None] = {}  # ordered set
    for part in (p.strip() for p in str(text).split(",")):
        low, sep, high = part.partition("-")
        try:
            start = int(low)
            stop = int(high) if sep else start
        except ValueError:
            raise ValueError(f"{flag} expects non-negative integers and ranges like 0-15,20, "
                             f"got {text!r}") from None
        if start < 0 or stop < start or stop > MAX_SEED:
            raise ValueError(f"{flag}: {part!r} must be a seed or a range LOW-HIGH with "
                             f"0 <= LOW <= HIGH <= {MAX_SEED} (2^63 - 1)")
        if len(seeds) + stop - start + 1 > MAX_SEEDS:
            raise ValueError(f"{flag}: more than {MAX_SEEDS} seeds requested in {text!r}")
        seeds.update(dict.fromkeys(range(start, stop + 1)))
    return list(seeds)


def parse_numbers(text: str, flag: str, counts: Sequence[int], kind: type = int) -> list:
    """Comma-separated numbers, e.g. ``--box 0,0,16,16``; the count must be one of ``counts``."""
    try:
        values = [kind(v) for v in str(text).split(",")]
    except ValueError:
        raise ValueError(f"{flag} expects {kind.__name__} values separated by commas, "
                         f"got {text!r}") from None
    if len(values) not in counts:
        wanted = " or ".join(str(c) for c in counts)
        raise ValueError(f"{flag} expects {wanted} comma-separated values, got {text!r}")
    if kind is float and not all(math.isfinite(v) for v in values):
        raise ValueError(f"{flag} values must be finite, got {text!r}")
    return values


# ---- conversion ------------------------------------------------------------------------------
def to_uint8(images: Tensor) -> np.ndarray:
    """(..., 3, H, W) in [-1, 1] -> (..., H, W, 3) uint8, rounding to the nearest grey level."""
    scaled = ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return np.ascontiguousarray(scaled.to(torch.uint8).movedim(-3, -1).numpy())


def load_image(path: str | Path) -> Tensor:
    """An RGB image file as (3, H, W) in [-1, 1]; transparency is composited onto white."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image {path} does not exist")
    try:
        with Image.open(path) as handle:
            return to_tensor(to_rgb(handle))  # the data loader's decoder
    except Image.DecompressionBombError:
        raise ValueError(f"image {path} is too large to decode safely (over "
                         f"{Image.MAX_IMAGE_PIXELS * 2 // 1_000_000} megapixels): resize it "
                         "first") from None
    except (OSError, SyntaxError, ValueError) as error:  # PIL's decode failures
        if isinstance(error, OSError) and error.errno:
            raise  # a file-system error (permissions...): the CLI names it
        raise ValueError(f"image {path} cannot be decoded ({str(error).strip() or 'unknown'}):"
                         " pass a PNG or JPEG image file") from None


def image_grid(images: Tensor, columns: int | None = None, pad: int = 2,
               fill: float = 1.0) -> Tensor:
    """Tile (B, 3, H, W) images into one (3, H', W') picture, ``pad`` pixels of ``fill`` apart."""
    batch = images.shape[0]
    columns = max(1, min(columns or math.ceil(math.sqrt(batch)), batch))
    return tile_images(images, columns, pad, fill)


def draw_box(image: np.ndarray, top: int, left: int, height: int, width: int,
             colour: tuple[int, int, int], wrap: bool = False) -> np.ndarray:
    """A copy of (H, W, 3) uint8 ``image`` with a 1-pixel rectangle outline (``wrap``: columns)."""
    out = image.copy()
    full_w = out.shape[1]
    rows = np.arange(top, top + height)
    cols = np.arange(left, left + width)
    cols = np.mod(cols, full_w) if wrap else cols[(cols >= 0) & (cols < full_w)]
    rows = rows[(rows >= 0) & (rows < out.shape[0])]
    edge_rows = np.concatenate([rows[:1], rows[-1:]])
    edge_cols = np.concatenate([cols[:1], cols[-1:]])
    out[np.ix_(edge_rows, cols)] = colour
    out[np.ix_(rows, edge_cols)] = colour
    return out


# ---- writing ---------------------------------------------------------------------------------
def save_png(path: str | Path, image: Tensor | np.ndarray) -> Path:
    """Write one image, (3, H, W) in [-1, 1] or (H, W, 3) uint8, as PNG (atomic)."""
    array = to_uint8(image) if isinstance(image, Tensor) else image
    return atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def save_gif(path: str | Path, frames: Tensor, fps: float = 8.0) -> Path:
    """Write (F, 3, H, W) frames in [-1, 1] as a looping GIF."""
    images = [Image.fromarray(a) for a in to_uint8(frames)]
    duration = max(20, round(1000.0 / fps))
    return atomic_write(Path(path), lambda tmp: images[0].save(
        tmp, format="GIF", save_all=True, append_images=images[1:], duration=duration, loop=0,
        optimize=False))


def write_sidecar(image_path: str | Path, provenance: Provenance, **fields: Any) -> Path:
    """Write ``<image>.json`` next to an image: the provenance plus app-specific fields."""
    payload = {**provenance.to_dict(), **fields}
    text = json.dumps(payload, indent=2, default=_jsonable) + "\n"
    return atomic_write(Path(image_path).with_suffix(".json"), lambda tmp: tmp.write_text(text))


def _jsonable(value: Any) -> Any:
    if isinstance(value, Tensor):
        return value.detach().cpu().tolist()
    if isinstance(value, np.ndarray | np.generic):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot write {type(value).__name__} to a JSON sidecar")
