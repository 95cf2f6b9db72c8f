"""Patch-inspired image generation (paper Section 3.4, Figure 8; docs/applications.md).
D (eval mode) reads a macro patch: Q estimates z~ (eq. 4), the spatial head c~_M (eq. 3); G's
full image from z~ holds the "inspired" patch at that position. On a panorama the head gives
the row alone and the column whose macro patch is nearest (MSE) to the given one is searched.
Shapes: B batch, Z latent dims, S spatial head outputs, K columns, Mh/Mw macro patch, H/W image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from cocogan.apps.full import full_images
from cocogan.config import Config
from cocogan.model import CocoGAN
from cocogan.patches import crop
from cocogan.render import DEFAULT_CHUNK, evaluating


@dataclass
class Inspiration:
    """What patch-inspired generation estimates and generates for a batch of macro patches."""

    z: Tensor  # (B, Z) latents estimated by the content head
    coords: Tensor  # (B, S) the spatial head's estimate (y alone on a panorama)
    rows: Tensor  # (B,) nearest discrete macro position, grid units (long)
    cols: Tensor  # (B,) from the head, or on a panorama from the column search
    top: Tensor  # (B,) pixel box of that position in the full image (long)
    left: Tensor  # (B,)
    full: Tensor  # (B, 3, H, W) full images generated from z
    macro: Tensor  # (B, 3, Mh, Mw) generated macro patches at the estimated positions


def content_warning(config: Config) -> str | None:
    """A note when G trained without L_C (loss.w_content == 0): Q is trained either way and
    reads z back from G's patches, but nothing in G's objective kept z recoverable, so how
    closely the inspired image follows the patch is measured, not promised (docs/applications.md).
    """
    if config.loss.w_content > 0:
        return None
    return (f"run {config.name!r} was trained with loss.w_content=0: Q reads z from the patch, "
            "but G was not trained to keep z recoverable, so the inspired image may follow it "
            "loosely; patch-inspired presets (tiny-inspired, celeba128-inspired) train with L_C")


def macro_size(model: CocoGAN) -> tuple[int, int]:
    """(Mh, Mw) in pixels."""
    return model.config.macro, model.config.macro_w


def check_patch(model: CocoGAN, patch: Tensor, source: str = "--patch") -> Tensor:
    """Validate a (3, Mh, Mw) macro patch (e.g. loaded from a file)."""
    height, width = macro_size(model)
    if patch.ndim != 3 or patch.shape[0] != 3 or tuple(patch.shape[1:]) != (height, width):
        raise ValueError(f"{source} must be a {height}x{width} (height x width) macro patch of "
                         f"this run, got {tuple(patch.shape[1:])}")
    return patch


def crop_patch(model: CocoGAN, image: Tensor, top: int, left: int) -> Tensor:
    """Cut the macro patch at pixel (top, left) from a (3, H, W) image of the run's size."""
    full_h, full_w = model.config.full_height, model.config.full_width
    height, width = macro_size(model)
    if tuple(image.shape[1:]) != (full_h, full_w):
        raise ValueError(f"--image must be {full_h}x{full_w} (height x width) like the run's "
                         f"images, got {image.shape[1]}x{image.shape[2]}; resize it first or "
                         "pass a macro patch with --patch")
    cyclic = model.coords.cyclic
    if top < 0 or top + height > full_h or (not cyclic and (left < 0 or left + width > full_w)):
        raise ValueError(f"--box {top},{left} with the {height}x{width} macro patch leaves the "
                         f"{full_h}x{full_w} image")
    index = torch.tensor([top]), torch.tensor([left])
    return crop(image[None], *index, height, width, wrap=cyclic)[0]


def search_columns(model: CocoGAN, full: Tensor, patches: Tensor, rows: Tensor) -> Tensor:
    """The panorama's heading: for each patch (B, 3, Mh, Mw), the column (B,) whose macro
    patch of ``full`` (B, 3, H, W) at ``rows`` (B,) has the least mean squared error to it."""
    system, (height, width) = model.coords, macro_size(model)
    batch, k = patches.shape[0], system.grid_w
    top, left = system.pixel_offset(rows.float()[:, None].expand(batch, k),
                                    torch.arange(k).float()[None].expand(batch, k))  # (B, K)
    crops = crop(full.repeat_interleave(k, 0), top.reshape(-1).to(full.device),
                 left.reshape(-1).to(full.device), height, width, wrap=True)  # (B * K, 3, Mh, Mw)
    errors = (crops - patches.to(crops).repeat_interleave(k, 0)).square().mean(dim=(1, 2, 3))
    return errors.view(batch, k).argmin(dim=1).cpu()


def inspire(model: CocoGAN, patches: Tensor, *, raw: bool = False,
            chunk: int = DEFAULT_CHUNK) -> Inspiration:
    """Estimate z and position from each macro patch (B, 3, Mh, Mw), then generate from them."""
    assert patches.ndim == 4, f"patches: got {tuple(patches.shape)}, expected (B, 3, Mh, Mw)"
    check_patch(model, patches[0], "macro patch")
    disc = model.discriminator
    with torch.no_grad(), evaluating(disc):  # D's estimates z~ (B, Z) and c~_M (B, S)
        h = disc.features(patches.to(model.device))
        z, coords = disc.content(h), disc.spatial(h)
    system = model.coords
    full = full_images(model, z, raw=raw, chunk=chunk)
    rows, cols = system.nearest_macro(coords.cpu())
    if cols is None:  # a panorama: the head has no heading, search it (N1)
        cols = search_columns(model, full, patches, rows)
    top, left = system.pixel_offset(rows, cols)
    macro = crop(full, top, left, *macro_size(model), wrap=system.cyclic)
    return Inspiration(z=z, coords=coords, rows=rows, cols=cols, top=top, left=left, full=full,
                       macro=macro)
