"""The loss module and the options beyond the paper that extend it (cocogan.loss_variants,
cocogan.variants): paper presets use none; each option does what it says, and only that."""

from __future__ import annotations

import copy

import pytest
import torch
from tests.test_training import _tiny_model

from cocogan import PRESETS, CocoGAN, get_preset
from cocogan.loss_variants import HeadingContent, LazyPenalty, build_loss
from cocogan.losses import CocoGANLoss
from cocogan.model import BaselineGAN
from cocogan.nn import Generator
from cocogan.training.family import baseline_step, build_baseline_optimizers
from cocogan.training.step import Optimizers, build_optimizers, train_step
from cocogan.variants.augment import augment, color, cutout, kinds_of

PAPER_PRESETS = [n for n in PRESETS if not n.startswith(("tiny", "small"))] + ["tiny-paper"]


def small(preset: str, **train: object) -> tuple:
    """(config, model, images) of a narrow ``preset``: test_training's tiny model."""
    config, model, _, images = _tiny_model(preset, **train)
    return config, model, images


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_build_the_paper_generator_and_loss_only(name: str) -> None:
    """24.1: the paper presets never reach a variant (exact classes, not subclasses)."""
    config = get_preset(name)
    assert not config.loss.augment and config.loss.gp_every == 1
    model = CocoGAN(config.model) if name == "tiny-paper" else None
    if model is None:  # a paper-sized model is slow to build: its classes are what matters
        from cocogan.coords import coordinate_system
        from cocogan.nn.layers import shapes_only
        from cocogan.variants import build_generator

        with shapes_only():
            generator = build_generator(config.model, coordinate_system(config.model))
        assert type(generator) is Generator
        return
    assert type(model.generator) is Generator
    assert type(build_loss(model, config)) is CocoGANLoss


def d_gradients(preset: str, iteration: int, **train: object) -> torch.Tensor:
    """D's gradients of the first D update of one train_step at ``iteration``."""
    config, model, images = small(preset, **train)
    optimizers = build_optimizers(model, config)
    seen: list[torch.Tensor] = []
    optimizers.d.register_step_pre_hook(lambda *a: seen.append(torch.cat(
        [p.grad.reshape(-1) for p in optimizers.d.param_groups[0]["params"]])))
    values = train_step(model, optimizers, images, config,
                        torch.Generator().manual_seed(2), iteration=iteration)
    penalised = iteration % config.loss.gp_every == 0
    assert {"L_GP", "GP_norm", "GP_norm_max"} <= set(values) if penalised else \
        "L_GP" not in values  # a skipped penalty is not logged as 0
    return seen[0]


def test_lazy_penalty_is_the_penalty_every_k_iterations_at_k_times_its_weight() -> None:
    """loss.gp_every = 3: on iterations 0, 3, ... D's gradient is the paper step's with
    w_gp x 3; in between, the paper step's without the penalty; gp_every = 1 is the paper."""
    paper = get_preset("tiny-paper").loss.w_gp
    assert torch.equal(d_gradients("tiny-paper", 0, gp_every=1),
                       d_gradients("tiny-paper", 0))
    assert torch.equal(d_gradients("tiny-paper", 3, gp_every=3),
                       d_gradients("tiny-paper", 0, w_gp=3 * paper))
    lazy = d_gradients("tiny-paper", 4, gp_every=3)
    assert torch.allclose(lazy, d_gradients("tiny-paper", 0, w_gp=0.0), atol=1e-6)
    assert not torch.allclose(lazy, d_gradients("tiny-paper", 0), atol=1e-4)
    config, model, _ = small("tiny-paper", gp_every=3)
    assert isinstance(build_loss(model, config, 4), LazyPenalty)
    assert [build_loss(model, config, i).penalised() for i in range(4)] == \
        [True, False, False, True]


