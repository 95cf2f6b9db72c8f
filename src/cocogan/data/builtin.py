"""Procedural datasets that need no download: smoke tests and demos of patch coordination.

Each item is a pure function of (seed, index), so any worker renders any index identically;
scenes are continuous and anti-aliased, so one (seed, index) looks the same at every resolution.
``blobs``: an object spanning several micro patches, which must agree to draw it; ``skyline``:
a 360-degree panorama whose ridges are sums of integer-frequency sinusoids, so it wraps exactly.

Shapes: H, W image height and width; renderers return an image (H, W, 3) in [0, 1] and a
foreground coverage mask (H, W) in [0, 1]; the dataset yields (3, H, W) tensors in [-1, 1].
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DataError

Renderer = Callable[[np.random.Generator, int, int], tuple[np.ndarray, np.ndarray]]

_SEED_MASK = (1 << 64) - 1  # SeedSequence wants non-negative entropy; negative seeds wrap
# Bump whenever a renderer's output changes, so cached statistics keyed on it are recomputed.
RENDER_VERSION = 1


def _hsv(h: float, s: float, v: float) -> np.ndarray:
    """One colour from HSV (hue wraps), as a (3,) float array."""
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v))


def _coverage(dist_px: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (negative inside)."""
    return np.clip(0.5 - dist_px, 0.0, 1.0)


