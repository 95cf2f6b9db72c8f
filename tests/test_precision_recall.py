"""Improved precision and recall (Kynkäänniemi et al. 2019, k = 3): a case worked out by hand,
a brute-force second method, the degenerate cases, bounded memory, and the metric's wiring into
`cocogan eval`, the training callback and the indicators (with a stand-in feature extractor;
the real Inception network runs where its weights are installed)."""

from __future__ import annotations

import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist
from tests.test_evaluation import SMALL, StandIn, make_run

from cocogan.data import build_dataset
from cocogan.evaluation import (
    EvalCallback,
    cocogan_sampler,
    evaluate_run,
    format_table,
    generated_batches,
)
from cocogan.evaluation.callback import best_score, indicator_keys
from cocogan.evaluation.sampling import real_subset
from cocogan.metrics import inception, precision_recall
from cocogan.metrics.frechet import NonFiniteError
from cocogan.outputs import CACHE_ENV

pr_module = importlib.import_module("cocogan.metrics.precision_recall")  # the function shadows it


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def on_x_axis(*xs: float) -> np.ndarray:
    """2-D points (x, 0)."""
    return np.array([[x, 0.0] for x in xs])


# Real: two clusters of four on the x-axis, at 0..3 and 100..103. The k = 3 nearest other points
# of each lie in its own cluster: an end point's 3rd neighbour is 3 away, a middle point's 2
# (its neighbours are at 1, 1 and 2), so the real radii are 3, 2, 2, 3, 3, 2, 2, 3.
REAL = on_x_axis(0, 1, 2, 3, 100, 101, 102, 103)
# Generated: four points between the first cluster's (0.5..3.5: radii 3, 2, 2, 3), six far from
# both clusters (50..55: radii 3, 2, 2, 2, 2, 3) and one at -3, exactly on the ball of the real
# point 0 (radius 3). Its own radius (3rd neighbour 2.5 at 5.5) changes nothing below.
FAKE = on_x_axis(0.5, 1.5, 2.5, 3.5, 50, 51, 52, 53, 54, 55, -3)


def test_hand_computed_case() -> None:
    # Precision: 0.5..3.5 lie within 0.5 of a real point; -3 is at distance 3 = the radius of
    # real 0 (on the boundary counts as inside); 50..55 are >= 47 from any real point: 5 / 11.
    # Recall: real 0..3 lie within 0.5 of a generated point whose radius is >= 2; real
    # 100..103 are 45 from the nearest generated point (55, radius 3): 4 / 8.
    assert precision_recall(REAL, FAKE) == (5 / 11, 0.5)
    just_outside = FAKE.copy()
    just_outside[-1, 0] = -3.01  # now 3.01 from real 0 (radius 3), 4.01 from real 1 (radius 2)
    assert precision_recall(REAL, just_outside) == (4 / 11, 0.5)
    # k = 1: the real radii are all 1 (nearest neighbour), so -3 (3 from real 0) is outside
    # and 0.5..3.5 (0.5 away) inside: 4 / 11; generated radii are 1 for 0.5..3.5 and 50..55, so
    # recall is still real 0..3: 4 / 8.
    assert precision_recall(REAL, FAKE, k=1) == (4 / 11, 0.5)


def brute_force(real: np.ndarray, fake: np.ndarray, k: int) -> tuple[float, float]:
    """Every pairwise distance at once (scipy's direct differences), then the definitions."""
    def radii(x: np.ndarray) -> np.ndarray:
        d = cdist(x, x)
        return np.sort(d, axis=1)[:, k]  # column 0 is the point itself
    cross = cdist(fake, real)  # (M, N)
    precision = np.mean([(cross[i] <= radii(real)).any() for i in range(len(fake))])
    recall = np.mean([(cross[:, j] <= radii(fake)).any() for j in range(len(real))])
    return float(precision), float(recall)


@pytest.mark.parametrize(("n", "m", "dim", "k", "block"), [
    (40, 30, 2, 3, 7),  # blocks of one row (7 // 40 -> 1)
    (90, 120, 16, 3, 1000),  # blocks that do not divide the rows
    (64, 64, 2048, 3, 1 << 22),  # Inception-sized rows, one block
    (50, 70, 8, 5, 333),
])
def test_batched_matches_brute_force(n: int, m: int, dim: int, k: int, block: int) -> None:
    rng = np.random.default_rng(n + m + dim)
    embed = rng.normal(size=(min(dim, 4), dim))  # 4-d data in `dim` dims
    real = rng.normal(size=(n, embed.shape[0])) @ embed
    fake = (rng.normal(size=(m, embed.shape[0])) * 0.6 + 1.2) @ embed  # narrower, shifted
    got = precision_recall(real, fake, k=k, block_entries=block)
    want = brute_force(real, fake, k)
    assert got == pytest.approx(want, abs=1e-12)
    assert 0 < got[0] < 1 and 0 < got[1] < 1


def test_identical_and_disjoint_sets() -> None:
    rng = np.random.default_rng(0)
    real = rng.normal(size=(200, 32))
    assert precision_recall(real, real.copy()) == (1.0, 1.0)
    assert precision_recall(real, real + 1e3) == (0.0, 0.0)
    assert precision_recall(torch.from_numpy(real).float(), torch.from_numpy(real).float()) \
        == (1.0, 1.0)  # torch input, float32


