"""Applications (cocogan.apps): invariance, reference and end-to-end tests on tiny models.

Untrained models are enough for geometry (viewports, panoramas, huge images, interpolation
endpoints); the patch-inspired test trains the tiny-inspired preset in-process.
Comparisons of float images use atol 1e-5: eval-mode patches are per-sample, but CPU kernels
for different batch sizes agree to ~1e-7, not to the last bit.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cocogan import CocoGAN, generate_macro, generate_micro, get_preset
from cocogan.apps import (
    Extension,
    beyond,
    cartesian_box,
    crop_patch,
    cylindrical_box,
    full_images,
    full_interpolation,
    inspire,
    latents,
    micro_interpolation,
    plan_huge,
    slerp,
    spatial_interpolation,
    viewport,
    wrap_view,
    write_huge,
)
from cocogan.apps.inspire import check_patch, content_warning
from cocogan.apps.io import parse_seeds, to_uint8
from cocogan.apps.viewport import covering_rect
from cocogan.patches import crop
from cocogan.render import evaluating
from cocogan.training.step import build_optimizers, train_step

ATOL = 1e-5


def warmed(preset: str) -> CocoGAN:
    """An untrained model whose BN running statistics have seen G's own activations."""
    torch.manual_seed(1)
    model = CocoGAN(get_preset(preset).model)
    with torch.no_grad():
        for _ in range(8):
            rows, cols = model.coords.sample_macro(16)
            generate_macro(model.generator, model.coords, model.sample_z(16), rows, cols)
    model.generator_ema.load_state_dict(model.generator.state_dict())
    return model.eval()


@pytest.fixture(scope="module")
def tiny() -> CocoGAN:
    return warmed("tiny")


@pytest.fixture(scope="module")
def pano() -> CocoGAN:
    return warmed("tiny-panorama")


def test_parse_seeds_and_latents() -> None:
    assert parse_seeds("0-3,7,10-11") == [0, 1, 2, 3, 7, 10, 11]
    for bad in ("", "a", "3-1", "-2", "1-2-3"):
        with pytest.raises(ValueError, match="--seeds"):
            parse_seeds(bad)
    z = latents([5, 9], 32)
    assert z.shape == (2, 32) and z.abs().max() <= 1.0
    assert torch.equal(latents([9], 32)[0], z[1])  # a seed's z ignores the other seeds


def test_full_images_chunking_and_authors_loop_agree(tiny: CocoGAN) -> None:
    z = latents([0, 1, 2], 32)
    reference = full_images(tiny, z, chunk=10_000)
    assert reference.shape == (3, 3, 32, 32)
    for chunk in (1, 7, 16):
        torch.testing.assert_close(full_images(tiny, z, chunk=chunk), reference, atol=ATOL,
                                   rtol=0)
    # The authors' way: one forward pass per coordinate, assembled by hand.
    rows, cols = tiny.coords.micro_grid()
    with torch.no_grad():
        per_position = torch.stack([
            generate_micro(tiny.generator_ema, tiny.coords, z, r.expand(3, 1).float(),
                           c.expand(3, 1).float())[:, 0] for r, c in zip(rows, cols, strict=True)
        ], dim=1)  # (B, P, 3, m, m)
    grid = per_position.view(3, 4, 4, 3, 8, 8).permute(0, 3, 1, 4, 2, 5).reshape(3, 3, 32, 32)
    torch.testing.assert_close(reference, grid, atol=ATOL, rtol=0)


def test_raw_generator_mode_is_restored() -> None:
    model = CocoGAN(get_preset("tiny").model)
    model.generator.train()
    full_images(model, latents([0], 32), raw=True)
    assert model.generator.training


@pytest.mark.parametrize("box", [(0, 0, 32, 32), (5, 3, 20, 17), (16, 16, 16, 16), (31, 0, 1, 1)])
def test_viewport_equals_crop_of_full_image(tiny: CocoGAN, box: tuple[int, ...]) -> None:
    z = latents([3, 4], 32)
    full = full_images(tiny, z)
    pixel_box = cartesian_box(tiny.coords, *box)
    calls: list[int] = []
    hook = tiny.generator_ema.register_forward_hook(lambda _m, i, _o: calls.append(len(i[0])))
    try:
        view = viewport(tiny, z, pixel_box, chunk=10_000)
    finally:
        hook.remove()
    top, left, height, width = box
    torch.testing.assert_close(view, full[:, :, top:top + height, left:left + width],
                               atol=ATOL, rtol=0)
    assert sum(calls) == 2 * covering_rect(tiny.coords, pixel_box).count  # only needed patches


