"""Panoramas as a first-class geometry (review 2026-12b N1, N6, N11): D's spatial head predicts
the row alone, old 3-output heads still load, interpolation turns the heading the short way,
and the distribution metrics see real panoramas rolled as in training."""

from __future__ import annotations

from pathlib import Path

import torch

from cocogan.checkpoint import load_model, save_model
from cocogan.model import CocoGAN
from cocogan.nn.discriminator import AuxiliaryHead
from cocogan.presets import get_preset


def test_old_three_output_cylindrical_head_loads_with_the_same_row(tmp_path: Path) -> None:
    """A cylindrical checkpoint saved before N1 (head outputs y, cos, sin) loads strictly, and
    the loaded one-output head predicts exactly the old y in eval mode."""
    config = get_preset("tiny-panorama")
    torch.manual_seed(0)
    model = CocoGAN(config.model)
    disc = model.discriminator
    disc.spatial = AuxiliaryHead(disc.features_dim, config.model.aux_hidden, 3)  # the old head
    with torch.no_grad():
        for p in disc.spatial.parameters():
            p.add_(0.3 * torch.randn_like(p))
    patches = torch.randn(8, 3, 16, 48)
    disc.train()
    for _ in range(3):  # power iterations and batch-norm statistics move
        disc.spatial(disc.features(patches))
    disc.eval()
    with torch.no_grad():
        old_y = disc.spatial(disc.features(patches))[:, :1]
    save_model(tmp_path / "old.safetensors", config, model, step=3)
    _, loaded, _ = load_model(tmp_path / "old.safetensors")
    with torch.no_grad():
        new_y = loaded.discriminator.spatial(loaded.discriminator.features(patches))
    assert new_y.shape == (8, 1)
    torch.testing.assert_close(new_y, old_y, atol=1e-5, rtol=0)
