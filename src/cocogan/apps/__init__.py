"""Applications of a trained COCO-GAN, one module each (paper Sections 3.2-3.5, ICCV 2019):
plain functions of a :class:`cocogan.CocoGAN` and latents, sampling from the EMA generator in
eval mode unless asked for the raw one. ``cocogan generate <app>`` wraps them (its registry:
:data:`APPLICATIONS`) and writes PNG/GIF files with JSON sidecars.
"""

from cocogan.apps.beyond import Extension, beyond
from cocogan.apps.full import full_images, images_per_pass
from cocogan.apps.huge import HugePlan, plan_huge, write_huge
from cocogan.apps.inspire import Inspiration, crop_patch, inspire
from cocogan.apps.interpolate import (
    full_interpolation,
    micro_interpolation,
    slerp,
    spatial_interpolation,
)
from cocogan.apps.panorama import panoramas, wrap_view
from cocogan.apps.viewport import PixelBox, cartesian_box, cylindrical_box, viewport
from cocogan.render import DEFAULT_CHUNK, latents, render_patches

# name -> one line of help; `cocogan generate` offers exactly these.
APPLICATIONS: dict[str, str] = {
    "full": "full images from seeds, all micro patches batched (Sec. 3.1)",
    "viewport": "only the patches of a pixel box or angular range (partial scene, Sec. 3.3)",
    "panorama": "cyclic panoramas, pasted twice or any angular width (Sec. 3.3)",
    "interpolate": "micro, spatial or full-image interpolation as strip and GIF (Sec. 3.2)",
    "inspire": "patch-inspired generation from a real macro patch (Sec. 3.4)",
    "beyond": "grid extended past [-1, 1] on any side (beyond-boundary, ICCV 2019)",
    "huge": "any size, tile by tile, streamed to BigTIFF or PNG (Sec. 3.5)",
}

__all__ = [
    "APPLICATIONS", "DEFAULT_CHUNK", "Extension", "HugePlan", "Inspiration", "PixelBox", "beyond",
    "cartesian_box", "crop_patch", "cylindrical_box", "full_images", "full_interpolation",
    "images_per_pass", "inspire", "latents", "micro_interpolation", "panoramas", "plan_huge",
    "render_patches", "slerp", "spatial_interpolation", "viewport", "wrap_view", "write_huge",
]