def test_augmentation_keeps_shape_and_pixels_in_place_is_differentiable_and_seeded() -> None:
    images = torch.rand(6, 3, 16, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    assert augment(images, kinds_of(""), torch.Generator()) is images  # off: untouched
    kinds = kinds_of("color,cutout")
    out = augment(images, kinds, torch.Generator().manual_seed(5))
    assert out.shape == images.shape
    assert torch.equal(out, augment(images, kinds, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, augment(images, kinds, torch.Generator().manual_seed(6)))
    # colour acts on each pixel through image-wide statistics only: it commutes with any
    # rearrangement of the pixels, so no content moves off its coordinate
    order = torch.randperm(16 * 24, generator=torch.Generator().manual_seed(1))

    def shuffle(x: torch.Tensor) -> torch.Tensor:
        return x.flatten(2)[..., order].view_as(x)

    assert torch.allclose(color(shuffle(images), torch.Generator().manual_seed(3)),
                          shuffle(color(images, torch.Generator().manual_seed(3))), atol=1e-6)
    # cutout keeps each pixel or zeroes it, a rectangle of a quarter of the image at most
    cut = cutout(images, torch.Generator().manual_seed(4))
    kept = cut == images
    assert torch.all(kept | (cut == 0))
    holes = (~kept.all(dim=1)).flatten(1).float().mean(dim=1)  # (B,)
    assert torch.all(holes <= 0.25) and holes.max() > 0.1
    # differentiable: G learns through it
    x = images.clone().requires_grad_(True)
    augment(x, kinds, torch.Generator().manual_seed(5)).square().sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_augmented_step_draws_from_the_step_rng_only() -> None:
    """The same step RNG gives the same step (exact resume), with augmentation on."""
    results = []
    for _ in range(2):
        config, model, images = small("tiny-paper", augment="color,cutout")
        optimizers = build_optimizers(model, config)
        values = train_step(model, optimizers, images, config,
                            torch.Generator().manual_seed(7))
        results.append((values["L_W"], next(model.discriminator.parameters()).detach()))
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(*[r[1] for r in results])


def test_z_phase_content_loss_leaves_out_the_heading() -> None:
    """N5: with model.z_phase, L_C does not ask Q for z[0], which one patch cannot determine."""
    config, model, _ = small("tiny-panorama", w_content=1.0)
    loss = build_loss(model, config)
    assert isinstance(loss, HeadingContent)
    z = torch.rand(4, 8) * 2 - 1
    wrong_heading = z.clone()
    wrong_heading[:, 0] = -z[:, 0]
    assert float(loss.content(wrong_heading, z)) == 0.0
    wrong_other = z.clone()
    wrong_other[:, 3] += 0.7
    assert float(loss.content(wrong_other, z)) == pytest.approx(0.7 / 7, rel=1e-5)
    paper = CocoGANLoss(model, config)
    assert float(paper.content(wrong_heading, z)) > 0


def test_a_checkpoint_without_d_extrap_resumes_with_a_fresh_one() -> None:
    config, model, images = small("tiny-paper", extrapolate=1)
    optimizers = build_optimizers(model, config)
    train_step(model, optimizers, images, config, torch.Generator().manual_seed(0))
    old = {k: v for k, v in optimizers.state_dict().items() if k != "d_extrap"}
    resumed = build_optimizers(model, config)
    assert isinstance(resumed, Optimizers) and resumed.d_extrap is not None
    resumed.load_state_dict(old)
    assert resumed.d_extrap.state_dict()["state"] == {}
    assert resumed.d.state_dict()["state"][0]["step"] == 1


def _baseline(sn_once: bool) -> tuple:
    config = get_preset("tiny-paper")
    config.model.family = "baseline"
    config.model.ngf = config.model.ndf = 8
    config.model.z_dim = 8
    torch.manual_seed(0)
    model = BaselineGAN(config.model)
    reference = copy.deepcopy(model)
    forwards: list[int] = []
    model.generator.register_forward_hook(lambda *a: forwards.append(1))
    optimizers = build_baseline_optimizers(model, config)
    baseline_step(model, optimizers, torch.rand(4, 3, 32, 32) * 2 - 1, config,
                  torch.Generator().manual_seed(0), sn_once=sn_once)
    return model, reference, forwards


@pytest.mark.parametrize("sn_once", [True, False])
def test_baseline_runs_g_once_and_follows_sn_once(sn_once: bool) -> None:
    """N10: one G forward per step (D gets it detached), and D's power iterations as COCO-GAN's:
    one per D update with sn_once, one per D call without; none in G's phase."""
    model, reference, forwards = _baseline(sn_once)
    assert len(forwards) == 1
    name = "blocks.0.conv1.parametrizations.weight.0._u"
    got = dict(model.discriminator.named_buffers())[name]
    distances = []
    for iterations in (1, 3, 4):
        copy_ = copy.deepcopy(reference)
        with torch.no_grad():
            for _ in range(iterations):
                copy_.discriminator(torch.zeros(1, 3, 32, 32))
        distances.append(float((got - dict(copy_.discriminator.named_buffers())[name])
                               .abs().max()))
    closest = (1, 3, 4)[distances.index(min(distances))]
    assert closest == (1 if sn_once else 3), distances


def test_a_record_averages_each_term_over_the_steps_that_computed_it(tmp_path) -> None:
    """A lazy penalty's L_GP is averaged over its own steps, not diluted by the others; the
    extrapolation step's terms come through with their prefix, maxima as maxima."""
    from cocogan.training.logging import MetricsLog

    log = MetricsLog(tmp_path, 0, tensorboard=False)
    log.accumulate({"L_W": torch.tensor(1.0), "L_GP": torch.tensor(4.0),
                    "extrap/GP_norm_max": torch.tensor(2.0)}, 1)
    log.accumulate({"L_W": torch.tensor(3.0), "extrap/GP_norm_max": torch.tensor(5.0)}, 2)
    log.accumulate({"L_W": torch.tensor(5.0), "L_GP": torch.tensor(6.0),
                    "extrap/GP_norm_max": torch.tensor(1.0)}, 3)
    record = log.write(3, 4, {}, 0.0)
    assert (record["L_W"], record["L_GP"], record["extrap/GP_norm_max"]) == (3.0, 5.0, 5.0)
    log.accumulate({"L_W": torch.tensor(float("nan"))}, 4)
    assert log.first_non_finite() == ("L_W", 4)
    log.close()
