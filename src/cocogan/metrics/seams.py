"""Seam metrics for generation by parts.

COCO-GAN assembles full images from independently generated micro patches (Sec. 2); visible
seams at patch borders are its typical artefact. `seam_ratio` compares pixel jumps across
micro-patch borders with jumps elsewhere (1 = seamless, > 1 = visible seams). `wrap_ratio`
does the same for the left/right borders of panoramas that should be cyclic (Sec. 3.3).

Legend: B batch, C channels, H/W height/width, mh/mw micro patch height/width.
"""

from __future__ import annotations

import torch


def _check(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got {tuple(images.shape)}")
    return images.double()


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    """num / den as a float; nan when the image set has no texture (den == 0)."""
    return float(num / den) if den > 0 else float("nan")


def seam_ratio(images: torch.Tensor, micro: int | tuple[int, int]) -> float:
    """Mean |jump| across interior micro-patch borders / mean |jump| between other neighbours.

    Args:
        images: (B, C, H, W) full images assembled from micro patches.
        micro: micro patch size in pixels, int or (mh, mw).
    Returns:
        ~1 for seamless images; > 1 when borders are visible. nan for flat images.
    """
    x = _check(images)
    mh, mw = (micro, micro) if isinstance(micro, int) else micro
    h, w = x.shape[-2:]
    if min(mh, mw) < 2 or (mh >= h and mw >= w):
        raise ValueError(f"micro {micro} leaves no interior borders (and non-borders) in {h}x{w}")
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().sum((0, 1, 2))  # (W-1,): jump col j -> j+1
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().sum((0, 1, 3))  # (H-1,): jump row i -> i+1
    col_seam = (torch.arange(1, w, device=x.device) % mw) == 0  # (W-1,) j+1 starts a patch
    row_seam = (torch.arange(1, h, device=x.device) % mh) == 0  # (H-1,)
    per_col = x.shape[0] * x.shape[1] * h  # differences summed into each dx entry
    per_row = x.shape[0] * x.shape[1] * w
    seam = dx[col_seam].sum() + dy[row_seam].sum()
    rest = dx[~col_seam].sum() + dy[~row_seam].sum()
    n_seam = col_seam.sum() * per_col + row_seam.sum() * per_row
    n_rest = (~col_seam).sum() * per_col + (~row_seam).sum() * per_row
    return _ratio(seam / n_seam, rest / n_rest)


def wrap_ratio(images: torch.Tensor) -> float:
    """Mean |last column - first column| / mean |jump| between adjacent interior columns.

    ~1 when the image continues seamlessly across its left/right edge (cylindrical
    panoramas); larger when it does not.
    """
    x = _check(images)
    if x.shape[-1] < 2:
        raise ValueError(f"need width >= 2, got {x.shape[-1]}")
    wrap = (x[..., -1] - x[..., 0]).abs().mean()
    inner = (x[..., 1:] - x[..., :-1]).abs().mean()
    return _ratio(wrap, inner)