def test_duplicated_points_have_zero_radius_and_still_count() -> None:
    # Four copies of 0: their 3rd other neighbour is at distance 0, so their balls are points;
    # 10's radius is 10. Generated -0.1 is 0.1 from the copies and 10.1 from 10: outside.
    # Generated radii are 0.1 (0, 0, 0, -0.1), covering the copies but not 10: recall 4 / 5.
    real = on_x_axis(0, 0, 0, 0, 10)
    assert precision_recall(real, on_x_axis(0, 0, 0, -0.1)) == (0.75, 0.8)


def test_blocks_bound_the_distance_matrices(monkeypatch: pytest.MonkeyPatch) -> None:
    """The distances are never held as one (N, M) matrix: 10k x 10k in float64 is 800 MB."""
    shapes: list[tuple[int, int]] = []
    original = pr_module._squared_distances

    def spy(a: torch.Tensor, b: torch.Tensor, norms: torch.Tensor) -> torch.Tensor:
        shapes.append((a.shape[0], b.shape[0]))
        return original(a, b, norms)

    monkeypatch.setattr(pr_module, "_squared_distances", spy)
    rng = np.random.default_rng(1)
    precision_recall(rng.normal(size=(300, 4)), rng.normal(size=(250, 4)), block_entries=3000)
    assert max(r * c for r, c in shapes) <= 3000
    assert sum(r for r, c in shapes if c == 300) == 300 + 250  # every row of both sides once


def test_bad_inputs_are_one_line() -> None:
    with pytest.raises(ValueError, match="need more than 3 samples per side, got 3: raise --n"):
        precision_recall(np.zeros((10, 2)), np.zeros((3, 2)))
    with pytest.raises(ValueError, match="feature dims differ: 2 vs 3"):
        precision_recall(np.zeros((10, 2)), np.zeros((10, 3)))
    bad = np.zeros((10, 2))
    bad[4, 1] = np.nan
    with pytest.raises(NonFiniteError, match="NaN or infinity"):
        precision_recall(np.ones((10, 2)), bad)


# --------------------------------------------------------------------------- wiring


def test_eval_reports_precision_recall_beside_real_halves(tmp_path: Path) -> None:
    run, _, model = make_run(tmp_path / "run")
    result = evaluate_run(run, "builtin:blobs", "fid,precision,recall", cfg=SMALL, device="cpu",
                          feature_extractor=StandIn())
    values = result.values
    # the same images' features computed directly (as test_evaluation does for FID)
    extractor = StandIn()
    fake = extractor(torch.cat(list(generated_batches(cocogan_sampler(model), 24, 12, 0))))
    real = torch.stack(list(real_subset(build_dataset("builtin:blobs", 32, 32), 24)))
    real = extractor(((real.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1)  # 8-bit, as files
    assert (values["precision"], values["recall"]) == pytest.approx(
        precision_recall(real, fake), abs=1e-9)
    assert (values["precision_real"], values["recall_real"]) == pytest.approx(
        precision_recall(real[:12], real[12:]), abs=1e-9)  # the second real half vs the first
    record = json.loads((run / "eval.json").read_text())
    assert record["n"]["generated"]["precision"] == record["n"]["real"]["recall"] == 24
    table = format_table(result)
    assert "precision (k=3)" in table and "recall (k=3)" in table
    again = evaluate_run(run, "builtin:blobs", "recall", cfg=SMALL, device="cpu",
                         feature_extractor=StandIn())  # real features from the cache
    assert again.record["real_stats_cached"] and "precision" not in again.values
    assert again.values["recall"] == values["recall"]
    assert again.values["recall_real"] == values["recall_real"]


def test_training_callback_logs_them_and_indicators_plot_them() -> None:
    from cocogan.model import CocoGAN
    from cocogan.presets import get_preset

    config = get_preset("tiny")
    callback = EvalCallback(config, "builtin:blobs", "precision,recall", every=1, settings=SMALL,
                            feature_extractor=StandIn())
    values = callback(CocoGAN(config.model), config, 1)
    assert {"eval/precision", "eval/recall", "eval/precision_real", "eval/recall_real"} <= \
        set(values)
    assert indicator_keys([{"step": 1, **values}]) == [
        "eval/precision", "eval/precision_real", "eval/recall", "eval/recall_real"]
    assert best_score("recall", {"eval/recall": 0.25}) == -0.25  # higher is better
    assert best_score("precision", {}) is None


needs_weights = pytest.mark.skipif(inception.installed_package_weights() is None,
                                   reason=f"weights not installed: {inception.INSTALL_COMMAND}")


@needs_weights
@pytest.mark.slow  # 16 images through the real Inception network: ~20 s on a loaded CPU
def test_on_inception_features_noise_is_neither_precise_nor_recalled() -> None:
    dataset = build_dataset("builtin:blobs", 32, 32)
    blobs = torch.stack([dataset[i] for i in range(8)])
    noise = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    features = inception.InceptionFeatures(batch_size=8)
    real, fake = features(blobs), features(noise)
    assert precision_recall(real, real) == (1.0, 1.0)
    assert precision_recall(real, fake) == (0.0, 0.0)