def test_cylindrical_viewport_across_the_seam_equals_wrapped_crop(pano: CocoGAN) -> None:
    z = latents([7], 32)
    full = full_images(pano, z)  # (1, 3, 32, 96)
    for start, end, rows in ((300, 60, (4, 28)), (350, 10, (0, 32)), (0, 720, (8, 16))):
        box = cylindrical_box(pano.coords, start, end, *rows)
        expected = crop(full, torch.tensor([box.top]), torch.tensor([box.left]), box.height,
                        box.width, wrap=True)
        torch.testing.assert_close(viewport(pano, z, box), expected, atol=ATOL, rtol=0)
    assert cylindrical_box(pano.coords, 300, 60).width == 32  # 120 degrees of 96 pixels


def test_panorama_pasted_twice_is_continuous_at_360(pano: CocoGAN) -> None:
    z = latents([2], 32)
    full = full_images(pano, z)
    twice = wrap_view(full, 0, 720)
    assert twice.shape == (1, 3, 32, 192)
    torch.testing.assert_close(twice[..., 96:], twice[..., :96], atol=0, rtol=0)
    # By construction of the coordinates, the column after K-1 is column 0: generating at the
    # unwrapped column K (theta = 1) gives the patch of column 0 (theta = -1).
    system, k = pano.coords, pano.coords.grid_w
    rows = torch.arange(system.grid_h, dtype=torch.float32)[None]  # (1, K_y)
    torch.testing.assert_close(system.micro_coords(rows, torch.full_like(rows, k)),
                               system.micro_coords(rows, torch.zeros_like(rows)), atol=1e-6,
                               rtol=0)
    with torch.no_grad():
        at_k = generate_micro(pano.generator_ema, system, z, rows, torch.full_like(rows, k))
    torch.testing.assert_close(at_k[0], twice[0, :, :, 96:104].reshape(3, 4, 8, 8)
                               .permute(1, 0, 2, 3), atol=1e-4, rtol=0)
    assert wrap_view(full, 90, 180).shape[-1] == 48  # any width of view


def test_huge_equals_full_image_and_chunking_does_not_change_it(tiny: CocoGAN,
                                                               tmp_path: Path) -> None:
    z = latents([11], 32)
    expected = to_uint8(full_images(tiny, z)[0]).astype(int)
    outputs = []
    for index, (chunk, tile, suffix) in enumerate([(1, 16, ".tif"), (5, 32, ".tif"),
                                                   (1000, 16, ".png")]):
        plan = plan_huge(tiny.coords, 32, 32, tile=tile)
        path = write_huge(tiny, z, tmp_path / f"out{index}{suffix}", plan, chunk=chunk,
                          progress=False)
        image = tifffile.imread(path) if suffix == ".tif" else np.asarray(Image.open(path))
        assert image.shape == (32, 32, 3)
        assert np.abs(image.astype(int) - expected).max() <= 1  # float ties may round apart
        outputs.append(image.astype(int))
    assert all(np.abs(o - outputs[0]).max() <= 1 for o in outputs)


def test_huge_beyond_the_trained_grid_is_centred(tiny: CocoGAN, tmp_path: Path) -> None:
    z = latents([4], 32)
    plan = plan_huge(tiny.coords, 64, 48, tile=16)
    assert (plan.origin_row, plan.origin_col) == (-2, -1)
    path = write_huge(tiny, z, tmp_path / "big.tif", plan, chunk=64, progress=False,
                      compress=True)
    image = tifffile.imread(path).astype(int)
    assert image.shape == (64, 48, 3)
    inner = to_uint8(full_images(tiny, z)[0]).astype(int)
    assert np.abs(image[16:48, 8:40] - inner).max() <= 1
    extended = to_uint8(beyond(tiny, z, Extension(2, 2, 1, 1))[0]).astype(int)
    assert np.abs(image - extended).max() <= 1


def test_huge_rejects_bad_sizes(tiny: CocoGAN, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="multiple of the 8-pixel micro patch"):
        plan_huge(tiny.coords, 100, 64)
    with pytest.raises(ValueError, match="--tile"):
        plan_huge(tiny.coords, 64, 64, tile=24)
    with pytest.raises(ValueError, match="--output"):
        write_huge(tiny, latents([0], 32), tmp_path / "x.jpg", plan_huge(tiny.coords, 32, 32))


