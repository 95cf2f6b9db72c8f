"""Options beyond the paper, one module each (``seamless``, ``heading``, ``augment``; their loss
terms in :mod:`cocogan.loss_variants`), extending the paper's pieces under its parameter names,
so every variant's checkpoints share one state-dict layout (docs/design.md)."""

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
