"""The four COCO-GAN losses (paper Section 2, eqs. 1-4). Functions return values; callers
call backward.

Shapes: B batch, C/H/W macro patch, D coordinate dims, Z latent dims.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor


def wasserstein_estimate(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_W (eq. 1): E[D(real macro patch)] - E[D(fake macro patch)].

    D maximises it (its loss is -L_W), G minimises -E[D(fake)]; its value is the training
    indicator of the paper's Appendix F.
    """
    return real_scores.mean() - fake_scores.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None, *, with_norms: bool = False
                     ) -> Tensor | tuple[Tensor, Tensor]:
    """L_GP (eq. 2, Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] on interpolates.

    One interpolation factor per sample, and the gradient norm over all of C, H, W (the
    authors' release drew alpha per element and took the norm over one axis only).

    Args:
        critic: maps macro patches (B, C, H, W) to scores (B,); coordinates are bound in it.
        real, fake: (B, C, H, W) macro patches at the same coordinates.
        generator: RNG for the interpolation factors (drawn on its device).
        with_norms: also return the per-sample gradient norms (B,), detached (diagnostics).
    """
    device = generator.device if generator is not None else None
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator,
                       device=device).to(real)  # (B, 1, 1, 1)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    penalty = ((norms - 1.0) ** 2).mean()
    return (penalty, norms.detach()) if with_norms else penalty


def spatial_consistency(predicted: Tensor, target: Tensor) -> Tensor:
    """L_S (eq. 3): squared L2 error between predicted and true macro coordinates (mean)."""
    return ((predicted - target) ** 2).mean()


def content_consistency(predicted: Tensor, target: Tensor) -> Tensor:
    """L_C (eq. 4): L1 error between the estimated latent z~ and the true z (mean)."""
    return (predicted - target).abs().mean()


def overlap_consistency(canvases: Tensor, rows: int, cols: int, margin: int) -> Tensor:
    """L_O (beyond the paper): neighbouring micro patches must agree where their canvases overlap.

    With ``model.g_margin`` G draws each micro patch with ``margin`` extra pixels per side, which
    cover the neighbours' outer pixels; the margins are cropped away, but this loss asks that
    a patch's margin equal what its neighbour draws there, so the content of one patch continues
    into the next instead of stopping at a seam. Mean |difference| over every horizontally and
    vertically adjacent pair of a macro patch (overlap 2 * margin wide).

    Args:
        canvases: (B, P, C, S, S) canvases of a macro patch's P = rows * cols micro patches,
            row-major, S = micro + 2 * margin.
        rows, cols: micro patches per column / row of the macro patch.
        margin: pixels per side beyond the micro patch.
    """
    batch, count, channels, size, _ = canvases.shape
    assert count == rows * cols and margin > 0, f"got {count} patches, {rows}x{cols}, {margin}"
    micro = size - 2 * margin
    grid = canvases.view(batch, rows, cols, channels, size, size)
    terms = []
    if cols > 1:  # left patch's columns [micro, micro + 2m) == right patch's [0, 2m)
        terms.append((grid[:, :, :-1, ..., micro:] - grid[:, :, 1:, ..., : 2 * margin]).abs()
                     .mean())
    if rows > 1:
        terms.append((grid[:, :-1, :, :, micro:, :] - grid[:, 1:, :, :, : 2 * margin, :]).abs()
                     .mean())
    return torch.stack(terms).mean() if terms else canvases.new_zeros(())
