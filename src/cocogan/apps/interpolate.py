"""The three interpolations of paper Section 3.2: micro (one micro position, z moved; Fig. 4a),
spatial (one z, the coordinate moved along a line, between grid points too; Fig. 5) and full
(z moved, every patch regenerated; Fig. 4b), F frames from one endpoint exactly to the other.
Slerp between two points of the cube [-1, 1]^Z leaves it, so :func:`latent_path` slerps their
Gaussian images (sqrt(2) erfinv(u)). Shapes: F frames, Z latent dims, m micro patch side.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from cocogan.apps.full import full_images
from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.render import DEFAULT_CHUNK, evaluating, pick_generator, render_patches

PARALLEL_EPS = 1e-6  # below this angle between latents, slerp falls back to lerp
CUBE_EPS = 1e-6  # |u| <= 1 - CUBE_EPS before erfinv (the cube's faces map to infinity)


def interpolation_steps(frames: int) -> Tensor:
    """F evenly spaced t in [0, 1], starting at 0 and ending at 1 exactly."""
    if frames < 2:
        raise ValueError(f"--frames must be >= 2 (start and end), got {frames}")
    return torch.linspace(0.0, 1.0, frames)


def slerp(z0: Tensor, z1: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation (White, 2016) between (Z,) latents at steps t (F,) -> (F, Z)."""
    t = t.to(z0.device, torch.float32)[:, None]  # (F, 1)
    cos = torch.dot(z0, z1) / (z0.norm() * z1.norm()).clamp_min(1e-12)
    omega = torch.arccos(cos.clamp(-1.0, 1.0))
    if float(omega) < PARALLEL_EPS:
        return torch.lerp(z0[None], z1[None], t)  # (F, Z)
    sin = torch.sin(omega)
    return (torch.sin((1.0 - t) * omega) / sin) * z0 + (torch.sin(t * omega) / sin) * z1


def latent_path(z0: Tensor, z1: Tensor, t: Tensor, *, phase: bool = False) -> Tensor:
    """Latents (F, Z) from z0 to z1 (Z,) at steps t (F,) inside the cube [-1, 1]^Z: slerp of
    the Gaussian images; with ``phase`` (model.z_phase) z[0] turns along the shorter arc."""
    def gauss(u: Tensor) -> Tensor:
        return math.sqrt(2.0) * torch.erfinv(u.clamp(-1.0 + CUBE_EPS, 1.0 - CUBE_EPS))

    rest = slice(1, None) if phase else slice(None)
    path = torch.erf(slerp(gauss(z0[rest]), gauss(z1[rest]), t) / math.sqrt(2.0))
    if phase:
        turn = torch.remainder(z1[0] - z0[0] + 1.0, 2.0) - 1.0  # in [-1, 1): the short way
        heading = torch.remainder(z0[0] + t.to(z0)[:, None] * turn + 1.0, 2.0) - 1.0  # (F, 1)
        path = torch.cat([heading, path], dim=1)
    path[0], path[-1] = z0, z1  # the endpoints exactly
    return path


def micro_interpolation(model: CocoGAN, z0: Tensor, z1: Tensor, row: float, col: float,
                        frames: int, *, raw: bool = False) -> Tensor:
    """Micro patches at grid position (row, col) for z moved from z0 to z1: (F, 3, m, m)."""
    path = latent_path(z0, z1, interpolation_steps(frames), phase=model.config.z_phase)
    generator = pick_generator(model, raw)
    position = torch.tensor([float(row)]), torch.tensor([float(col)])
    with evaluating(generator):
        return render_patches(generator, model.coords, path, *position)[:, 0]


def spatial_path(coords: CoordinateSystem, start: tuple[float, float], end: tuple[float, float],
                 frames: int) -> tuple[Tensor, Tensor]:
    """Fractional grid positions (F,) of a line from ``start`` to ``end``, normalised (y, x);
    on a cylinder x is the angle theta (-1 and 1 are the same column)."""
    t = interpolation_steps(frames)
    y = torch.lerp(torch.tensor(float(start[0])), torch.tensor(float(end[0])), t)
    x = torch.lerp(torch.tensor(float(start[1])), torch.tensor(float(end[1])), t)
    span = coords.grid_w if coords.cyclic else max(coords.grid_w - 1, 0)
    return (y + 1.0) / 2.0 * max(coords.grid_h - 1, 0), (x + 1.0) / 2.0 * span


def spatial_interpolation(model: CocoGAN, z: Tensor, start: tuple[float, float],
                          end: tuple[float, float], frames: int, *, raw: bool = False) -> Tensor:
    """Micro patches of one latent z (Z,) along a coordinate line: (F, 3, m, m)."""
    rows, cols = spatial_path(model.coords, start, end, frames)
    generator = pick_generator(model, raw)
    with evaluating(generator):
        return render_patches(generator, model.coords, z[None], rows, cols)[0]


def full_interpolation(model: CocoGAN, z0: Tensor, z1: Tensor, frames: int, *,
                       raw: bool = False, chunk: int = DEFAULT_CHUNK) -> Tensor:
    """Full images for z moved from z0 to z1, all patches regenerated: (F, 3, H, W)."""
    path = latent_path(z0, z1, interpolation_steps(frames), phase=model.config.z_phase)
    return full_images(model, path, raw=raw, chunk=chunk)
