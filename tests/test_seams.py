"""Generation by parts without seams: the seam diagnostics, the pipeline checks that rule out
our own causes of seams (issue: "Seamless generation by parts"), and the generator options."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from cocogan import CocoGAN, apply_overrides, generate_macro, get_preset
from cocogan.config import Config
from cocogan.metrics import object_seam_ratio, seam_profile, seam_ratio
from cocogan.model import exact_spectral_norm
from cocogan.patches import assemble, crop, merge, split
from cocogan.presets import PRESETS
from cocogan.render import evaluating, render_rect, trained_rect
from cocogan.summary import parameter_counts
from cocogan.training.step import build_optimizers, train_step

OPTIONS = ["model.g_margin=true"]  # the generator's one seam option


def stepped(size: int, micro: int, slope: float, step: float, only: int | None = None
            ) -> torch.Tensor:
    """An image whose neighbour jumps are known: ``slope`` everywhere, plus ``step`` across
    every micro border (or only across the vertical border at column ``only``)."""
    x = torch.arange(size, dtype=torch.float64)
    if only is None:
        ramp_x = slope * x + step * torch.div(x, micro, rounding_mode="floor")
        ramp_y = ramp_x
    else:
        ramp_x = slope * x + step * (x >= only)
        ramp_y = slope * x
    return (ramp_y[:, None] + ramp_x[None, :]).expand(2, 3, size, size).clone()


def test_seam_ratio_and_profile_of_known_seams() -> None:
    image = stepped(32, 8, slope=0.01, step=0.03)
    assert seam_ratio(image, 8) == pytest.approx(4.0)  # (slope + step) / slope
    profile = seam_profile(image, 8)
    assert set(profile) == {"x8", "x16", "x24", "y8", "y16", "y24"}
    assert all(v == pytest.approx(4.0) for v in profile.values())

    one = seam_profile(stepped(32, 8, slope=0.01, step=0.02, only=16), 8)
    assert one["x16"] == pytest.approx(3.0)
    assert all(one[k] == pytest.approx(1.0) for k in ("x8", "x24", "y8", "y16", "y24"))
    # the overall ratio dilutes one bad line among the six: (3 + 5 * 1) / 6 of jumps
    assert seam_ratio(stepped(32, 8, 0.01, 0.02, only=16), 8) == pytest.approx(8 / 6)


def test_real_images_round_trip_exactly(emoji_image: torch.Tensor) -> None:
    patches = split(emoji_image, 16)  # (1, 16, 3, 16, 16)
    rows, cols = torch.meshgrid(torch.arange(4), torch.arange(4), indexing="ij")
    order = torch.randperm(16)
    shuffled = assemble(patches[:, order], rows.reshape(-1)[order], cols.reshape(-1)[order])
    assert torch.equal(shuffled, emoji_image)


@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
@pytest.mark.parametrize("options", [[], OPTIONS], ids=["paper", "options"])
def test_training_macro_patches_are_crops_of_the_assembled_image(preset: str,
                                                                  options: list[str]) -> None:
    """What D sees in training (generate_macro) is exactly the crop of the full image that the
    applications assemble, at every macro position, across the panorama seam too."""
    model = CocoGAN(apply_overrides(get_preset(preset), options).model)
    system, generator = model.coords, model.generator
    z = model.sample_z(2)
    with evaluating(generator):
        full = render_rect(generator, system, z, trained_rect(system))  # (2, 3, H, W)
        rows, cols = system.macro_grid()  # every macro position, both latents at each
        count = rows.numel()
        z_all, full_all = z.repeat_interleave(count, 0), full.repeat_interleave(count, 0)
        rows, cols = rows.float().repeat(2), cols.float().repeat(2)
        macro = generate_macro(generator, system, z_all, rows, cols)
    top, left = system.pixel_offset(rows, cols)
    expected = crop(full_all, top, left, macro.shape[-2], macro.shape[-1], wrap=system.cyclic)
    torch.testing.assert_close(macro, expected, atol=1e-6, rtol=0)


def test_gradient_reaches_every_pixel_of_every_micro_patch() -> None:
    model = CocoGAN(get_preset("tiny").model)
    system, disc = model.coords, model.discriminator
    micro = torch.rand(3, system.patches_per_macro, 3, 8, 8, requires_grad=True)
    macro = merge(micro, system.macro_h, system.macro_w)
    coords = system.macro_coords(torch.zeros(3), torch.zeros(3))
    disc.adversarial(disc.features(macro), coords).sum().backward()
    grad = micro.grad.abs()  # (B, P, 3, 8, 8)
    assert (grad.amax(dim=2) > 0).all(), "some micro-patch pixel gets no gradient from D"
    per_patch = grad.mean(dim=(2, 3, 4))  # (B, P): no patch is starved
    assert (per_patch > 0.05 * per_patch.mean()).all()


@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama", "small64"])
def test_generator_options_shapes_and_determinism(preset: str) -> None:
    config = apply_overrides(get_preset(preset), OPTIONS)
    config.model.ngf = config.model.ndf = 8

    def sample() -> torch.Tensor:
        torch.manual_seed(3)
        model = CocoGAN(config.model).eval()
        z = model.sample_z(2, torch.Generator().manual_seed(1))
        with torch.no_grad():
            return render_rect(model.generator, model.coords, z, trained_rect(model.coords))

    first = sample()
    m = config.model
    assert first.shape == (2, 3, m.full_height, m.full_width)
    assert first.abs().max() <= 1
    assert torch.equal(first, sample())


PAPER_PRESETS = [n for n in PRESETS if not n.startswith(("tiny", "small"))] + ["tiny-paper"]


@pytest.mark.parametrize("name", PAPER_PRESETS)
def test_paper_presets_keep_the_paper_generator(name: str) -> None:
    config = get_preset(name)
    m = config.model
    assert not m.g_margin and config.loss.w_overlap == 0


@pytest.mark.parametrize("name", ["tiny", "tiny-panorama", "small64"])
def test_small_presets_adopt_the_seam_options(name: str) -> None:
    config = get_preset(name)
    assert config.model.g_margin and config.loss.w_overlap > 0


def test_paper_generator_unchanged_for_a_fixed_seed() -> None:
    """celeba64's G: parameter count of the release, and the same output as the paper's
    architecture gives for a fixed seed (a fingerprint recorded before the options existed)."""
    config = get_preset("celeba64")
    assert parameter_counts(config)["g_params"] == 11_225_091
    config.model.ngf = 4
    torch.manual_seed(0)
    model = CocoGAN(config.model).eval()
    z = torch.linspace(-1, 1, 128)[None]
    with torch.no_grad():
        patch = model.generator(z, torch.tensor([[-1.0, 1.0 / 3.0]]))
    assert patch.shape == (1, 3, 16, 16)
    assert float(patch.double().sum()) == pytest.approx(73.84684361726977, abs=1e-4)


def test_the_removed_study_options_are_unknown_keys() -> None:
    """pixel_coords, pixel_fourier, g_padding and g_field were measured and not adopted
    (docs/seams.md); a --set naming them is an error, not a silent no-op, and runs saved with
    them off still load."""
    for key in ("pixel_coords=true", "pixel_fourier=2", "g_padding=replicate", "g_field=true"):
        with pytest.raises(ValueError, match="unknown"):
            apply_overrides(get_preset("tiny"), [f"model.{key}"])
    saved = get_preset("tiny").to_dict()  # a run saved before the removal still loads
    saved["model"].update(pixel_coords=False, pixel_fourier=0, g_padding="zeros", g_field=False)
    saved["train"] = {"cache_images": "auto"}  # removed too (an old train: section)
    assert Config.from_dict(saved) == get_preset("tiny")
    saved["model"]["pixel_coords"] = True
    with pytest.raises(ValueError, match="removed"):
        Config.from_dict(saved)


def test_overlap_loss_is_zero_for_canvases_cut_from_one_image_and_exact_otherwise() -> None:
    from cocogan.variants.seamless import overlap_consistency

    micro, margin = 8, 2
    image = torch.rand(3, 3, 2 * micro + 2 * margin, 2 * micro + 2 * margin)
    # canvases of a 2x2 macro patch, each micro patch with its margin, cut from one image
    canvases = torch.stack([image[..., r * micro: r * micro + micro + 2 * margin,
                                  c * micro: c * micro + micro + 2 * margin]
                            for r in range(2) for c in range(2)], dim=1)  # (B, 4, 3, 12, 12)
    assert float(overlap_consistency(canvases, 2, 2, margin)) == pytest.approx(0.0, abs=1e-7)
    # shift the top-right patch by +0.5: its two overlaps (left, below) each differ by 0.5
    # over the whole strip; horizontal: 1 of 2 pairs, vertical: 1 of 2 pairs
    canvases[:, 1] += 0.5
    assert float(overlap_consistency(canvases, 2, 2, margin)) == pytest.approx(0.25)


def test_overlap_training_step_and_config_checks() -> None:
    from cocogan.training.step import build_optimizers, train_step

    config = apply_overrides(get_preset("celeba64"), [
        "model.full_height=32", "model.full_width=32", "model.micro=8", "model.macro=16",
        "model.ngf=8", "model.ndf=8", "model.z_dim=8", "model.g_margin=true",
        "loss.w_overlap=10"])
    model = CocoGAN(config.validate().model)
    losses = train_step(model, build_optimizers(model, config), torch.rand(4, 3, 32, 32),
                        config, torch.Generator().manual_seed(0))
    assert losses["L_O"] > 0 and math.isfinite(losses["loss_G"])
    with pytest.raises(ValueError, match="g_margin"):
        apply_overrides(get_preset("celeba64"), ["loss.w_overlap=10"]).validate()


def test_recalibrated_ema_statistics_are_the_batch_statistics() -> None:
    """With one batch, the recalibrated running mean of G's last BN is the mean of that
    batch's features, drawn exactly as a training step draws z and positions."""
    model = CocoGAN(get_preset("tiny").model)
    exact_spectral_norm(model.generator_ema)  # what recalibration sets u, v to (A3)
    probe = copy.deepcopy(model.generator_ema)  # eval: spectral norm fixed; BN: batch stats
    for module in probe.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            module.train()
    weights = {k: v.clone() for k, v in model.generator_ema.state_dict().items()
               if "running" not in k and "num_batches" not in k}  # u, v: already exact
    model.recalibrate_ema(batch=6, batches=1, seed=5)
    after = model.generator_ema.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())  # only BN statistics move
    captured = []
    probe.tail_norm.register_forward_hook(lambda m, i, o: captured.append(i[0]))
    rng = torch.Generator().manual_seed(5)
    rows, cols = model.coords.sample_macro(6, generator=rng)
    with torch.no_grad():
        generate_macro(probe, model.coords, model.sample_z(6, rng), rows, cols)
    expected = captured[0].mean(dim=(0, 2, 3))
    torch.testing.assert_close(model.generator_ema.tail_norm.running_mean, expected)
    assert not model.generator_ema.training and model.generator_ema.tail_norm.momentum == 0.1


