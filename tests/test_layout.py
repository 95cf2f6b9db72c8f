"""Content position measure: closed forms on synthetic images."""

from __future__ import annotations

import pytest
import torch

from cocogan.metrics.layout import (
    colour_distance,
    content_centres,
    content_spread,
    likeness,
    repetition,
)


def square_at(x: int, y: int, size: int = 4, image: int = 32) -> torch.Tensor:
    picture = torch.full((3, image, image), -0.5)
    picture[:, y:y + size, x:x + size] = 0.8
    return picture


def test_centre_of_a_square_is_its_middle() -> None:
    centres = content_centres(torch.stack([square_at(4, 20), square_at(12, 12)]))
    expected = torch.tensor([[6 / 32, 22 / 32], [14 / 32, 14 / 32]])
    assert torch.allclose(centres, expected, atol=1e-6)


def test_spread_is_the_rms_distance_from_the_mean_centre() -> None:
    still = torch.stack([square_at(12, 12)] * 4)
    assert content_spread(still) == pytest.approx(0.0, abs=1e-7)
    moving = torch.stack([square_at(4, 12), square_at(20, 12)])  # centres 16 px apart in x
    assert content_spread(moving) == pytest.approx(8 / 32, abs=1e-6)


def test_background_colour_does_not_matter() -> None:
    light = square_at(8, 4)
    dark = light.clone()
    dark[light < 0] = -1.0
    assert torch.allclose(content_centres(light[None]), content_centres(dark[None]), atol=1e-6)


def test_repetition_of_a_tiled_strip_is_one_and_of_noise_near_zero() -> None:
    tile = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    strip = tile.repeat(1, 1, 1, 6)  # the same 8-px tile six times
    assert repetition(strip, 8) == pytest.approx(1.0, abs=1e-6)
    noise = torch.rand(2, 3, 8, 48, generator=torch.Generator().manual_seed(1))
    assert abs(repetition(noise, 8)) < 0.1
    assert abs(repetition(strip, 5)) < 0.5  # another period does not match


def test_likeness_equals_the_mean_pairwise_cosine_and_tells_one_layout_from_many() -> None:
    images = torch.rand(5, 3, 8, 12, generator=torch.Generator().manual_seed(2))
    x = images.double()
    detail = torch.cat([x.diff(dim=-1).flatten(1), x.diff(dim=-2).flatten(1)], dim=1)
    unit = detail / detail.norm(dim=1, keepdim=True)
    pairs = [float(unit[i] @ unit[j]) for i in range(5) for j in range(5) if i != j]
    assert likeness(images) == pytest.approx(sum(pairs) / len(pairs), abs=1e-6)
    same_place = torch.stack([square_at(12, 12) * scale for scale in (0.5, 0.8, 1.0)])
    assert likeness(same_place) == pytest.approx(1.0, abs=1e-6)  # colours differ, layout not
    moved = torch.stack([square_at(2, 2), square_at(20, 6), square_at(9, 24)])
    assert likeness(moved) == pytest.approx(0.0, abs=1e-6)  # no shared edges


def test_colour_distance_of_a_shift_is_its_squared_mean_difference() -> None:
    """Adding 0.1 (0.05 of the 0..1 range) to every pixel moves each channel mean by 0.05 and
    leaves the stds and every covariance unchanged: FD = 3 x 0.05^2 (x1e3 = 7.5)."""
    real = torch.rand(64, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 1.6 - 0.9
    assert colour_distance(real, real) == pytest.approx(0.0, abs=1e-6)
    assert colour_distance(real + 0.1, real) == pytest.approx(7.5, rel=1e-6)


def test_colour_distance_sees_contrast_that_keeps_the_mean() -> None:
    """Flat grey images against noisy ones of the same mean: only the std moments differ."""
    noisy = torch.randn(64, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.3
    flat = torch.zeros_like(noisy) + noisy.mean(dim=(2, 3), keepdim=True)
    stds = (noisy.double().flatten(2) / 2).std(2)  # the 0..1 scale's stds of the noisy set
    expected = 1e3 * (stds.mean(0).pow(2).sum() + torch.cov(stds.T).trace())  # against all 0
    assert colour_distance(flat, noisy) == pytest.approx(float(expected), rel=1e-4)
