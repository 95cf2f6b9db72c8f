"""Tests of the full-image baseline GAN (model.family=baseline): its size, its step, and that
the one Trainer drives it with what COCO-GAN gets (EMA with recalibrated batch norm, sample
grids, checkpoints, exact resume)."""

from __future__ import annotations

import copy

import pytest
import torch

from cocogan.config import ConfigError
from cocogan.data import build_dataset
from cocogan.model import BaselineGAN, build_model
from cocogan.presets import get_preset
from cocogan.summary import parameter_counts
from cocogan.training.family import (
    FAMILIES,
    baseline_step,
    build_baseline_optimizers,
    family_of,
)


def baseline_config(preset: str = "tiny"):
    config = get_preset(preset)
    config.model.family = "baseline"
    config.model.z_dim, config.model.ngf, config.model.ndf = 8, 8, 8
    config.optim.batch = 4
    return config.validate()


@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama", "celeba64"])
def test_baseline_capacity_matches_cocogan(preset: str) -> None:
    config = get_preset(preset)
    config.model.family = "baseline"
    model = build_model(config.model)
    counts = parameter_counts(config)
    g = sum(p.numel() for p in model.generator.parameters())
    d = sum(p.numel() for p in model.discriminator.parameters())
    assert isinstance(model, BaselineGAN)
    assert 0.5 <= g / counts["g_params"] <= 2.0
    assert 0.5 <= d / counts["d_params"] <= 2.0


def test_baseline_step_updates_both_and_builds_no_d_gradients_in_g_step() -> None:
    """D's gradients after the step are exactly those its own update used: the G step froze D
    (requires_grad off), so its backward added nothing to them."""
    config = baseline_config()
    torch.manual_seed(0)
    model = BaselineGAN(config.model)
    optimizers = build_baseline_optimizers(model, config)
    assert set(optimizers.named()) == {"g", "d"}
    real = torch.stack([build_dataset("builtin:blobs", 32, 32)[i] for i in range(4)])
    seen: list[list[torch.Tensor]] = []
    d_step = optimizers.d.step
    optimizers.d.step = lambda: (seen.append([p.grad.clone() for p in  # type: ignore[method-assign]
                                               model.discriminator.parameters()]), d_step())[1]
    g_before = [p.clone() for p in model.generator.parameters()]
    losses = baseline_step(model, optimizers, real, config, torch.Generator().manual_seed(0))
    assert set(losses) == {"L_W", "L_GP", "loss_D", "loss_G"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    after = [p.grad for p in model.discriminator.parameters()]
    assert all(torch.equal(a, b) for a, b in zip(seen[0], after, strict=True))
    assert all(p.requires_grad for p in model.discriminator.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(g_before, model.generator.parameters(),
                                                     strict=True))


def test_baseline_recalibration_gives_the_ema_its_own_statistics() -> None:
    config = baseline_config()
    model = BaselineGAN(config.model)
    with torch.no_grad():
        for p in model.generator_ema.parameters():
            p.mul_(1.5)  # other weights than G's: other statistics
    model.recalibrate_ema(4, batches=3, seed=7)
    norm = model.generator_ema.tail_norm
    # Reference: the cumulative mean of the tail BN's input over the same three batches.
    twin = copy.deepcopy(model.generator_ema)
    rng = torch.Generator().manual_seed(7)
    inputs = []
    twin.tail_norm.register_forward_hook(lambda m, args, out: inputs.append(args[0]))
    for module in twin.modules():  # batch statistics; spectral norm's power iteration frozen
        module.train(isinstance(module, torch.nn.BatchNorm2d))
    with torch.no_grad():
        for _ in range(3):
            twin(model.sample_z(4, rng))
    expected = torch.stack([x.mean(dim=(0, 2, 3)) for x in inputs]).mean(0)
    assert torch.allclose(norm.running_mean, expected, atol=1e-5)
    assert not model.generator_ema.training


def test_family_registry_follows_the_config() -> None:
    assert family_of(baseline_config().model) is FAMILIES["baseline"]
    assert family_of(get_preset("tiny").model) is FAMILIES["cocogan"]
    with pytest.raises(ConfigError, match=r"model\.family must be one of cocogan, baseline"):
        config = get_preset("tiny")
        config.model.family = "stylegan"
        config.validate()
