"""COCO-GAN's four losses and the three phases that use them (paper Section 2, eqs. 1-4).

One training step (run by :mod:`cocogan.training.step`, which calls backward and steps the
optimisers) draws z and a macro position, generates the fake macro patch once, then:

- D minimises  -L_W + w_gp L_GP + w_spatial L_S(real) + w_content L_C(fake)
- G minimises  -E[D(fake)] + w_spatial L_S(fake) + w_content L_C(fake)
- Q (the content head, its own optimiser) minimises L_C(fake), on the features of G's phase.

This is the paper's loss only; the options beyond it extend :class:`CocoGANLoss`
(:mod:`cocogan.loss_variants`).

Shapes: B batch, C/H/W macro patch, D coordinate dims, Z latent dims, F D's features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from cocogan.config import Config
from cocogan.model import CocoGAN, generate_macro

Values = dict[str, Tensor]  # 0-dim loss terms and diagnostics by name


@dataclass
class StepBatch:
    """What one step samples: latents, fake and real macro positions, real macro patches."""

    z: Tensor  # (B, Z)
    rows: Tensor  # (B,) fake macro positions (grid units, may be out of range when extrapolating)
    cols: Tensor
    real: Tensor  # (B, 3, Mh, Mw) real macro patches
    real_coords: Tensor  # (B, D) macro coordinates of the real patches
    fake_coords: Tensor  # (B, D) macro coordinates of the fake patches
    extended: bool = False  # an extrapolation step's batch (fakes on the extended grid)


def at_least_float32(x: Tensor) -> Tensor:
    """bf16/fp16 autocast outputs in float32 for a loss; float32/float64 unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def wasserstein_estimate(real_scores: Tensor, fake_scores: Tensor) -> Tensor:
    """L_W (eq. 1): E[D(real macro patch)] - E[D(fake macro patch)]; D maximises it, and its
    value is the training indicator of the paper's Appendix F."""
    return real_scores.mean() - fake_scores.mean()


def gradient_penalty(critic: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor,
                     generator: torch.Generator | None = None, *, with_norms: bool = False
                     ) -> Tensor | tuple[Tensor, Tensor]:
    """L_GP (eq. 2, Gulrajani et al. 2017): E[(||grad_x D(x)||_2 - 1)^2] on interpolates of
    real and fake (B, C, H, W), one factor per sample and the norm over C, H, W (the release
    drew alpha per element, the norm over one axis), in float32 also under autocast. ``critic``
    maps (B, C, H, W) to scores (B,); ``with_norms`` also returns the detached norms (B,)."""
    device = generator.device if generator is not None else None
    alpha = torch.rand(real.shape[0], 1, 1, 1, generator=generator,
                       device=device).to(real)  # (B, 1, 1, 1)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    with torch.autocast(mixed.device.type, enabled=False):
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


class CocoGANLoss:
    """The three phases' objectives for one training iteration of ``model``; each gets D's
    features h of the patches it scores (the step batches D's trunk) and returns (loss, values)."""

    def __init__(self, model: CocoGAN, train: Config, iteration: int = 0) -> None:
        self.model, self.iteration = model, iteration
        self.w_gp, self.w_content = train.loss.w_gp, train.loss.w_content
        self.w_spatial = self.w_spatial_g = train.loss.w_spatial  # L_S's weight for D and for G

    def generate(self, step: StepBatch) -> Tensor:
        """G's one forward of the step: fake macro patches (B, 3, Mh, Mw), with gradients."""
        return generate_macro(self.model.generator, self.model.coords, step.z, step.rows,
                              step.cols)

    def spatial(self, predicted: Tensor, target: Tensor) -> Tensor:
        """L_S per sample (B,); cylindrical: the vertical coordinate only (docs/design.md: a
        real panorama's angle is unknowable after its random roll)."""
        if self.model.coords.cyclic:
            predicted, target = predicted[:, :1], target[:, :1]
        return ((predicted - target) ** 2).mean(dim=1)

    def content(self, predicted: Tensor, z: Tensor) -> Tensor:
        """L_C of the content head's estimate (B, Z) against the true z."""
        return content_consistency(predicted, z)

    def penalised(self) -> bool:
        """Whether this iteration's D updates include the gradient penalty (always, here)."""
        return True

    def critic(self, patches: Tensor) -> Tensor:
        """D's unconditional score (B,) for the penalty: no coordinate projection, as the
        authors' release in every penalty (``d_builder(interpolates, None)``)."""
        D = self.model.discriminator
        return D.score(D.features(patches, eager=True)).squeeze(1)

    def d_phase(self, step: StepBatch, h_real: Tensor, h_fake: Tensor, real: Tensor,
                fake: Tensor, rng: torch.Generator) -> tuple[Tensor, Values]:
        """D's loss; ``real``/``fake`` (B, 3, Mh, Mw) are the patches h came from."""
        D = self.model.discriminator
        real_score = D.adversarial(h_real, step.real_coords)
        fake_score = D.adversarial(h_fake, step.fake_coords)
        l_w = wasserstein_estimate(real_score, fake_score)
        l_s = self.spatial(D.spatial(h_real), step.real_coords).mean()
        l_c = self.content(D.content(h_fake), step.z)
        loss = -l_w + self.w_spatial * l_s + self.w_content * l_c
        values = {"L_W": l_w, "L_S_real": l_s, "D_real": real_score.mean(),
                  "D_fake": fake_score.mean()}
        if self.penalised():
            l_gp, norms = gradient_penalty(self.critic, real, fake, generator=rng,
                                           with_norms=True)
            loss = loss + self.w_gp * l_gp
            values.update({"L_GP": l_gp, "GP_norm": norms.mean(), "GP_norm_max": norms.max()})
        return loss, values

    def g_phase(self, step: StepBatch, h_fake: Tensor, in_range: Tensor) -> tuple[Tensor, Values]:
        """G's loss; ``in_range`` (B,) weighs each fake's L_S: out-of-range fakes (the
        extrapolation step) have no real ground truth, so L_S does not reach G through them."""
        D = self.model.discriminator
        adversarial = -D.adversarial(h_fake, step.fake_coords).mean()
        l_s = (self.spatial(D.spatial(h_fake), step.fake_coords) * in_range).sum()
        l_c = self.content(D.content(h_fake), step.z)
        loss = adversarial + self.w_spatial_g * l_s + self.w_content * l_c
        return loss, {"L_S_fake": l_s}

    def q_phase(self, step: StepBatch, h_fake: Tensor) -> tuple[Tensor, Values]:
        """Q's loss on D's (detached) features of the step's fakes."""
        l_c = self.content(self.model.discriminator.content(h_fake), step.z)
        return l_c, {"L_C": l_c}
