"""Sample grids: full images tiled into one PNG (images come from :mod:`cocogan.render`).

Shapes: N images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from torch import Tensor

from cocogan.outputs import atomic_write
from cocogan.patches import tile_images


def tile(images: Tensor, columns: int | None = None, pad: int = 2) -> Tensor:
    """Tile (N, 3, H, W) images in [-1, 1] into one (3, H', W') image in [0, 1] on white."""
    count, _, height, width = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(count * height / width))))
    return tile_images((images.detach().float().cpu().clamp(-1, 1) + 1) / 2, columns, pad)


def save_png(image: Tensor, path: Path) -> None:
    """Write a (3, H, W) image in [0, 1] as an 8-bit PNG, atomically."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
