"""Full-image generation (paper Sections 2 and 3.1): every micro patch of a batch of images,
in as few passes as ``chunk`` allows, assembled by T(m->M) alone (no blending).
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
    """Full images (B, 3, H, W) in [-1, 1] for latents ``z`` (B, Z) on the model's device,
    by the EMA generator unless ``raw``, at most ``chunk`` micro patches per forward pass."""
    return sample_rect(model, z, trained_rect(model.coords), raw=raw, chunk=chunk)
