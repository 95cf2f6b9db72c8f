"""Coordinate systems and patch operations: values, wrap-around and round trips."""

from __future__ import annotations

import math

import pytest
import torch

from cocogan import ModelConfig, assemble, coordinate_system, crop, get_preset, merge, split


def test_celeba128_cartesian_values() -> None:
    system = coordinate_system(get_preset("celeba128").model)
    rows, cols = system.micro_grid()
    micro = system.micro_coords(rows, cols)
    assert torch.allclose(micro[:, 0].unique(), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    assert torch.allclose(micro[:, 1].unique(), torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))
    mrows, mcols = system.macro_grid()
    macro = system.macro_coords(mrows, mcols)
    assert macro.shape == (9, 2)
    assert torch.allclose(macro[:, 0].unique(), torch.tensor([-1.0, 0.0, 1.0]))
    # macro position -> the micro positions it contains and its pixel offset
    inner_rows, inner_cols = system.micro_in_macro(torch.tensor([1.0]), torch.tensor([2.0]))
    assert inner_rows.tolist() == [[1, 1, 2, 2]] and inner_cols.tolist() == [[2, 3, 2, 3]]
    top, left = system.pixel_offset(torch.tensor([1.0]), torch.tensor([2.0]))
    assert (top.item(), left.item()) == (32, 64)


def test_general_macro_shape_and_decoding() -> None:
    model = ModelConfig(full_height=64, full_width=96, micro=8, macro=16, macro_width=32)
    system = coordinate_system(model)
    assert (system.macro_h, system.macro_w, system.macro_rows, system.macro_cols) == (2, 4, 7, 9)
    rows, cols = system.macro_grid()
    back_rows, back_cols = system.nearest_macro(system.macro_coords(rows, cols))
    assert torch.equal(back_rows, rows) and torch.equal(back_cols, cols)


def test_cylindrical_values_and_wrap() -> None:
    system = coordinate_system(get_preset("matterport").model)  # 256 x 768, micro 64
    assert system.coord_dim == 3 and system.grid_w == 12
    rows, cols = system.micro_grid()
    coords = system.micro_coords(rows, cols)
    theta = torch.atan2(coords[:, 2], coords[:, 1]) / math.pi
    expected = -1 + 2 * cols.float() / 12
    assert torch.allclose(torch.remainder(theta - expected + 1, 2) - 1, torch.zeros(1),
                          atol=1e-5)
    # no column at +1: column K would repeat column 0
    assert torch.allclose(system.micro_coords(torch.tensor(0.0), torch.tensor(12.0)),
                          system.micro_coords(torch.tensor(0.0), torch.tensor(0.0)), atol=1e-5)
    # every column is a macro position; the last macro patch wraps over the seam
    assert system.macro_cols == 12
    _, inner_cols = system.micro_in_macro(torch.tensor([0.0]), torch.tensor([11.0]))
    _, left = system.pixel_offset(torch.tensor([0.0, 0.0]), torch.tensor([12.0, 13.0]))
    assert inner_cols.tolist() == [[11, 12, 11, 12]] and left.tolist() == [0, 64]
    # the column is not decoded on the cylinder (D's head predicts y alone, review N1)
    back_rows, back_cols = system.nearest_macro(system.macro_coords(*system.macro_grid()))
    assert back_rows.tolist() == system.macro_grid()[0].tolist() and back_cols is None


@pytest.mark.parametrize("continuous", [False, True])
def test_sampling_is_uniform_over_valid_positions(continuous: bool) -> None:
    system = coordinate_system(get_preset("celeba128").model)
    rng = torch.Generator().manual_seed(0)
    rows, cols = system.sample_macro(6000, continuous=continuous, generator=rng)
    assert rows.min() >= 0 and rows.max() <= 2 and cols.min() >= 0 and cols.max() <= 2
    if continuous:
        assert rows.unique().numel() > 10  # fractional positions occur
        assert torch.allclose(rows * 32, (rows * 32).round())  # whole-pixel offsets
    else:
        counts = torch.bincount((rows * 3 + cols).long(), minlength=9).float()
        assert counts.min() > 0.8 * counts.mean()  # every position roughly equally often


