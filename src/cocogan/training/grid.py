"""Sample grids: full images assembled from micro patches, tiled into one PNG.

Each image's micro patches at every grid position come from one batched forward pass of the
(EMA) generator in eval mode (running BN statistics), then are placed with
:func:`cocogan.patches.assemble`. A minimal local helper: the applications layer owns the
general full-image generator (cocogan.apps), which training must not depend on.

Shapes: N images, P = K_y * K_x micro patches per full image, Z latent dims.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from cocogan.checkpoint import atomic_write
from cocogan.coords import CoordinateSystem
from cocogan.model import generate_micro
from cocogan.nn import Generator
from cocogan.patches import assemble

MAX_PATCHES_PER_PASS = 4096  # bounds memory: images are processed in chunks of whole images


@torch.no_grad()
def full_images(generator: Generator, coords: CoordinateSystem, z: Tensor) -> Tensor:
    """Full images for latents ``z`` (N, Z): (N, 3, H, W) in [-1, 1], on z's device."""
    was_training = generator.training
    generator.eval()
    rows, cols = coords.micro_grid()  # (P,) each, row-major
    per_chunk = max(1, MAX_PATCHES_PER_PASS // rows.numel())
    images = []
    for chunk in z.split(per_chunk):
        batch = chunk.shape[0]
        patches = generate_micro(generator, coords, chunk, rows.expand(batch, -1),
                                 cols.expand(batch, -1))  # (n, P, 3, micro, micro)
        images.append(assemble(patches.float(), rows, cols))
    generator.train(was_training)
    return torch.cat(images)


def tile(images: Tensor, columns: int | None = None, pad: int = 2) -> Tensor:
    """Tile (N, 3, H, W) images in [-1, 1] into one (3, H', W') image in [0, 1] on white."""
    count, channels, height, width = images.shape
    columns = columns or max(1, int(np.ceil(np.sqrt(count * height / width))))
    rows = int(np.ceil(count / columns))
    canvas = torch.ones(channels, rows * (height + pad) + pad, columns * (width + pad) + pad)
    for index, image in enumerate(images.detach().float().cpu()):
        r, c = divmod(index, columns)
        top, left = pad + r * (height + pad), pad + c * (width + pad)
        canvas[:, top:top + height, left:left + width] = (image.clamp(-1, 1) + 1) / 2
    return canvas


def save_png(image: Tensor, path: Path) -> None:
    """Write a (3, H, W) image in [0, 1] as an 8-bit PNG, atomically."""
    array = (image.clamp(0, 1) * 255).round().byte().permute(1, 2, 0).cpu().numpy()  # (H, W, 3)
    atomic_write(Path(path), lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))
