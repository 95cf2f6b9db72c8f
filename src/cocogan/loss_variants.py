"""The options beyond the paper that change its loss, each extending :class:`CocoGANLoss`;
:func:`build_loss` composes those a config turns on (none: :class:`CocoGANLoss` itself).
``LazyPenalty`` is StyleGAN2's lazy regularisation (docs/training.md).
"""

from __future__ import annotations

from torch import Tensor

from cocogan.config import Config
from cocogan.losses import CocoGANLoss, StepBatch, Values, at_least_float32
from cocogan.model import CocoGAN, generate_micro
from cocogan.patches import merge
from cocogan.variants import compose
from cocogan.variants.seamless import crop_margin, overlap_consistency


class Overlap(CocoGANLoss):
    """L_O: the margins G draws round each micro patch agree with the neighbours' pixels."""

    def __init__(self, model: CocoGAN, train: Config, iteration: int = 0) -> None:
        super().__init__(model, train, iteration)
        self.w_overlap = train.loss.w_overlap
        self.canvases: Tensor | None = None  # (B, P, 3, S, S) of the last generate()

    def generate(self, step: StepBatch) -> Tensor:
        """The fake macro patches, keeping the canvases (B, P, 3, S, S) they were cut from."""
        G, coords = self.model.generator, self.model.coords
        micro_rows, micro_cols = coords.micro_in_macro(step.rows, step.cols)  # (B, P)
        self.canvases = generate_micro(G, coords, step.z, micro_rows, micro_cols, keep_margin=True)
        micro = crop_margin(self.canvases, G.margin)
        return merge(micro, coords.macro_h, coords.macro_w)

    def g_phase(self, step: StepBatch, h_fake: Tensor, in_range: Tensor) -> tuple[Tensor, Values]:
        loss, values = super().g_phase(step, h_fake, in_range)
        assert self.canvases is not None, "generate() first"
        coords = self.model.coords
        l_o = overlap_consistency(at_least_float32(self.canvases), coords.macro_h,
                                  coords.macro_w, self.model.generator.margin)
        return loss + self.w_overlap * l_o, {**values, "L_O": l_o}


class GeneratorSpatialWeight(CocoGANLoss):
    """L_S(fake) weighted by ``loss.w_spatial_g`` in G's objective (D's L_S keeps w_spatial)."""

    def __init__(self, model: CocoGAN, train: Config, iteration: int = 0) -> None:
        super().__init__(model, train, iteration)
        self.w_spatial_g = train.loss.w_spatial_g


class HeadingContent(CocoGANLoss):
    """L_C over z[1:]: Q is not asked for the heading z[0]."""

    def content(self, predicted: Tensor, z: Tensor) -> Tensor:
        return super().content(predicted[:, 1:], z[:, 1:])  # z[0]: the heading


class LazyPenalty(CocoGANLoss):
    """The gradient penalty on iterations 0, k, 2k, ... only, weighted k times."""

    def __init__(self, model: CocoGAN, train: Config, iteration: int = 0) -> None:
        super().__init__(model, train, iteration)
        self.every = train.loss.gp_every
        self.w_gp = train.loss.w_gp * train.loss.gp_every

    def penalised(self) -> bool:
        return self.iteration % self.every == 0


def build_loss(model: CocoGAN, train: Config, iteration: int = 0) -> CocoGANLoss:
    """The loss of ``model``'s config and ``train``: the paper's, with the options they name."""
    options = ((train.loss.w_overlap > 0, Overlap),
               (train.loss.w_spatial_g is not None, GeneratorSpatialWeight),
               (model.config.z_phase, HeadingContent), (train.loss.gp_every > 1, LazyPenalty))
    loss_class = compose(CocoGANLoss, *(cls for on, cls in options if on))
    return loss_class(model, train, iteration)
