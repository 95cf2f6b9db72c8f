"""Seams, the typical artefact of images assembled from micro patches (Sec. 2): `seam_ratio`
compares pixel jumps across micro-patch borders with jumps elsewhere (1 = seamless), and
`wrap_ratio` the left/right edge of cyclic panoramas (Sec. 3.3). Legend: B batch, C channels,
H/W height/width, mh/mw micro patch height/width.
"""

from __future__ import annotations

import torch


def _check(images: torch.Tensor) -> torch.Tensor:
    if images.ndim != 4:
        raise ValueError(f"expected images (B, C, H, W), got {tuple(images.shape)}")
    return images.double()


def frame_median(images: torch.Tensor) -> torch.Tensor:
    """The median colour (..., C, 1, 1) of each image's 1-px frame: its ground or background."""
    frame = torch.cat([images[..., 0, :], images[..., -1, :], images[..., :, 0],
                       images[..., :, -1]], dim=-1)  # (..., C, 2W + 2H)
    return frame.median(dim=-1).values[..., None, None]


def _ratio(num: torch.Tensor, den: torch.Tensor) -> float:
    """num / den as a float; nan when the image set has no texture (den == 0)."""
    return float(num / den) if den > 0 else float("nan")


def _border_jumps(images: torch.Tensor, micro: int | tuple[int, int]
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images as float64, mean |jump| per column step (W-1,) and row step (H-1,), and which
    steps cross a micro-patch border: step j (pixel j to j+1) when j+1 starts a patch."""
    mh, mw = (micro, micro) if isinstance(micro, int) else micro
    x = _check(images)
    h, w = x.shape[-2:]
    if min(mh, mw) < 2 or (mh >= h and mw >= w):
        raise ValueError(f"micro {(mh, mw)} leaves no interior borders (and non-borders) in "
                         f"{h}x{w}")
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean((0, 1, 2))  # (W-1,)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean((0, 1, 3))  # (H-1,)
    col_seam = (torch.arange(1, w, device=x.device) % mw) == 0  # (W-1,)
    row_seam = (torch.arange(1, h, device=x.device) % mh) == 0  # (H-1,)
    return x, dx, dy, col_seam, row_seam


def seam_ratio(images: torch.Tensor, micro: int | tuple[int, int]) -> float:
    """Mean |jump| across interior micro-patch borders (`micro` or (mh, mw) pixels) / mean |jump|
    between other neighbours: ~1 seamless, > 1 visible borders, nan for flat images."""
    x, dx, dy, col_seam, row_seam = _border_jumps(images, micro)
    h, w = x.shape[-2:]
    # every column step averages H pixels, every row step W: weight the means accordingly
    seam = dx[col_seam].sum() * h + dy[row_seam].sum() * w
    rest = dx[~col_seam].sum() * h + dy[~row_seam].sum() * w
    n_seam = col_seam.sum() * h + row_seam.sum() * w
    n_rest = (~col_seam).sum() * h + (~row_seam).sum() * w
    return _ratio(seam / n_seam, rest / n_rest)


def seam_profile(images: torch.Tensor, micro: int | tuple[int, int]) -> dict[str, float]:
    """The seam ratio of each border line alone (one bad border vs a grid-wide artefact): key
    ``x<p>`` is the vertical line between columns p-1 and p, ``y<p>`` the horizontal one between
    rows; each value is its mean |jump| over that of the non-border steps of its direction."""
    _, dx, dy, col_seam, row_seam = _border_jumps(images, micro)
    profile: dict[str, float] = {}
    for axis, jumps, seam in (("x", dx, col_seam), ("y", dy, row_seam)):
        if seam.all() or not seam.any():
            continue
        rest = jumps[~seam].mean()
        for step in torch.nonzero(seam).flatten().tolist():
            profile[f"{axis}{step + 1}"] = _ratio(jumps[step], rest)
    return profile


def wrap_ratio(images: torch.Tensor) -> float:
    """Mean |last column - first column| / mean |jump| between adjacent interior columns: ~1
    when the image continues seamlessly across its left/right edge (cylindrical panoramas)."""
    x = _check(images)
    if x.shape[-1] < 2:
        raise ValueError(f"need width >= 2, got {x.shape[-1]}")
    wrap = (x[..., -1] - x[..., 0]).abs().mean()
    inner = (x[..., 1:] - x[..., :-1]).abs().mean()
    return _ratio(wrap, inner)


def object_seam_ratio(images: torch.Tensor, micro: int | tuple[int, int],
                      tolerance: float = 0.1) -> float:
    """:func:`seam_ratio` on steps inside objects (pixels off the `frame_median` ground by more
    than ``tolerance`` in a channel, eroded by one pixel): a checker inside emoji is neither
    diluted by the flat ground nor confused with the silhouettes' edges; nan if no such step."""
    x, _, _, col_seam, row_seam = _border_jumps(images, micro)  # (W-1,), (H-1,)
    away = ((x - frame_median(x)).abs() > tolerance).any(1, keepdim=True).double()  # (B, 1, H, W)
    inside = (-torch.nn.functional.max_pool2d(-away, 3, stride=1, padding=1))[:, 0] > 0.5
    dx = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(1)  # (B, H, W-1)
    dy = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(1)  # (B, H-1, W)
    ok_x, ok_y = inside[..., :, 1:] & inside[..., :, :-1], inside[..., 1:, :] & inside[..., :-1, :]
    sums = []
    for seam in (True, False):
        on_x, on_y = ok_x & (col_seam == seam), ok_y & (row_seam[:, None] == seam)
        count = on_x.sum() + on_y.sum()
        if count == 0:
            return float("nan")
        sums.append((dx[on_x].sum() + dy[on_y].sum()) / count)
    return _ratio(*sums)
