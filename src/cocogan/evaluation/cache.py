"""On-disk cache of the real side of FID/KID (minutes of features even on a GPU, fixed for a
data source): mean, covariance and the rows kept for KID, keyed by the source's fingerprint,
the extractor's name (Inception's carries its preprocessing and weights' SHA-256: version 1
keyed by the network alone served other weights' statistics, issue 19) and the image counts.
In $COCOGAN_CACHE/stats (see `cocogan.outputs.cache_folder`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cocogan.metrics import FeatureStats
from cocogan.outputs import atomic_write, cache_folder

CACHE_VERSION = 2  # bump when the cached content or its meaning changes (2: weights hash)


@dataclass(frozen=True)
class RealFeatures:
    """Reference-side FID/KID inputs: Gaussian statistics and the rows kept for KID."""

    stats: FeatureStats
    kept: np.ndarray  # (K, D) float32 feature rows, K <= the KID keep count


def stats_dir() -> Path:
    """Directory of cached statistics (created on first save)."""
    return cache_folder("stats")


def stats_key(fingerprint: str, extractor: str, count: int, keep: int) -> str:
    """File-name-safe key of a `dataset_fingerprint`, an extractor's name, the real images
    summarised and the rows kept for KID, e.g. ``builtin-blobs-32x32-...-n10000-k10000-v2``."""
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", extractor)
    return f"{fingerprint}-{name}-n{count}-k{keep}-v{CACHE_VERSION}"


def load_real_features(key: str) -> RealFeatures | None:
    """Cached entry for `key`, or None when absent or unreadable (then it is recomputed)."""
    path = stats_dir() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path) as f:
            stats = FeatureStats(mean=f["mean"], cov=f["cov"], n=int(f["n"]))
            real = RealFeatures(stats=stats, kept=f["kept"])
    except (OSError, KeyError, ValueError):
        return None
    finite = all(np.isfinite(a).all() for a in (stats.mean, stats.cov, real.kept))
    return real if finite else None  # a poisoned entry is recomputed, never used


def save_real_features(key: str, real: RealFeatures) -> Path:
    """Store an entry atomically (a concurrent reader never sees a partial file)."""
    path = stats_dir() / f"{key}.npz"

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            np.savez(handle, mean=real.stats.mean, cov=real.stats.cov,
                     n=np.int64(real.stats.n), kept=real.kept.astype(np.float32))

    atomic_write(path, write)
    return path
