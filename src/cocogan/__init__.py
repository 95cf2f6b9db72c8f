"""cocogan: COCO-GAN (COnditional COordinate GAN) in PyTorch; the supported public surface is
re-exported here, everything else is internal."""

from cocogan.config import Config, ConfigError, ModelConfig, apply_overrides
from cocogan.coords import CoordinateSystem, coordinate_system
from cocogan.losses import (
    content_consistency,
    gradient_penalty,
    spatial_consistency,
    wasserstein_estimate,
)
from cocogan.model import CocoGAN, generate_macro, generate_micro
from cocogan.patches import assemble, crop, merge, split
from cocogan.presets import PRESETS, get_preset
from cocogan.version import __version__

__all__ = [
    "PRESETS", "CocoGAN", "Config", "ConfigError", "CoordinateSystem", "ModelConfig",
    "__version__", "apply_overrides", "assemble", "content_consistency",
    "coordinate_system", "crop", "generate_macro", "generate_micro", "get_preset",
    "gradient_penalty", "merge", "spatial_consistency", "split", "wasserstein_estimate",
]