def test_w_spatial_g_changes_only_g_objective() -> None:
    """loss.w_spatial_g replaces w_spatial in G's objective alone: from the same start, D's
    update is the same and loss_G differs by exactly w_spatial x L_S(fake)."""
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    losses = {}
    for setting in ("null", "0"):
        config = apply_overrides(get_preset("tiny"), [f"loss.w_spatial_g={setting}"])
        torch.manual_seed(0)
        model = CocoGAN(config.model)
        optimizers = build_optimizers(model, config)
        losses[setting] = train_step(model, optimizers, images, config,
                                     torch.Generator().manual_seed(0))
    paper, no_g_spatial = losses["null"], losses["0"]
    assert get_preset("celeba64").loss.w_spatial_g is None  # the paper presets: w_spatial
    assert torch.equal(paper["loss_D"], no_g_spatial["loss_D"])
    expected = paper["loss_G"] - get_preset("tiny").loss.w_spatial * paper["L_S_fake"]
    assert no_g_spatial["loss_G"].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    assert paper["L_S_fake"].item() > 0


def _object_seams_by_loops(images: torch.Tensor, micro: int, tolerance: float = 0.1) -> float:
    """object_seam_ratio written out pixel by pixel (an independent second method)."""
    seam_sum = rest_sum = 0.0
    seam_n = rest_n = 0
    for image in images.double():
        h, w = image.shape[1:]
        # the ground: the median of the 1-px frame (corners counted twice, lower middle value)
        frame = torch.cat([image[:, 0, :], image[:, -1, :], image[:, :, 0], image[:, :, -1]], 1)
        ground = frame.median(1).values

        def away(r: int, q: int, image: torch.Tensor = image, ground: torch.Tensor = ground
                 ) -> bool:
            return bool(((image[:, r, q] - ground).abs() > tolerance).any())

        def inside(r: int, q: int, h: int = h, w: int = w) -> bool:
            return all(away(rr, qq) for rr in range(r - 1, r + 2) for qq in range(q - 1, q + 2)
                       if 0 <= rr < h and 0 <= qq < w)

        for r in range(h):
            for q in range(w):
                for dr, dq in ((0, 1), (1, 0)):
                    r2, q2 = r + dr, q + dq
                    if r2 >= h or q2 >= w or not (inside(r, q) and inside(r2, q2)):
                        continue
                    jump = float((image[:, r2, q2] - image[:, r, q]).abs().mean())
                    border = (q2 % micro == 0) if dq else (r2 % micro == 0)
                    if border:
                        seam_sum, seam_n = seam_sum + jump, seam_n + 1
                    else:
                        rest_sum, rest_n = rest_sum + jump, rest_n + 1
    return (seam_sum / seam_n) / (rest_sum / rest_n)


