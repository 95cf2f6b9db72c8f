"""Panoramas as a first-class geometry (review 2026-12b N1, N6, N11): D's spatial head predicts
the row alone, old 3-output heads still load, interpolation turns the heading the short way,
and the distribution metrics see real panoramas rolled as in training."""

from __future__ import annotations

from pathlib import Path

import pytest
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
    disc.spatial = AuxiliaryHead(disc.score.in_features, config.model.aux_hidden, 3)  # the old head
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


def test_panorama_reference_is_rolled_for_distributions_and_not_for_wrap() -> None:
    """N11: training sees every real panorama at a random roll, so SWD/FID, spread and likeness
    compare against reals rolled by a fixed seed; wrap_real keeps the 360-degree seam where
    the files have it. Real panoramas with a canonical heading (a bright band at one angle)."""
    from cocogan.evaluation import EvalConfig, build_reference
    from cocogan.evaluation.pipeline import SWDSink, real_rolls, roll_each
    from cocogan.evaluation.sampling import real_subset
    from cocogan.metrics import likeness, wrap_ratio

    coords = CocoGAN(get_preset("tiny-panorama").model).coords
    rng = torch.Generator().manual_seed(0)
    images = [(0.2 * torch.randn(3, 32, 96, generator=rng)).clamp(-1, 1) for _ in range(24)]
    for image in images:
        image[:, :, 10:22] = 0.9  # every panorama faces the same way
        image.copy_(((image + 1) * 127.5).round() / 127.5 - 1)  # 8-bit, as the reference keeps
    cfg = EvalConfig(n=24, batch=8, seam_images=24, swd_images=24)
    ref = build_reference(("swd", "wrap", "likeness"), images, coords, cfg)
    subset = real_subset(images, 24)
    stacked = torch.stack([subset[i] for i in range(24)])  # the reference's fixed order
    rolled = roll_each(stacked, real_rolls(24, coords))
    assert ref.values["wrap_real"] == pytest.approx(wrap_ratio(stacked))
    assert ref.values["likeness_real"] == pytest.approx(likeness(rolled))
    assert likeness(rolled) < likeness(stacked)  # the heading no longer lines the images up
    sink = SWDSink(24, cfg.swd_descriptors, cfg.seed)
    for batch in rolled.split(8):  # as the reference's stream
        sink.update(batch)
    assert all(torch.equal(a, b) for a, b in zip(ref.swd, sink.descriptors(), strict=True))


def _turns(headings: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame turn of headings pi * z[0], in degrees, the short way each step."""
    steps = torch.remainder(headings.diff() + 1.0, 2.0) - 1.0
    return steps * 180.0


def test_heading_turns_the_short_way() -> None:
    """N6: two latents whose headings are 18 degrees apart (z[0] = 0.95 and -0.95) turn 18
    degrees along the path, not 342 as slerp of the whole z did."""
    from cocogan.apps.interpolate import interpolation_steps, latent_path, slerp

    z0, z1 = torch.rand(2, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    z0[0], z1[0] = 0.95, -0.95
    t = interpolation_steps(9)
    path = latent_path(z0, z1, t, phase=True)
    assert torch.equal(path[0], z0) and torch.equal(path[-1], z1)
    turns = _turns(path[:, 0])
    assert float(turns.sum()) == pytest.approx(18.0, abs=1e-3)
    assert torch.allclose(turns, torch.full_like(turns, 18.0 / 8), atol=1e-3)  # evenly
    assert abs(float(_turns(slerp(z0, z1, t)[:, 0]).sum())) > 300  # the old long way round


def test_latent_path_stays_in_the_cube_and_looks_uniform() -> None:
    """N6: slerp of two U[-1, 1] latents leaves the cube (the review measured 8.3 % of the
    midpoint's components for Z = 32); the Gaussian-mapped path never does, and its midpoint
    is again uniform (E|u| = 1/2, E u^2 = 1/3)."""
    from cocogan.apps.interpolate import interpolation_steps, latent_path, slerp

    pairs = torch.rand(200, 2, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    t = interpolation_steps(9)
    plain = torch.stack([slerp(a, b, t) for a, b in pairs])  # (200, F, Z)
    mapped = torch.stack([latent_path(a, b, t) for a, b in pairs])
    outside = float((plain[:, 4].abs() > 1).float().mean())
    assert 0.05 < outside < 0.12
    assert float(mapped.abs().max()) <= 1.0
    middle = mapped[:, 4]
    assert float(middle.abs().mean()) == pytest.approx(0.5, abs=0.02)
    assert float(middle.square().mean()) == pytest.approx(1 / 3, abs=0.02)


def test_interpolations_and_serve_follow_the_heading() -> None:
    """generate interpolate and serve's seed morph move z as latent_path does (z_phase on)."""
    from cocogan.apps import full_images, latents
    from cocogan.apps.interpolate import full_interpolation, interpolation_steps, latent_path
    from cocogan.serve.tiles import seed_latent

    model = CocoGAN(get_preset("tiny-panorama").model).eval()
    z = latents([3, 4], 32)
    path = latent_path(z[0], z[1], interpolation_steps(3), phase=True)
    torch.testing.assert_close(full_interpolation(model, z[0], z[1], 3), full_images(model, path))
    torch.testing.assert_close(seed_latent(32, 3, 4, 0.5, phase=True).z, path[1])


def test_old_cylindrical_run_resumes(tmp_path: Path) -> None:
    """A run saved with the 3-output head (weights and D's Adam moments) resumes: the moments
    keep their first rows, as the weights do (training.state._keep_first_rows)."""
    from safetensors.torch import load_file, save_file

    from cocogan.checkpoint import read_metadata
    from cocogan.cli import main

    run = tmp_path / "run"
    small = ["--set", "model.z_dim=8", "model.ngf=8", "model.ndf=8", "model.aux_hidden=16",
             "optim.batch=4", "run.checkpoint_every=2", "run.sample_every=2",
             "data.num_workers=0", "run.n_samples=4"]
    assert main(["train", "--preset", "tiny-panorama", "--data", "builtin:skyline", "--out",
                 str(run), "--steps", "2", *small]) == 0
    weights = run / "checkpoints" / "step-00000002.safetensors"
    tensors, last = load_file(str(weights)), "discriminator.spatial.net.3."
    names = [n for n, _ in CocoGAN(get_preset("tiny-panorama").model).discriminator
             .named_parameters() if not n.startswith("content.")]
    grown = {}
    for key in ("parametrizations.weight.original", "bias", "parametrizations.weight.0._u"):
        old = tensors[last + key]
        grown[key] = torch.cat([old, torch.rand(2, *old.shape[1:])])  # rows for cos, sin
        tensors[last + key] = grown[key]
    save_file(tensors, str(weights), metadata=read_metadata(weights))
    state_file = weights.with_name("step-00000002.state.pt")
    state = torch.load(state_file, weights_only=True)
    for key in ("parametrizations.weight.original", "bias"):
        index = names.index("spatial.net.3." + key)
        moments = state["optimizers"]["d"]["state"][index]
        for name in ("exp_avg", "exp_avg_sq"):
            moments[name] = torch.cat([moments[name], torch.rand(2, *moments[name].shape[1:])])
    torch.save(state, state_file)
    assert main(["train", "--resume", str(run), "--steps", "3"]) == 0
    _, model, step = load_model(run)
    assert step == 3 and model.discriminator.spatial.net[3].bias.shape == (1,)
