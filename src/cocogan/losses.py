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
                     generator: torch.Generator | None = None) -> Tensor:
    """L_GP (eq. 2, Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] on interpolates.

    One interpolation factor per sample, and the gradient norm over all of C, H, W (the
    authors' release drew alpha per element and took the norm over one axis only).

    Args:
        critic: maps macro patches (B, C, H, W) to scores (B,); coordinates are bound in it.
        real, fake: (B, C, H, W) macro patches at the same coordinates.
        generator: RNG for the interpolation factors.
    """
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator).to(real)  # (B, 1, 1, 1)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    scores = critic(mixed)
    (grad,) = torch.autograd.grad(scores.sum(), mixed, create_graph=True)
    norms = grad.flatten(1).norm(2, dim=1)  # (B,)
    return ((norms - 1.0) ** 2).mean()


def spatial_consistency(predicted: Tensor, target: Tensor) -> Tensor:
    """L_S (eq. 3): squared L2 error between predicted and true macro coordinates (mean)."""
    return ((predicted - target) ** 2).mean()


def content_consistency(predicted: Tensor, target: Tensor) -> Tensor:
    """L_C (eq. 4): L1 error between the estimated latent z~ and the true z (mean)."""
    return (predicted - target).abs().mean()
