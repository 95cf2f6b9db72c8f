"""Improved precision and recall (Kynkäänniemi et al. 2019): fidelity and diversity, which FID
folds into one number, apart. A set's manifold is the union of balls reaching each point's k-th
nearest neighbour (k = 3); precision is the share of generated samples in the real manifold,
recall the reverse. Distances come in blocks of at most BLOCK_ENTRIES (32 MB, not 800 MB for
10,000 x 10,000). Legend: N real, M generated, B block rows.
"""

from __future__ import annotations

import torch

from cocogan.metrics.frechet import ArrayLike, NonFiniteError, as_float64

K_NEIGHBOURS = 3  # the paper's k
BLOCK_ENTRIES = 1 << 22  # distances held at once (32 MB in float64)


def _block_rows(cols: int, block_entries: int) -> int:
    """Rows per block so a block holds at most ``block_entries`` distances (at least one)."""
    return max(1, block_entries // max(cols, 1))


def _squared_distances(a: torch.Tensor, b: torch.Tensor, b_norms: torch.Tensor) -> torch.Tensor:
    """(A, B) squared Euclidean distances via |a|^2 + |b|^2 - 2 a.b, clamped at 0."""
    return ((a * a).sum(1, keepdim=True) + b_norms[None, :] - 2.0 * a @ b.T).clamp_(min=0.0)


def knn_radii(features: torch.Tensor, k: int = K_NEIGHBOURS,
              block_entries: int = BLOCK_ENTRIES) -> torch.Tensor:
    """(N,) squared distance of each row to its k-th nearest other row of the same set."""
    n = features.shape[0]
    if n <= k:
        raise ValueError(f"precision/recall with k={k} need more than {k} samples per side, "
                         f"got {n}: raise --n")
    norms = (features * features).sum(1)
    radii = torch.empty(n, dtype=features.dtype)
    step = _block_rows(n, block_entries)
    for start in range(0, n, step):
        block = _squared_distances(features[start:start + step], features, norms)  # (B, N)
        rows = block.shape[0]
        block[torch.arange(rows), torch.arange(start, start + rows)] = 0.0  # self: exactly 0
        radii[start:start + rows] = block.kthvalue(k + 1, dim=1).values  # self is the 1st
    return radii


def precision_recall(real: ArrayLike, fake: ArrayLike, k: int = K_NEIGHBOURS,
                     block_entries: int = BLOCK_ENTRIES) -> tuple[float, float]:
    """(precision, recall) of generated ``fake`` (M, D) against ``real`` (N, D) features; a point
    on a ball's boundary is inside, as in the paper's code."""
    r, f = (torch.from_numpy(as_float64(x)) for x in (real, fake))
    if r.shape[1] != f.shape[1]:
        raise ValueError(f"feature dims differ: {r.shape[1]} vs {f.shape[1]}")
    if not (torch.isfinite(r).all() and torch.isfinite(f).all()):
        raise NonFiniteError("precision/recall: features hold NaN or infinity")
    real_radii, fake_radii = knn_radii(r, k, block_entries), knn_radii(f, k, block_entries)
    real_norms = (r * r).sum(1)
    inside_real = torch.zeros(f.shape[0], dtype=torch.bool)  # fake i in the real manifold
    covered = torch.zeros(r.shape[0], dtype=torch.bool)  # real j in the fake manifold
    step = _block_rows(r.shape[0], block_entries)
    for start in range(0, f.shape[0], step):
        block = _squared_distances(f[start:start + step], r, real_norms)  # (B, N)
        inside_real[start:start + step] = (block <= real_radii[None, :]).any(1)
        covered |= (block <= fake_radii[start:start + step, None]).any(0)
    return float(inside_real.double().mean()), float(covered.double().mean())
