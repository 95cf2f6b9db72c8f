"""A shipped model's card fields that are computed from its file: the fixed-seed fingerprint of
its images and the applications it supports (``cocogan models --fingerprint``, the tests)."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from cocogan.apps import APPLICATIONS, full_images, images_per_pass, latents
from cocogan.apps.backend import use_backend
from cocogan.apps.io import to_uint8
from cocogan.checkpoint import MissingNetwork, load_model

FINGERPRINT_SEED, FINGERPRINT_COUNT = 0, 8  # the images of `cocogan generate full` by default


def fingerprint(file: str | Path, seed: int = FINGERPRINT_SEED, count: int = FINGERPRINT_COUNT
                ) -> dict[str, Any]:
    """The card's ``fingerprint`` of a weights file: for the images of seeds seed..seed+count-1
    as ``cocogan generate full`` draws them on a CPU, the SHA-256 of their uint8 pixels and
    their mean before rounding (which CPUs may change by ~1e-7)."""
    config, model, _ = load_model(file, "cpu")
    use_backend(model)  # generate's default, torch
    z = latents(list(range(seed, seed + count)), config.model.z_dim)
    per_pass = images_per_pass(model)  # the batches of `generate full`
    images = torch.cat([full_images(model, z[start:start + per_pass])
                        for start in range(0, count, per_pass)])  # (count, 3, H, W)
    pixels = to_uint8(images)  # (count, H, W, 3)
    return {"seed": seed, "count": count, "sha256": hashlib.sha256(pixels.tobytes()).hexdigest(),
            "mean": round(float(images.double().mean()), 8)}


def supported_applications(file: str | Path) -> list[str]:
    """The applications of ``cocogan generate`` a weights file can run: inspire needs D and Q
    (not in inference-only files), panorama a cylindrical model."""
    config, model, _ = load_model(file, "cpu")
    inference_only = isinstance(model.discriminator, MissingNetwork)
    return [app for app in APPLICATIONS if not (app == "inspire" and inference_only)
            and not (app == "panorama" and config.model.coords != "cylindrical")]
