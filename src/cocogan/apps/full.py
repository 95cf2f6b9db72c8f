"""Full-image generation (paper Sections 2 and 3.1): every micro patch of a batch of images.

All (image, position) pairs of the batch go through G in as few forward passes as ``chunk``
allows, and the patches are assembled by T(m->M) alone, with no blending or other
post-processing: the seams are whatever G learnt to make coherent.

Shapes: B batch, Z latent dims, H/W full image height/width.
"""

from __future__ import annotations

from torch import Tensor

from cocogan.model import CocoGAN
from cocogan.render import DEFAULT_CHUNK, sample_rect, trained_rect


def images_per_pass(model: CocoGAN, chunk: int = DEFAULT_CHUNK) -> int:
    """Whole images whose micro patches fit in one ``chunk`` (at least 1): the batch that
    `cocogan generate full` renders at a time, so any other caller draws bit-identical images."""
    return max(1, chunk // (model.coords.grid_h * model.coords.grid_w))


def full_images(model: CocoGAN, z: Tensor, *, raw: bool = False,
                chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Full images for latents ``z``.

    Args:
        model: the bundle; its EMA generator is used unless ``raw``.
        z: (B, Z) latents on the model's device (see :func:`cocogan.render.latents`).
        raw: use the raw generator instead of the EMA one.
        chunk: maximum micro patches per forward pass (memory bound).

    Returns:
        (B, 3, H, W) in [-1, 1].
    """
    return sample_rect(model, z, trained_rect(model.coords), raw=raw, chunk=chunk)
