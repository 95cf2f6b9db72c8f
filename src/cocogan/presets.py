"""Named presets: small overrides of :mod:`cocogan.config`'s defaults for every experiment of
the paper and the authors' release, plus small ones that train on two CPU cores in minutes
(``tiny-paper``: the paper's method at tiny widths, the tests' default; ``tiny``,
``tiny-panorama`` and ``small64`` add the options beyond the paper that the demo uses)."""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass, field
from typing import Any

from cocogan.config import FIELD_SECTION, Config, ConfigError, ModelConfig


@dataclass(frozen=True)
class Preset:
    """A named configuration and what it reproduces."""

    name: str
    description: str
    model: dict[str, Any]
    train: dict[str, Any] = field(default_factory=dict)  # keys of loss/optim/data/run

    def config(self) -> Config:
        return Config.from_dict({"name": self.name, "model": copy.deepcopy(self.model),
                                 "train": copy.deepcopy(self.train)}).validate()


def _paper(name: str, description: str, full: int | tuple[int, int], micro: int, macro: int,
           batch: int, **extra: Any) -> Preset:
    height, width = (full, full) if isinstance(full, int) else full
    model = {"full_height": height, "full_width": width, "micro": micro, "macro": macro}
    model.update({k: v for k, v in extra.items() if k in ModelConfig.__dataclass_fields__})
    train = {"batch": batch, **{k: v for k, v in extra.items() if k in FIELD_SECTION}}
    return Preset(name, description, model, train)


# aligned CelebA's face box, resized with PIL bilinear as the release's scipy.misc.imresize did
_celeba = functools.partial(_paper, celeba_crop=True, resample="bilinear")
_SMALL = {"z_dim": 32, "ngf": 16, "ndf": 16, "aux_hidden": 64}
_TINY = {"full_height": 32, "full_width": 32, "micro": 8, "macro": 16, **_SMALL}
_SMALL_TRAIN = {"sample_every": 100, "checkpoint_every": 200, "log_every": 10,
                "ema_warmup": 20, "ema_decay": 0.99}
# The tiny models must show structure after ~1000 CPU steps (the demo): the paper's L_S 100 and
# TTUR drew noise there; why these settings: docs/training.md, "The demo".
_TINY_TRAIN = {**_SMALL_TRAIN, "lr_g": 5e-4, "lr_d": 5e-4, "beta2": 0.9, "w_spatial": 10.0}
# Beyond the paper, for the small presets only: margins with L_O, no L_S push on G, and for the
# panorama a 3-column macro patch and z_phase; the measurements: docs/seams.md.
_SEAMLESS_MODEL = {"g_margin": True}
_SEAMLESS_TRAIN = {"w_overlap": 30.0, "w_spatial_g": 0.0}

PRESETS: dict[str, Preset] = {p.name: p for p in (
    _celeba("celeba64", "CelebA 64x64, N2M2S32 (paper Table 1)", 64, 16, 32, 64),
    _celeba("celeba128", "CelebA 128x128, N2M2S64 (paper Sec. 3.1)", 128, 32, 64, 128),
    _celeba("celeba128-inspired", "CelebA 128, patch-inspired generation: L_C weight 100 "
            "(Sec. 3.4)", 128, 32, 64, 128, w_content=100.0),
    _celeba("celeba128-micro16", "CelebA 128 micro-size ablation, N4M4S64", 128, 16, 64, 128),
    _celeba("celeba128-micro8", "CelebA 128 micro-size ablation, N8M8S64", 128, 8, 64, 128),
    _celeba("celeba128-micro4", "CelebA 128 micro-size ablation, N16M16S64", 128, 4, 64, 64),
    _paper("lsun64", "LSUN bedroom 64x64, N2M2S32 (paper Table 1)", 64, 16, 32, 128),
    _paper("lsun128", "LSUN bedroom 128x128, N2M2S64 (paper Table 1)", 128, 32, 64, 128),
    _paper("lsun256", "LSUN bedroom 256x256, N2M2S128 (paper Sec. 3.1)", 256, 64, 128, 128),
    _paper("lsun256-beyond", "LSUN 256 beyond-boundary fine-tune: one grid step past each "
           "border, L_S weight 10000 (ICCV 2019)", 256, 64, 128, 128, extrapolate=1,
           w_spatial=10000.0),
    _paper("matterport", "Matterport3D panorama 256x768, cylindrical (paper Sec. 3.3)",
           (256, 768), 64, 128, 128, coords="cylindrical"),
    _paper("celebahq1024", "CelebA-HQ 1024x1024, N2M2S512 ('not well tested' by the authors)",
           1024, 256, 512, 20),
    Preset("tiny-paper", "Tiny 32x32: the paper's model, losses and optimiser at tiny widths "
           "(the tests' default; CPU)", {**_TINY}, {"batch": 16, **_SMALL_TRAIN}),
    Preset("tiny", "Tiny 32x32 with the seam options (margins, L_O) for the demo (CPU, seconds "
           "per 100 steps)", {**_TINY, **_SEAMLESS_MODEL},
           {"batch": 16, **_TINY_TRAIN, **_SEAMLESS_TRAIN}),
    Preset("tiny-inspired", "Tiny 32x32 with content loss on (patch-inspired generation)",
           {**_TINY}, {"batch": 16, "w_content": 100.0, **_TINY_TRAIN}),
    Preset("tiny-panorama", "Tiny 32x96 cylindrical panorama model for the demo (CPU)",
           {**_TINY, "full_width": 96, "coords": "cylindrical", "macro_width": 48,
            "z_phase": True, **_SEAMLESS_MODEL}, {"batch": 16, **_TINY_TRAIN, **_SEAMLESS_TRAIN}),
    Preset("small64", "Small 64x64 model (16/32 patches, ngf 32) for CPU experiments",
           {"full_height": 64, "full_width": 64, "micro": 16, "macro": 32, "z_dim": 64,
            "ngf": 32, "ndf": 32, **_SEAMLESS_MODEL},
           {"batch": 32, **_SMALL_TRAIN, "w_overlap": 30.0}),  # w_spatial_g not measured here
)}


def get_preset(name: str) -> Config:
    """The validated Config of a preset; unknown names list the known ones."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of: {', '.join(PRESETS)} "
                          "(see `cocogan presets`)")
    return PRESETS[name].config()
