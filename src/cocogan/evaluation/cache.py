"""On-disk cache of real-data feature statistics (FID's reference side).

Features of 50,000 real images take minutes even on a GPU and never change for a given data
source, so their mean, covariance and the rows kept for KID are stored once under a key made of
the source's fingerprint (path, file list, size, crop mode, preprocessing version), the feature
extractor's name and the image counts. The Inception extractor's name carries its
preprocessing and the SHA-256 of its weights, so statistics computed with other or damaged
weights are never reused with the standard ones (version 1 keyed by the network's name only,
and a run with one layer scaled by 1.5 left statistics that later runs read back: FID 439.6
instead of 467.3). Location: $COCOGAN_CACHE/stats, else $XDG_CACHE_HOME or
~/.cache, then cocogan/stats.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cocogan.metrics import FeatureStats
from cocogan.outputs import CACHE_ENV as CACHE_ENV  # re-exported: the variable to set
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
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cocogan" / "stats"


def stats_key(fingerprint: str, extractor: str, count: int, keep: int) -> str:
    """File-name-safe key, e.g. ``builtin-blobs-32x32-abc...-inception-v3-pool3-n10000-k10000``.

    Args:
        fingerprint: `cocogan.data.dataset_fingerprint` of the real source as preprocessed.
        extractor: the feature extractor's name (features of different networks never mix;
            Inception's includes its preprocessing and weights hash).
        count: real images summarised.
        keep: feature rows retained for KID.
    """
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
