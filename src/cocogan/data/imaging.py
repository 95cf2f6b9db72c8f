"""Decoding and resizing of single image files into float32 tensors (3, H, W) in [-1, 1],
the range of G's tanh: ``fit_cover`` (photographs: cover, centre-crop), ``fit_celeba`` (the
authors' fixed face box, then resize) or ``fit_stretch`` (panoramas: no crop to cut the seam).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

IMAGE_EXTENSIONS: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".webp", ".bmp")

# Crop box (left, upper, right, lower) of the authors' CelebA preprocessing: rows 50:178 and
# columns 25:153 of the aligned 178x218 images, a 128x128 square around the face.
CELEBA_BOX: tuple[int, int, int, int] = (25, 50, 153, 178)
CELEBA_SIZE: tuple[int, int] = (178, 218)  # (width, height) of aligned CelebA images

# Bump whenever decoding or resizing changes pixels, so cached real-data statistics are redone.
PREPROCESS_VERSION = 1

# JPEG draft decoding keeps at least this factor of the target size, as PIL's thumbnail() does,
# so the DCT-domain shrink never replaces the final Lanczos filter.
_DRAFT_MARGIN = 2


def is_image_file(path: Path) -> bool:
    """True for files whose suffix is a supported image type (case-insensitive)."""
    return path.suffix.lower() in IMAGE_EXTENSIONS


def open_image(path: Path, draft_size: int | None = None) -> Image.Image:
    """Decode a file, honouring EXIF orientation; with ``draft_size`` a JPEG may be decoded
    at a reduced scale whose shorter side keeps at least that many pixels (fast for photos)."""
    img = Image.open(path)
    if draft_size is not None and img.format == "JPEG":
        img.draft(None, (draft_size, draft_size))
    img.load()
    # Phone photos store rotation as a tag; ignoring it would train on sideways images.
    ImageOps.exif_transpose(img, in_place=True)
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB; transparent areas become white (as icons and emoji
    look on a page; black would give dark halos after resizing)."""
    if img.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        # 16-bit greyscale PNGs: PIL's convert("L") clips at 255, so rescale by hand.
        arr = np.asarray(img, dtype=np.float64)
        peak = 255.0 if img.mode == "F" or arr.max(initial=0) <= 255 else 65535.0
        img = Image.fromarray(np.clip(arr * (255.0 / peak), 0, 255).round().astype(np.uint8))
    if img.mode in ("LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
    if img.mode == "RGBA":
        canvas = Image.new("RGBA", img.size, (255, 255, 255, 255))
        canvas.alpha_composite(img)
        return canvas.convert("RGB")
    return img if img.mode == "RGB" else img.convert("RGB")


def _resample(src_w: float, src_h: float, width: int, height: int,
              resample: str = "lanczos") -> Image.Resampling:
    """"lanczos": Lanczos when shrinking (anti-aliasing matters), bicubic when enlarging;
    "bilinear": PIL bilinear both ways, as the release's ``scipy.misc.imresize`` (N9)."""
    if resample == "bilinear":
        return Image.Resampling.BILINEAR
    assert resample == "lanczos", f"resample: got {resample!r}, expected lanczos or bilinear"
    shrinking = width < src_w or height < src_h
    return Image.Resampling.LANCZOS if shrinking else Image.Resampling.BICUBIC


def fit_cover(img: Image.Image, height: int, width: int, resample: str = "lanczos") -> Image.Image:
    """Scale so the image covers (height, width), then take the centre crop, in one
    resampling pass (a fractional source box), so no pixel is interpolated twice."""
    src_w, src_h = img.size
    scale = max(width / src_w, height / src_h)
    crop_w, crop_h = width / scale, height / scale
    left, top = (src_w - crop_w) / 2, (src_h - crop_h) / 2
    box = (left, top, left + crop_w, top + crop_h)
    return img.resize((width, height), _resample(crop_w, crop_h, width, height, resample), box=box)


def fit_celeba(img: Image.Image, height: int, width: int, resample: str = "lanczos") -> Image.Image:
    """The authors' CelebA preprocessing: crop the fixed face box, then resize (crop first,
    so pixels outside the box stay out of the filter support, as theirs)."""
    face = img.crop(CELEBA_BOX)
    return face.resize((width, height), _resample(*face.size, width, height, resample))


def fit_stretch(img: Image.Image, height: int, width: int,
                resample: str = "lanczos") -> Image.Image:
    """Resize to exactly (height, width) without cropping, keeping a panorama's full 360 degrees."""
    if img.size == (width, height):
        return img
    return img.resize((width, height), _resample(*img.size, width, height, resample))


def to_tensor(img: Image.Image) -> torch.Tensor:
    """8-bit RGB image -> float32 tensor (3, H, W) in [-1, 1]."""
    arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    assert arr.ndim == 3 and arr.shape[2] == 3, f"expected (H, W, 3) uint8, got {arr.shape}"
    # Scale in NumPy: tiny torch ops pay intra-op threading overhead in the main process.
    chw = np.ascontiguousarray(arr.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
    return torch.from_numpy(chw / np.float32(127.5) - np.float32(1.0))


def load_image(path: Path, height: int, width: int, mode: str = "cover",
               resample: str = "lanczos") -> torch.Tensor:
    """Decode, convert and resize one file into (3, height, width) in [-1, 1] (fit ``mode``)."""
    fits = {"cover": fit_cover, "celeba": fit_celeba, "stretch": fit_stretch}
    if mode not in fits:
        raise AssertionError(f"unknown fit mode {mode!r}; expected cover, celeba or stretch")
    # CelebA's fixed box coordinates need the full-resolution decode
    img = open_image(path, None if mode == "celeba" else _DRAFT_MARGIN * max(height, width))
    return to_tensor(fits[mode](to_rgb(img), height, width, resample))
