"""FID (the paper's headline number, Sec. 3.1) and KID (unbiased, meaningful on few samples),
staged as features (N, D) -> `FeatureStats` -> number so a reference set's statistics can be
cached. Legend: N samples, D feature dims, M subset size.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import linalg

ArrayLike = np.ndarray | torch.Tensor


class NonFiniteError(ValueError):
    """Images, features or statistics hold NaN or infinity (FID of them would be meaningless)."""


def as_float64(feats: ArrayLike) -> np.ndarray:
    """(N, D) float64 numpy array: covariances of 2048-d features lose digits in float32."""
    if isinstance(feats, torch.Tensor):
        feats = feats.detach().cpu().double().numpy()
    arr = np.asarray(feats, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {arr.shape}")
    return arr


@dataclass(frozen=True)
class FeatureStats:
    """Gaussian summary of a feature set: the sufficient statistics for FID."""

    mean: np.ndarray  # (D,)
    cov: np.ndarray  # (D, D), unbiased (divides by n - 1)
    n: int  # number of samples summarised

    @classmethod
    def from_features(cls, feats: ArrayLike) -> FeatureStats:
        """Statistics of a (N, D) feature array held in memory at once."""
        x = as_float64(feats)
        if x.shape[0] < 2:
            raise ValueError(f"need at least 2 samples for a covariance, got {x.shape[0]}")
        return cls(mean=x.mean(axis=0), cov=np.cov(x, rowvar=False), n=x.shape[0])


class StatsAccumulator:
    """Streams feature batches into mean/covariance, keeping the first `keep` rows (for KID); sums
    are float64 around the first batch's mean, so (S_xx - n m m^T) / (n - 1) does not cancel."""

    def __init__(self, keep: int = 0) -> None:
        self.keep = keep
        self.n = 0
        self._shift: np.ndarray | None = None  # (D,)
        self._sum: np.ndarray | None = None  # (D,)
        self._outer: np.ndarray | None = None  # (D, D)
        self._kept: list[np.ndarray] = []

    def update(self, feats: ArrayLike) -> None:
        """Adds a (B, D) batch; NonFiniteError for NaN or infinity (it would poison every sum)."""
        x = as_float64(feats)
        if not np.isfinite(x).all():
            raise NonFiniteError("features hold NaN or infinity: check the feature extractor's "
                                 "weights and the images")
        if self._shift is None:
            d = x.shape[1]
            self._shift = x.mean(axis=0)
            self._sum = np.zeros(d)
            self._outer = np.zeros((d, d))
        elif x.shape[1] != self._shift.shape[0]:
            raise ValueError(f"feature dim changed: got {x.shape[1]}, expected "
                             f"{self._shift.shape[0]}")
        xc = x - self._shift
        self._sum += xc.sum(axis=0)
        self._outer += xc.T @ xc
        self.n += x.shape[0]
        kept = sum(k.shape[0] for k in self._kept)
        if kept < self.keep:
            self._kept.append(x[: self.keep - kept].copy())

    def stats(self) -> FeatureStats:
        """Mean and unbiased covariance of everything seen so far."""
        if self.n < 2 or self._shift is None:
            raise ValueError(f"need at least 2 samples for a covariance, got {self.n}")
        mc = self._sum / self.n  # mean of shifted data
        cov = (self._outer - self.n * np.outer(mc, mc)) / (self.n - 1)
        cov = 0.5 * (cov + cov.T)  # exact symmetry despite rounding
        return FeatureStats(mean=mc + self._shift, cov=cov, n=self.n)

    def features(self) -> np.ndarray:
        """The retained rows (at most `keep`), as (K, D) float64."""
        if not self._kept:
            d = 0 if self._shift is None else self._shift.shape[0]
            return np.zeros((0, d))
        return np.concatenate(self._kept, axis=0)


def frechet_distance(mu1: np.ndarray, cov1: np.ndarray, mu2: np.ndarray, cov2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + Tr(cov1 + cov2 - 2 (cov1 cov2)^(1/2)) of two Gaussians, the trace from
    eigenvalues (`trace_sqrt_product`), not TTUR's `sqrtm`: bounded time (`sqrtm` ran an hour on
    NaN input), no eps for singular products, ~1e-9 relative agreement on finite covariances."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    cov1, cov2 = np.atleast_2d(cov1).astype(np.float64), np.atleast_2d(cov2).astype(np.float64)
    if mu1.shape != mu2.shape or cov1.shape != cov2.shape or cov1.shape != mu1.shape * 2:
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, cov {cov1.shape} vs "
                         f"{cov2.shape}")
    for name, value in (("mean", mu1), ("covariance", cov1), ("mean", mu2), ("covariance", cov2)):
        if not np.isfinite(value).all():
            raise NonFiniteError(f"FID: a feature {name} holds NaN or infinity (non-finite "
                                 "features: damaged Inception weights or generator)")
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(cov1) + np.trace(cov2) - 2.0 * trace_sqrt_product(
        cov1, cov2))


def trace_sqrt_product(cov1: np.ndarray, cov2: np.ndarray) -> float:
    """Tr((cov1 cov2)^(1/2)) for PSD (D, D) matrices: cov1 cov2 is similar to the symmetric PSD
    S cov2 S (S = cov1^(1/2)), whose eigenvalues' square roots sum to it."""
    values, vectors = linalg.eigh(0.5 * (cov1 + cov1.T))  # negative rounding noise -> 0 below
    root = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T  # S
    inner = root @ cov2 @ root  # (D, D), similar to cov1 @ cov2
    values = linalg.eigvalsh(0.5 * (inner + inner.T))
    return float(np.sqrt(np.clip(values, 0.0, None)).sum())


def fid_from_stats(a: FeatureStats, b: FeatureStats) -> float:
    """FID between two cached statistics."""
    return frechet_distance(a.mean, a.cov, b.mean, b.cov)


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Cubic polynomial kernel k(x, y) = (x.y / d + 1)^3 (Bińkowski et al. 2018)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 of (M, D) and (M', D) samples with the cubic kernel: the diagonal terms
    k(x_i, x_i) are dropped, so it is 0 in expectation for samples of one distribution."""
    m, n = x.shape[0], y.shape[0]
    if m < 2 or n < 2:
        raise ValueError(f"need at least 2 samples per set, got {m} and {n}")
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    term_x = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
    term_y = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    return float(term_x + term_y - 2.0 * kxy.mean())


def kernel_inception_distance(feats1: ArrayLike, feats2: ArrayLike, subsets: int = 100,
                              subset_size: int = 1000, seed: int = 0) -> tuple[float, float]:
    """KID of (N1, D) and (N2, D) features: (mean, std) of the unbiased MMD^2 over `subsets`
    random subsets of `subset_size` (clipped to min(N1, N2)) drawn without replacement, seeded."""
    x, y = as_float64(feats1), as_float64(feats2)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"feature dims differ: {x.shape[1]} vs {y.shape[1]}")
    m = min(subset_size, x.shape[0], y.shape[0])
    rng = np.random.default_rng(seed)
    vals = np.array([mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)],  # (M, D) each
                                   y[rng.choice(y.shape[0], m, replace=False)])
                     for _ in range(subsets)])
    return float(vals.mean()), float(vals.std())