def test_extended_sampling_leaves_the_image() -> None:
    system = coordinate_system(get_preset("celeba128").model)
    rows, cols = system.sample_macro(2000, extend=1, generator=torch.Generator().manual_seed(1))
    assert rows.min() == -1 and rows.max() == 3
    inside = system.in_bounds(rows, cols)
    assert 0 < inside.float().mean() < 1
    assert system.macro_coords(rows, cols).abs().max() > 1  # beyond [-1, 1]


def _synthetic(batch: int, height: int, width: int) -> torch.Tensor:
    return torch.linspace(-1, 1, batch * 3 * height * width).reshape(batch, 3, height, width)


@pytest.mark.parametrize("source", ["emoji", "synthetic"])
def test_crop_merge_assemble_invariants(source: str, emoji_image: torch.Tensor) -> None:
    images = emoji_image.repeat(2, 1, 1, 1) if source == "emoji" else _synthetic(2, 64, 64)
    if source == "emoji":
        images[1] = images[1].flip(-1)
    system = coordinate_system(get_preset("celeba64").model)  # micro 16, macro 32
    mrows, mcols = system.sample_macro(2, generator=torch.Generator().manual_seed(3))
    top, left = system.pixel_offset(mrows, mcols)
    real_macro = crop(images, top, left, 32, 32)
    # crop the real micro patches at their positions, merge them: the same macro patch
    inner_rows, inner_cols = system.micro_in_macro(mrows, mcols)  # (B, P)
    micro_top, micro_left = system.pixel_offset(inner_rows.reshape(-1), inner_cols.reshape(-1))
    micro = crop(images.repeat_interleave(4, 0), micro_top, micro_left, 16, 16)
    assert torch.equal(merge(micro.view(2, 4, 3, 16, 16), 2, 2), real_macro)
    # all micro patches of the image, in any order, assemble back into the image
    patches = split(images, 16)
    order = torch.randperm(16)
    rows, cols = system.micro_grid()
    assert torch.equal(assemble(patches[:, order], rows[order], cols[order]), images)
    # a sub-rectangle assembles into the matching crop
    sub = (rows >= 1) & (rows <= 2) & (cols >= 2)
    expected = images[:, :, 16:48, 32:64]
    assert torch.equal(assemble(patches[:, sub], rows[sub], cols[sub]), expected)


def test_crop_wraps_for_panoramas() -> None:
    images = _synthetic(1, 8, 24)
    window = crop(images, torch.tensor([0]), torch.tensor([20]), 8, 8, wrap=True)
    assert torch.equal(window, torch.cat([images[..., 20:], images[..., :4]], dim=-1))
    with pytest.raises(ValueError, match="leaves"):
        crop(images, torch.tensor([0]), torch.tensor([20]), 8, 8)


def test_assemble_rejects_incomplete_rectangles() -> None:
    with pytest.raises(ValueError, match="rectangle"):
        assemble(torch.zeros(1, 3, 3, 4, 4), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 0]))


def test_tile_images_matches_a_direct_layout() -> None:
    from cocogan.patches import tile_images

    images = torch.rand(5, 3, 4, 6)
    grid = tile_images(images, columns=2, pad=1, fill=-1.0)
    assert grid.shape == (3, 3 * 5 + 1, 2 * 7 + 1)
    expected = torch.full_like(grid, -1.0)
    for index in range(5):  # the obvious per-image copy, as a reference
        top, left = 1 + (index // 2) * 5, 1 + (index % 2) * 7
        expected[:, top:top + 4, left:left + 6] = images[index]
    assert torch.equal(grid, expected)


def test_continuous_cylindrical_sampling_draws_every_column_offset() -> None:
    """A9: on the cylinder every whole-pixel column offset 0 .. K * micro - 1 occurs, including
    the fractional positions across the seam (before: only up to (K - 1) * micro); rows keep
    their (K_y - n_y) * micro + 1 offsets."""
    system = coordinate_system(get_preset("tiny-panorama").model)  # 12 columns of 8 px
    rows, cols = system.sample_macro(20_000, continuous=True,
                                     generator=torch.Generator().manual_seed(0))
    left = torch.round(cols * system.micro).long()
    assert set(left.tolist()) == set(range(system.grid_w * system.micro))  # 96 offsets
    top = torch.round(rows * system.micro).long()
    assert set(top.tolist()) == set(range((system.macro_rows - 1) * system.micro + 1))
    counts = torch.bincount(left, minlength=96).float()
    assert counts.min() > 0.6 * counts.mean()  # uniform