def _over(base: np.ndarray, colour: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Paint colour (3,) or (H, W, 3) over base (H, W, 3) with coverage alpha (H, W)."""
    a = alpha[..., None]  # (H, W, 1)
    return base * (1.0 - a) + colour * a


def _ellipse_distance(x: np.ndarray, y: np.ndarray, centre: tuple[float, float],
                      radii: tuple[float, float], angle: float) -> np.ndarray:
    """Approximate signed distance to a rotated ellipse (first-order: level set over gradient)."""
    dx, dy = x - centre[0], y - centre[1]
    u = dx * np.cos(angle) + dy * np.sin(angle)
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    rx, ry = radii
    rho = np.sqrt((u / rx) ** 2 + (v / ry) ** 2)
    grad = np.hypot(u / rx**2, v / ry**2) / np.maximum(rho, 1e-9)
    return (rho - 1.0) / np.maximum(grad, 1e-9)


def render_blobs(rng: np.random.Generator, height: int, width: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Outlined, shaded ellipse (radii 0.15-0.35 of the shorter side, nearly inside the frame)
    with an inner disk on a two-colour gradient: image (H, W, 3) and the object's mask (H, W)."""
    s = float(min(height, width))
    y = ((np.arange(height) + 0.5 - height / 2) / s)[:, None]  # (H, 1), centred
    x = ((np.arange(width) + 0.5 - width / 2) / s)[None, :]  # (1, W)

    # Background: muted two-colour linear gradient in a random direction.
    direction = rng.uniform(0.0, 2 * np.pi)
    t = x * np.cos(direction) + y * np.sin(direction)  # (H, W)
    t = (t - t.min()) / max(float(np.ptp(t)), 1e-9)
    hue = rng.uniform()
    c0 = _hsv(hue, rng.uniform(0.1, 0.4), rng.uniform(0.3, 0.6))
    c1 = _hsv(hue + rng.uniform(-0.2, 0.2), rng.uniform(0.1, 0.4), rng.uniform(0.6, 0.9))
    image = c0 + (c1 - c0) * t[..., None]  # (H, W, 3)

    # Object: saturated ellipse, dark outline, complementary inner disk off the centre.
    rx, ry = rng.uniform(0.15, 0.35, size=2)
    angle = rng.uniform(0.0, np.pi)
    reach = max(rx, ry) + 0.05
    cx = rng.uniform(-1, 1) * max(width / s / 2 - reach, 0.0)
    cy = rng.uniform(-1, 1) * max(height / s / 2 - reach, 0.0)
    dist = _ellipse_distance(x, y, (cx, cy), (rx, ry), angle) * s  # (H, W) pixels
    outline = rng.uniform(0.03, 0.05) * s  # outline width in pixels
    fill_hue = rng.uniform()
    fill = _hsv(fill_hue, rng.uniform(0.6, 0.95), rng.uniform(0.75, 1.0))
    rho2 = np.clip(1.0 + dist / (min(rx, ry) * s), 0.0, 1.0) ** 2  # 0 at centre, 1 at the rim
    shaded = fill * (1.0 - 0.3 * rho2)[..., None]  # gentle dome shading, (H, W, 3)
    mask = _coverage(dist)
    image = _over(image, fill * 0.3, mask)
    image = _over(image, shaded, _coverage(dist + outline))

    phi = rng.uniform(0.0, 2 * np.pi)  # inner disk: off-centre, inside the ellipse frame
    u, v = 0.45 * rx * np.cos(phi), 0.45 * ry * np.sin(phi)
    nx = cx + u * np.cos(angle) - v * np.sin(angle)
    ny = cy + u * np.sin(angle) + v * np.cos(angle)
    nr = rng.uniform(0.25, 0.4) * min(rx, ry)
    inner = _coverage((np.hypot(x - nx, y - ny) - nr) * s)
    image = _over(image, _hsv(fill_hue + 0.5, 0.8, rng.uniform(0.3, 0.95)), inner)
    return image, mask


def _ridge(rng: np.random.Generator, theta: np.ndarray, amplitude: float, terms: int = 5
           ) -> tuple[np.ndarray, np.ndarray]:
    """Cyclic height profile and its derivative d/dtheta, both (W,), peak |profile| = amplitude:
    integer frequencies make it seamless, uniform phases make every roll of it equally likely."""
    freqs = rng.choice(np.arange(1, 13), size=terms, replace=False)
    amps = rng.uniform(0.3, 1.0, size=terms) / freqs
    phases = rng.uniform(0.0, 2 * np.pi, size=terms)
    arg = freqs[:, None] * theta[None, :] + phases[:, None]  # (terms, W)
    profile = (amps[:, None] * np.sin(arg)).sum(0)
    slope = (amps[:, None] * freqs[:, None] * np.cos(arg)).sum(0)
    scale = amplitude / max(float(np.abs(profile).max()), 1e-9)
    return profile * scale, slope * scale


def render_skyline(rng: np.random.Generator, height: int, width: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """360-degree panorama: sky gradient, sun or moon (at a wrapped angular distance, so it
    crosses the seam intact), far and near ridges: image (H, W, 3) and the near ridge's mask."""
    theta = 2 * np.pi * np.arange(width) / width  # (W,)
    y = ((np.arange(height) + 0.5) / height)[:, None]  # (H, 1), 0 top .. 1 bottom
    px_per_rad = width / (2 * np.pi)

    hue = rng.uniform()
    day = rng.uniform() < 0.6
    top = _hsv(hue, rng.uniform(0.4, 0.8), rng.uniform(0.5, 0.85) if day else rng.uniform(0.1, 0.3))
    glow = _hsv(hue + rng.uniform(-0.2, 0.2), rng.uniform(0.15, 0.6), rng.uniform(0.75, 1.0))
    horizon = rng.uniform(0.5, 0.7)
    t = np.clip(y / horizon, 0.0, 1.0) ** 1.5  # (H, 1)
    image = np.broadcast_to(top + (glow - top) * t[..., None], (height, width, 3)).copy()

    sun_theta, sun_y = rng.uniform(0.0, 2 * np.pi), rng.uniform(0.1, horizon - 0.1)
    sun_r = rng.uniform(0.05, 0.1) * height  # pixels
    wrapped = np.angle(np.exp(1j * (theta - sun_theta)))  # (W,), in (-pi, pi]
    sun_dist = np.hypot(wrapped[None, :] * px_per_rad, (y - sun_y) * height) - sun_r  # (H, W)
    sun = np.array([1.0, 0.92, 0.7]) if day else np.array([0.93, 0.93, 0.85])
    image = _over(image, sun, 0.35 * np.exp(-((np.maximum(sun_dist, 0) / sun_r) ** 2)))
    image = _over(image, sun, _coverage(sun_dist))

    near = _hsv(hue + rng.uniform(0.3, 0.7), rng.uniform(0.3, 0.7), rng.uniform(0.1, 0.35))
    far = near + (glow - near) * 0.55  # atmospheric haze lightens distant ridges
    mask = np.zeros((height, width))
    for base, amp, colour in (
        (horizon - 0.04, rng.uniform(0.12, 0.25), far),
        (horizon + 0.08, rng.uniform(0.08, 0.18), near),
    ):
        profile, slope = _ridge(rng, theta, amp)
        ridge_y = base - profile  # (W,), fraction of height from the top
        slope_px = slope * height / px_per_rad  # vertical pixels per horizontal pixel
        dist = (ridge_y[None, :] - y) * height / np.sqrt(1.0 + slope_px**2)[None, :]  # (H, W)
        mask = _coverage(dist)
        shade = (1.0 - 0.35 * np.clip(y - base, 0.0, 1.0))[..., None]  # darker towards the bottom
        image = _over(image, colour * shade, mask)
    return image, mask


@dataclass(frozen=True)
class BuiltinSpec:
    """A registered procedural dataset."""

    description: str  # one line for --help
    cylindrical: bool  # True: horizontally cyclic panoramas, train with cylindrical coordinates
    render: Renderer  # (rng, height, width) -> (image (H, W, 3) in [0, 1], mask (H, W))


BUILTIN_DATASETS: dict[str, BuiltinSpec] = {
    "blobs": BuiltinSpec("outlined ellipse with an inner disk on a gradient; tests whole-object "
                         "coordination", cylindrical=False, render=render_blobs),
    "skyline": BuiltinSpec("360-degree mountain panorama with sky and sun, exactly cyclic; for "
                           "cylindrical runs", cylindrical=True, render=render_skyline),
}


def unknown_builtin(name: str) -> DataError:
    """The error for a name missing from BUILTIN_DATASETS, listing the known names."""
    known = ", ".join(f"builtin:{k}" for k in BUILTIN_DATASETS)
    return DataError(f"unknown built-in dataset {name!r}: choose one of {known}")


class BuiltinDataset(Dataset[torch.Tensor]):
    """A procedural dataset of ``length`` images; item i is a pure function of (seed, i)."""

    def __init__(self, name: str, height: int, width: int, *,
                 seed: int = 0,  # selects the images; same seed, same pixels everywhere
                 length: int = 10000,  # number of distinct images (the epoch length)
                 ) -> None:
        if name not in BUILTIN_DATASETS:
            raise unknown_builtin(name)
        if height <= 0 or width <= 0 or length <= 0:
            raise DataError(f"builtin:{name} needs positive height, width and length, "
                            f"got {height}, {width}, {length}")
        self.name, self.spec = name, BUILTIN_DATASETS[name]
        self.height, self.width = height, width
        self.seed, self.length = seed, length
        self.cylindrical = self.spec.cylindrical

    def __len__(self) -> int:
        return self.length

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Image (H, W, 3) in [0, 1] and foreground mask (H, W) of one item."""
        if not -self.length <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} images")
        rng = np.random.default_rng([index % self.length, self.seed & _SEED_MASK])
        image, mask = self.spec.render(rng, self.height, self.width)
        assert image.shape == (self.height, self.width, 3), f"got {image.shape}"
        return np.clip(image, 0.0, 1.0), mask

    def __getitem__(self, index: int) -> torch.Tensor:
        image, _ = self.render(index)
        # Scale in NumPy: tiny torch ops pay intra-op threading overhead in the main process.
        chw = np.ascontiguousarray(image.transpose(2, 0, 1), dtype=np.float32)  # (3, H, W)
        return torch.from_numpy(chw * np.float32(2.0) - np.float32(1.0))