def test_beyond_extends_the_grid(tiny: CocoGAN, pano: CocoGAN) -> None:
    z = latents([0, 1], 32)
    image = beyond(tiny, z, Extension.of([1, 0, 2, 0]))
    assert image.shape == (2, 3, 40, 48)
    torch.testing.assert_close(image[:, :, 8:, 16:], full_images(tiny, z), atol=ATOL, rtol=0)
    assert Extension.of([3]) == Extension(3, 3, 3, 3)
    with pytest.raises(ValueError, match="no left or right border"):
        beyond(pano, z, Extension(0, 0, 1, 1))
    assert beyond(pano, z, Extension(1, 1, 0, 0)).shape == (2, 3, 48, 96)


def test_slerp_endpoints_are_exact() -> None:
    z = latents([0, 1], 32)
    path = slerp(z[0], z[1], torch.linspace(0, 1, 5))
    assert torch.equal(path[0], z[0]) and torch.equal(path[-1], z[1])
    norms = path.norm(dim=1)
    assert float(norms.min()) > 0.5 * float(norms.max())  # no collapse towards the origin


def test_interpolations_have_right_frames_and_endpoints(tiny: CocoGAN) -> None:
    z = latents([5, 6], 32)
    full = full_images(tiny, z)
    frames = full_interpolation(tiny, z[0], z[1], 6)
    assert frames.shape == (6, 3, 32, 32)
    torch.testing.assert_close(frames[[0, -1]], full, atol=ATOL, rtol=0)

    micro = micro_interpolation(tiny, z[0], z[1], 1, 2, 5)
    assert micro.shape == (5, 3, 8, 8)
    torch.testing.assert_close(micro[[0, -1]], full[:, :, 8:16, 16:24], atol=ATOL, rtol=0)

    spatial = spatial_interpolation(tiny, z[0], (-1.0, -1.0), (1.0, 1.0), 7)
    assert spatial.shape == (7, 3, 8, 8)
    torch.testing.assert_close(spatial[0], full[0, :, :8, :8], atol=ATOL, rtol=0)
    torch.testing.assert_close(spatial[-1], full[0, :, 24:, 24:], atol=ATOL, rtol=0)
    # Frame 1 sits between grid points ((-2/3, -2/3) = grid 0.5): not a copy of either.
    assert (spatial[1] - spatial[0]).abs().max() > 1e-4
    with pytest.raises(ValueError, match="--frames"):
        full_interpolation(tiny, z[0], z[1], 1)


def test_inspire_on_a_generated_macro_patch(tiny: CocoGAN) -> None:
    full = full_images(tiny, latents([8], 32))[0]
    patch = crop_patch(tiny, full, 8, 16)
    torch.testing.assert_close(patch, full[:, 8:24, 16:32])
    result = inspire(tiny, patch[None])
    assert result.full.shape == (1, 3, 32, 32) and result.macro.shape == (1, 3, 16, 16)
    assert 0 <= int(result.rows[0]) < 3 and 0 <= int(result.cols[0]) < 3
    top, left = int(result.top[0]), int(result.left[0])
    torch.testing.assert_close(result.macro[0], result.full[0, :, top:top + 16, left:left + 16])
    assert result.z.shape == (1, 32) and result.coords.shape == (1, 2)


def test_cylindrical_head_predicts_the_row_alone(pano: CocoGAN) -> None:
    """N1: the only coordinate L_S trains on the cylinder is y, so the head has one output."""
    patches = torch.zeros(2, 3, 16, 48)
    assert inspire(pano, patches).coords.shape == (2, 1)
    assert pano.discriminator.spatial.net[3].bias.shape == (1,)


class Fixed(torch.nn.Module):
    """A head that gives one answer whatever the patch (an estimate made exact)."""

    def __init__(self, answer: torch.Tensor) -> None:
        super().__init__()
        self.answer = answer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.answer.expand(h.shape[0], -1)


