"""Multi-scale sliced Wasserstein distance (SWD), PGGAN's network-free metric (Karras et al.
2018, Sec. 5): random 7x7 neighbourhoods of each Laplacian-pyramid level (down to 16x16) are
descriptors, compared per level by sliced Wasserstein over random directions, x 1e3. Legend:
B batch, C channels, H/W size, N descriptors, K = C * 7 * 7 descriptor dims, P directions.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch
import torch.nn.functional as F

NHOOD = 7  # descriptor neighbourhood side, pixels
MIN_RES = 16  # coarsest pyramid resolution
_BINOMIAL = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16.0  # 1-D Gaussian approximation


def _blur(x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
    """Separable 5x5 binomial blur, mirror-padded (cv2.pyrDown's filter), as sums of shifted
    views: much faster than conv2d on CPU for 5 taps."""
    h, w = x.shape[-2:]
    taps = (_BINOMIAL * gain**0.5).tolist()
    y = F.pad(x, (2, 2, 0, 0), mode="reflect")  # (B, C, H, W + 4)
    y = sum(t * y[..., k : k + w] for k, t in enumerate(taps))  # (B, C, H, W)
    y = F.pad(y, (0, 0, 2, 2), mode="reflect")  # (B, C, H + 4, W)
    return sum(t * y[..., k : k + h, :] for k, t in enumerate(taps))  # (B, C, H, W)


def pyr_up(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Zero-insert upsample then blur with gain 4 (keeps brightness); cropped to `size`."""
    b, c, h, w = x.shape
    up = x.new_zeros(b, c, 2 * h, 2 * w)
    up[..., ::2, ::2] = x
    return _blur(up, gain=4.0)[..., : size[0], : size[1]]


def laplacian_pyramid(x: torch.Tensor, levels: int) -> list[torch.Tensor]:
    """Band-pass levels, finest first; the last level is the low-pass residual."""
    pyramid = [x]
    for _ in range(levels - 1):
        low = _blur(pyramid[-1])[..., ::2, ::2]  # (B, C, ceil(H/2), ceil(W/2))
        pyramid[-1] = pyramid[-1] - pyr_up(low, pyramid[-1].shape[-2:])
        pyramid.append(low)
    return pyramid


def _sample_nhoods(level: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    """Random 7x7 neighbourhoods: (B, C, h, w) -> (B * per_image, C, 7, 7)."""
    b, c, h, w = level.shape
    if h < NHOOD or w < NHOOD:
        raise ValueError(f"pyramid level {h}x{w} is smaller than the {NHOOD}x{NHOOD} descriptor")
    n = b * per_image
    ys = torch.randint(0, h - NHOOD + 1, (n,), generator=gen).to(level.device)
    xs = torch.randint(0, w - NHOOD + 1, (n,), generator=gen).to(level.device)
    offs = torch.arange(NHOOD, device=level.device)
    img = torch.arange(b, device=level.device).repeat_interleave(per_image)
    rows = (ys[:, None] + offs)[:, None, :, None]  # (N, 1, 7, 1)
    cols = (xs[:, None] + offs)[:, None, None, :]  # (N, 1, 1, 7)
    chan = torch.arange(c, device=level.device)[None, :, None, None]  # (1, C, 1, 1)
    return level[img[:, None, None, None], chan, rows, cols]  # (N, C, 7, 7)


def swd_descriptors(images: torch.Tensor | Iterable[torch.Tensor], *,
                    descriptors_per_image: int = 128, seed: int = 0,
                    batch_size: int = 256) -> list[torch.Tensor]:
    """Stage 1: one float32 (N, C, 7, 7) tensor per pyramid level, finest first, of images
    (B, C, H, W) in [-1, 1] or an iterable of batches; equal seeds draw equal positions."""
    gen = torch.Generator().manual_seed(seed)
    per_level: list[list[torch.Tensor]] = []
    for batch in images.split(batch_size) if isinstance(images, torch.Tensor) else images:
        if batch.ndim != 4:
            raise ValueError(f"expected images (B, C, H, W), got {tuple(batch.shape)}")
        # levels from full resolution down to 16 (PGGAN: 64 -> 64, 32, 16)
        levels = max(1, (min(batch.shape[-2:]) // MIN_RES).bit_length())
        pyramid = laplacian_pyramid(batch.float(), levels)
        if not per_level:
            per_level = [[] for _ in pyramid]
        elif len(pyramid) != len(per_level):
            raise ValueError("all batches must share one image size")
        for store, level in zip(per_level, pyramid, strict=True):
            store.append(_sample_nhoods(level, descriptors_per_image, gen))
    if not per_level:
        raise ValueError("no images given")
    return [torch.cat(d, 0) for d in per_level]


def _standardise(x: torch.Tensor) -> torch.Tensor:
    """Descriptors (N, C, 7, 7) standardised by their own channel mean and std over descriptors
    and pixels (PGGAN: global colour shifts do not count; `layout.colour_distance` has them),
    flattened to (N, K)."""
    d = x.double()
    mean, std = d.mean((0, 2, 3), keepdim=True).float(), d.std((0, 2, 3), keepdim=True).float()
    return ((x - mean) / std.clamp_min(1e-8)).flatten(1)


def _sort_rows(x: torch.Tensor) -> torch.Tensor:
    """Sorts each row; numpy's sort is about twice as fast as torch's on CPU."""
    if x.device.type == "cpu":
        return torch.from_numpy(np.sort(x.numpy(), axis=1))
    return torch.sort(x, dim=1).values


def sliced_distance(a: torch.Tensor, b: torch.Tensor, n_projections: int, repeats: int,
                    gen: torch.Generator) -> float:
    """Sliced Wasserstein-1 between equal-size point sets (N, K): project on random unit
    directions, sort, mean absolute difference (the 1-D optimal transport)."""
    assert a.shape == b.shape, f"descriptor sets differ: {tuple(a.shape)} vs {tuple(b.shape)}"
    per_repeat = n_projections // repeats
    results = []
    for _ in range(repeats):  # chunks bound memory: N x per_repeat projections at a time
        dirs = torch.randn(a.shape[1], per_repeat, generator=gen).to(a)  # (K, P)
        dirs = dirs / dirs.norm(dim=0, keepdim=True)
        pa = _sort_rows(dirs.T @ a.T)  # (P, N); contiguous rows sort fastest
        pb = _sort_rows(dirs.T @ b.T)  # (P, N)
        results.append((pa - pb).abs().double().mean().item())
    return sum(results) / len(results)


def sliced_wasserstein_from_descriptors(real: list[torch.Tensor], fake: list[torch.Tensor], *,
                                        seed: int = 0, n_projections: int = 512,
                                        repeats: int = 4) -> dict[str, list[float] | float]:
    """Stage 2: per-level SWD x 1e3 from `swd_descriptors` outputs (real ones can be cached)."""
    if len(real) != len(fake):
        raise ValueError(f"pyramid depths differ: {len(real)} vs {len(fake)} (image sizes differ)")
    gen = torch.Generator().manual_seed(seed + 1)
    dists = []
    for dr, df in zip(real, fake, strict=True):
        n = min(dr.shape[0], df.shape[0])  # 1-D transport by sorting needs equal counts
        dr, df = (d[torch.randperm(d.shape[0], generator=gen)[:n].to(d.device)]
                  if d.shape[0] > n else d for d in (dr, df))
        dists.append(1e3 * sliced_distance(_standardise(dr), _standardise(df), n_projections,
                                           repeats, gen))
    return {"levels": dists, "mean": sum(dists) / len(dists)}


def sliced_wasserstein(real: torch.Tensor | Iterable[torch.Tensor],
                       fake: torch.Tensor | Iterable[torch.Tensor], *, seed: int = 0,
                       descriptors_per_image: int = 128, n_projections: int = 512,
                       repeats: int = 4, batch_size: int = 256) -> dict[str, list[float] | float]:
    """Multi-scale SWD of two image sets (B, C, H, W) in [-1, 1]: {"levels": x 1e3 per level,
    finest first, "mean": their average}; both use the seed's neighbourhood positions (a set
    against itself: exactly 0). PGGAN's defaults; `repeats` chunks the directions (memory)."""
    if repeats < 1 or n_projections < repeats:
        raise ValueError(f"need n_projections >= repeats >= 1, got {n_projections}, {repeats}")
    kw = {"descriptors_per_image": descriptors_per_image, "seed": seed, "batch_size": batch_size}
    return sliced_wasserstein_from_descriptors(
        swd_descriptors(real, **kw), swd_descriptors(fake, **kw), seed=seed,
        n_projections=n_projections, repeats=repeats)
