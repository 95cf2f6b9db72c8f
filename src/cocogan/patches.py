"""Patch operations (paper Section 2): merge T(m->M), crop T(X->M), split and assemble,
vectorised over the batch.

Shapes: B batch, P micro patches per macro patch (row-major), C channels, h/w micro patch
height/width, H/W image height/width.
"""

from __future__ import annotations

import torch
from torch import Tensor


def merge(micro: Tensor, rows: int, cols: int) -> Tensor:
    """T(m->M): micro patches (B, P, C, h, w), P = rows * cols row-major, into one patch
    (B, C, rows * h, cols * w) per sample."""
    batch, count, channels, height, width = micro.shape
    assert count == rows * cols, f"merge: got {count} patches, expected {rows}x{cols}"
    grid = micro.reshape(batch, rows, cols, channels, height, width)
    grid = grid.permute(0, 3, 1, 4, 2, 5)  # (B, C, rows, h, cols, w)
    return grid.reshape(batch, channels, rows * height, cols * width)


def split(images: Tensor, patch: int) -> Tensor:
    """Inverse of :func:`merge`: (B, C, H, W) -> (B, P, C, patch, patch), row-major."""
    batch, channels, height, width = images.shape
    assert height % patch == 0 and width % patch == 0, \
        f"split: image {height}x{width} is not a multiple of patch {patch}"
    rows, cols = height // patch, width // patch
    grid = images.reshape(batch, channels, rows, patch, cols, patch)
    grid = grid.permute(0, 2, 4, 1, 3, 5)  # (B, rows, cols, C, patch, patch)
    return grid.reshape(batch, rows * cols, channels, patch, patch)


def crop(images: Tensor, top: Tensor, left: Tensor, height: int, width: int,
         *, wrap: bool = False, check: bool = True) -> Tensor:
    """T(X->M): cut a (B, C, height, width) window of images (B, C, H, W) at per-sample pixel
    offsets ``top``, ``left`` (B,). ``wrap``: wrap columns around the horizontal seam
    (panoramas); ``check``: raise on windows that leave the image (False skips the test, a GPU
    sync, for offsets valid by construction)."""
    batch, _, full_h, full_w = images.shape
    top, left = top.to(images.device).long(), left.to(images.device).long()
    if check and not wrap and bool(((left < 0) | (left + width > full_w)).any()):
        raise ValueError(f"crop: window of width {width} leaves the {full_w}-pixel-wide image")
    if check and bool(((top < 0) | (top + height > full_h)).any()):
        raise ValueError(f"crop: window of height {height} leaves the {full_h}-pixel-high image")
    row_index = top[:, None] + torch.arange(height, device=images.device)  # (B, height)
    col_index = left[:, None] + torch.arange(width, device=images.device)  # (B, width)
    if wrap:
        col_index = torch.remainder(col_index, full_w)
    sample = torch.arange(batch, device=images.device)[:, None, None]
    window = images.permute(0, 2, 3, 1)[sample, row_index[:, :, None], col_index[:, None, :]]
    return window.permute(0, 3, 1, 2)  # (B, C, height, width)


def assemble(patches: Tensor, rows: Tensor, cols: Tensor) -> Tensor:
    """Place patches (B, P, C, h, w) at integer grid positions ``rows``/``cols`` (P,), in any
    order, that fill a rectangle exactly once: returns it, (B, C, n_rows * h, n_cols * w)."""
    rows, cols = rows.long().cpu(), cols.long().cpu()  # geometry on the host: no device reads
    row0, col0 = int(rows.min()), int(cols.min())
    n_rows, n_cols = int(rows.max()) - row0 + 1, int(cols.max()) - col0 + 1
    slot = (rows - row0) * n_cols + (cols - col0)  # (P,) row-major slot of each patch
    if slot.numel() != n_rows * n_cols or torch.unique(slot).numel() != slot.numel():
        raise ValueError(f"assemble: {slot.numel()} positions do not tile a "
                         f"{n_rows}x{n_cols} rectangle exactly once")
    ordered = torch.empty_like(patches)
    ordered[:, slot.to(patches.device)] = patches
    return merge(ordered, n_rows, n_cols)


def tile_images(images: Tensor, columns: int, pad: int = 2, fill: float = 1.0) -> Tensor:
    """Lay (N, C, H, W) images out ``columns`` per row, ``pad`` pixels of ``fill`` between and
    around them (a picture grid is a merge of padded images): returns (C, H', W')."""
    count, channels, height, width = images.shape
    rows = -(-count // columns)
    padded = torch.full((rows * columns, channels, height + pad, width + pad), fill,
                        dtype=images.dtype, device=images.device)
    padded[:count, :, pad:, pad:] = images
    grid = merge(padded.unsqueeze(0), rows, columns)[0]  # (C, rows * (H + pad), cols * (W + pad))
    return torch.nn.functional.pad(grid, (0, pad, 0, pad), value=fill)
