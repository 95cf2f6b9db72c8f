"""Networks of COCO-GAN: the micro-patch generator and the macro-patch discriminator."""

from cocogan.nn.discriminator import Discriminator
from cocogan.nn.generator import Generator, generator_plan

__all__ = ["Discriminator", "Generator", "generator_plan"]