def test_object_seam_ratio_equals_a_pixel_by_pixel_count() -> None:
    gen = torch.Generator().manual_seed(3)
    images = torch.ones(3, 3, 16, 16)  # white ground
    images[:, :, 3:13, 2:14] = torch.rand(3, 3, 10, 12, generator=gen) * 1.6 - 1
    assert object_seam_ratio(images, 4) == pytest.approx(_object_seams_by_loops(images, 4),
                                                          rel=1e-12)


def test_object_seam_ratio_sees_a_checker_the_white_ground_hides() -> None:
    """Objects whose micro patches are flat tiles of different shades (a checker), on a white
    ground that fills most of the image: only border steps jump inside the object; the plain
    ratio is pulled towards 1 by the silhouette edges, the object ratio is not."""
    size, micro = 32, 8
    rows = torch.arange(size)[:, None]
    cols = torch.arange(size)[None, :]
    texture = 0.02 * ((rows + cols) % 2)  # every step inside a tile jumps by 0.02
    checker = 0.3 * ((rows // micro + cols // micro) % 2)  # tiles differ by 0.3
    image = torch.ones(1, 3, size, size)
    image[:, :, 6:26, 6:26] = (-0.5 + checker + texture)[6:26, 6:26]
    # inside the object a border step jumps 0.3 +- 0.02, any other step 0.02
    assert object_seam_ratio(image, micro) == pytest.approx(0.3 / 0.02, rel=0.1)
    assert seam_ratio(image, micro) < 0.5 * object_seam_ratio(image, micro)
    smooth = torch.ones(1, 3, size, size)
    smooth[:, :, 6:26, 6:26] = (-0.5 + texture)[6:26, 6:26]
    assert object_seam_ratio(smooth, micro) == pytest.approx(1.0)
    assert math.isnan(object_seam_ratio(torch.ones(1, 3, size, size), micro))  # no object
