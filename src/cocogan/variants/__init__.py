"""Options beyond the paper, each in its own module, extending the paper's pieces.

- :mod:`~cocogan.variants.seamless`: ``model.g_margin``, a generator that draws a margin round
  each micro patch, and L_O (``loss.w_overlap``), which asks the margins to agree with the
  neighbours (docs/seams.md);
- :mod:`~cocogan.variants.heading`: ``model.z_phase``, a panorama generator that turns the
  angle it is told by pi * z[0], so each latent has its own heading (docs/seams.md);
- :mod:`~cocogan.variants.augment`: ``loss.augment``, augmentation that keeps every pixel at
  its coordinate (docs/training.md).

Their loss terms (and ``loss.w_spatial_g``, ``loss.gp_every``) extend the paper's loss in
:mod:`cocogan.loss_variants`. The paper presets use none of them. Subclasses keep the paper's
parameter names, so checkpoints of every variant load into the same state-dict layout.
"""

from __future__ import annotations

import functools

from cocogan.config import ModelConfig
from cocogan.coords import CoordinateSystem
from cocogan.nn import Generator
from cocogan.variants.heading import HeadingGenerator
from cocogan.variants.seamless import SeamlessGenerator


@functools.cache
def compose(base: type, *mixins: type) -> type:
    """``base`` extended by ``mixins`` (the first one outermost); ``base`` itself without."""
    if not mixins:
        return base
    name = "".join(m.__name__.removesuffix(base.__name__) for m in mixins) + base.__name__
    return type(name, (*mixins, base), {"__module__": __name__})


def build_generator(config: ModelConfig, coords: CoordinateSystem) -> Generator:
    """The generator a model config describes: the paper's, or with the options it names."""
    mixins = [cls for on, cls in ((config.z_phase, HeadingGenerator),
                                  (config.g_margin, SeamlessGenerator)) if on]
    generator_class = compose(Generator, *mixins)
    return generator_class(config.z_dim, coords.coord_dim, config.micro, config.ngf)