def test_inspire_on_a_panorama_searches_the_heading(pano: CocoGAN,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """N1: D's head predicts the row alone on the cylinder; the column comes from the search
    over the K columns of G's regenerated panorama, so with Q's latent exact every column of a
    generated panorama is found, and a latent turned one column (z[0] + 2/K, model.z_phase)
    finds the same patch one column to the left. (The row is the head's, set here.)"""
    system, z = pano.coords, latents([5], pano.config.z_dim)
    assert pano.config.z_phase and system.cyclic
    full = full_images(pano, z)[0]
    patches = torch.stack([crop_patch(pano, full, 8, 8 * col) for col in range(system.grid_w)])
    row_one = system.macro_coords(torch.ones(1), torch.zeros(1))[:, :1]
    monkeypatch.setattr(pano.discriminator, "spatial", Fixed(row_one))
    latent = Fixed(z)
    monkeypatch.setattr(pano.discriminator, "content", latent)
    found = inspire(pano, patches)
    assert found.rows.tolist() == [1] * system.grid_w
    assert found.cols.tolist() == list(range(system.grid_w))
    torch.testing.assert_close(found.macro, patches, atol=ATOL, rtol=0)
    turned = z.clone()
    turned[0, 0] += 2 / system.grid_w
    latent.answer = turned
    shifted = inspire(pano, patches).cols
    assert shifted.tolist() == [(c - 1) % system.grid_w for c in range(system.grid_w)]


def test_inspire_bad_inputs_are_clear(tiny: CocoGAN) -> None:
    full = torch.zeros(3, 32, 32)
    with pytest.raises(ValueError, match="leaves the 32x32 image"):
        crop_patch(tiny, full, 20, 0)
    with pytest.raises(ValueError, match="must be 32x32"):
        crop_patch(tiny, torch.zeros(3, 64, 64), 0, 0)
    with pytest.raises(ValueError, match="16x16"):
        check_patch(tiny, torch.zeros(3, 8, 16))
    assert content_warning(get_preset("tiny")) is not None
    assert content_warning(get_preset("tiny-inspired")) is None


def test_viewport_and_box_errors(tiny: CocoGAN, pano: CocoGAN) -> None:
    with pytest.raises(ValueError, match="leaves the 32x32 image"):
        cartesian_box(tiny.coords, 20, 20, 16, 16)
    with pytest.raises(ValueError, match="positive"):
        cartesian_box(tiny.coords, 0, 0, 0, 4)
    with pytest.raises(ValueError, match="--rows"):
        cylindrical_box(pano.coords, 0, 90, 10, 40)
    with pytest.raises(ValueError, match="empty"):
        cylindrical_box(pano.coords, 30, 30)


def ramp_images(count: int, generator: torch.Generator) -> torch.Tensor:
    """Structured 32x32 images: colour ramps along x and y with random contrast and offset.

    Position is visible in every macro patch, so D's spatial head and G's L_S learn fast.
    """
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    base = torch.stack([xx, yy, -xx * yy])[None]  # (1, 3, 32, 32)
    gain = 0.6 + 0.4 * torch.rand(count, 3, 1, 1, generator=generator)
    shift = 0.1 * torch.randn(count, 3, 1, 1, generator=generator)
    return (base * gain + shift).clamp(-1, 1)


def position_accuracy(model: CocoGAN, images: torch.Tensor, steps: int, seed: int = 0) -> float:
    """Train tiny-inspired for ``steps``, then how often inspire() finds a generated patch's
    position (patches from G in eval mode, 20 per discrete macro position)."""
    config = get_preset("tiny-inspired")
    optimizers = build_optimizers(model, config)
    rng = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batch = images[torch.randint(0, len(images), (16,), generator=rng)]
        train_step(model, optimizers, batch, config, rng)
    rows, cols = model.coords.macro_grid()
    rows, cols = rows.repeat(20), cols.repeat(20)
    z = latents(list(range(1000, 1000 + len(rows))), config.model.z_dim)
    with evaluating(model.generator), torch.no_grad():
        patches = generate_macro(model.generator, model.coords, z, rows.float(), cols.float())
    found = inspire(model, patches, raw=True)
    return float(((found.rows == rows) & (found.cols == cols)).float().mean())


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Train on one torch thread: as fast for these small ops, and far steadier (OpenMP barriers
    stall) when other processes share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.usefixtures("one_thread")
def test_inspire_position_beats_chance_after_short_training() -> None:
    torch.manual_seed(0)
    model = CocoGAN(get_preset("tiny-inspired").model)
    accuracy = position_accuracy(model, ramp_images(256, torch.Generator().manual_seed(0)), 60)
    assert accuracy > 2 / 9, f"position accuracy {accuracy:.3f} vs chance {1 / 9:.3f}"


@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
def test_inspire_position_beats_chance_on_builtin_blobs() -> None:
    from cocogan.data import BuiltinDataset

    torch.manual_seed(0)
    dataset = BuiltinDataset("blobs", 32, 32)
    images = torch.stack([dataset[i] for i in range(256)])
    model = CocoGAN(get_preset("tiny-inspired").model)
    accuracy = position_accuracy(model, images, 300)
    assert accuracy > 2 / 9, f"position accuracy {accuracy:.3f} vs chance {1 / 9:.3f}"
