"""Training and sampling of the full-image baseline GAN (`cocogan.nn.baseline`).

The baseline is trained exactly as COCO-GAN is, minus what makes COCO-GAN generate by parts:
same data pipeline, WGAN-GP with the same gradient penalty (L_GP, eq. 2), the same TTUR Adam
settings, one D then one G update per step, and the same EMA of G for sampling; no
coordinates, no L_S, no L_C. Comparing the two on the same data and steps tells what the
patch-wise generation costs in quality (the paper's Table 1 question).

Shapes: B batch, Z latent dims, H/W full image.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from cocogan import __version__
from cocogan.config import Config, TrainConfig
from cocogan.data import build_dataset, infinite, make_loader
from cocogan.evaluation.sampling import Sampler
from cocogan.losses import gradient_penalty, wasserstein_estimate
from cocogan.nn.baseline import BaselineDiscriminator, BaselineGenerator
from cocogan.outputs import atomic_write
from cocogan.training.step import update_ema

BASELINE_FORMAT = "cocogan-baseline"
BASELINE_FILE = "baseline.safetensors"


class BaselineGAN(nn.Module):
    """Full-image G, its EMA copy and the critic D, sized from a COCO-GAN ModelConfig (same
    full size, latent size and base widths)."""

    def __init__(self, config: Config) -> None:
        super().__init__()
        m = config.model
        self.z_dim = m.z_dim
        self.generator = BaselineGenerator(m.z_dim, m.full_height, m.full_width, m.ngf)
        self.discriminator = BaselineDiscriminator(m.full_height, m.ndf)
        self.generator_ema = copy.deepcopy(self.generator).requires_grad_(False).eval()

    def sample_z(self, batch: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ U[-1, 1]^Z, (B, Z), on the model's device (as COCO-GAN samples it)."""
        z = torch.rand(batch, self.z_dim, generator=generator) * 2.0 - 1.0
        return z.to(next(self.parameters()).device)


@dataclass
class BaselineOptimizers:
    g: torch.optim.Optimizer
    d: torch.optim.Optimizer


def build_baseline_optimizers(model: BaselineGAN, train: TrainConfig) -> BaselineOptimizers:
    """Adam with COCO-GAN's TTUR learning rates and betas."""
    betas = (train.beta1, train.beta2)
    return BaselineOptimizers(
        g=torch.optim.Adam(model.generator.parameters(), lr=train.lr_g, betas=betas),
        d=torch.optim.Adam(model.discriminator.parameters(), lr=train.lr_d, betas=betas))


def baseline_step(model: BaselineGAN, optimizers: BaselineOptimizers, images: Tensor,
                  train: TrainConfig, rng: torch.Generator) -> dict[str, float]:
    """One WGAN-GP iteration on real full images (B, 3, H, W): a D update, then a G update.

    Returns floats: L_W (the Wasserstein estimate), L_GP, loss_D, loss_G.
    """
    G, D = model.generator.train(), model.discriminator.train()
    z = model.sample_z(images.shape[0], rng)
    with torch.no_grad():
        fake = G(z)
    l_w = wasserstein_estimate(D(images), D(fake))
    l_gp = gradient_penalty(D, images, fake, generator=rng)
    loss_d = -l_w + train.w_gp * l_gp
    optimizers.d.zero_grad(set_to_none=True)
    loss_d.backward()
    optimizers.d.step()

    loss_g = -D(G(z)).mean()
    optimizers.g.zero_grad(set_to_none=True)
    loss_g.backward()
    optimizers.g.step()
    values = {"L_W": l_w, "L_GP": l_gp, "loss_D": loss_d, "loss_G": loss_g}
    return {k: v.detach().item() for k, v in values.items()}


def save_baseline(path: Path, config: Config, model: BaselineGAN, step: int) -> None:
    """Weights and config as safetensors (atomic), like COCO-GAN checkpoints."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    metadata = {"format": BASELINE_FORMAT, "version": __version__, "step": str(step),
                "config": json.dumps(config.to_dict())}
    atomic_write(Path(path), lambda tmp: save_file(tensors, str(tmp), metadata=metadata))


def load_baseline(path: str | Path, device: str | torch.device = "cpu"
                  ) -> tuple[Config, BaselineGAN, int]:
    """(config, model in eval mode, step) of a file written by `save_baseline`."""
    with safe_open(str(path), framework="pt") as handle:
        metadata = handle.metadata() or {}
    if metadata.get("format") != BASELINE_FORMAT:
        raise ValueError(f"{path} is not a baseline checkpoint (format "
                         f"{metadata.get('format')!r})")
    config = Config.from_dict(json.loads(metadata["config"])).validate()
    model = BaselineGAN(config)
    model.load_state_dict(load_file(str(path)), strict=True)
    return config, model.to(device).eval(), int(metadata.get("step", 0))


def baseline_sampler(model: BaselineGAN, *, raw: bool = False) -> Sampler:
    """Full images from the EMA (or raw) generator in eval mode, for the evaluation pipeline."""
    generator = model.generator if raw else model.generator_ema

    @torch.no_grad()
    def sample(count: int, rng: torch.Generator) -> Tensor:
        mode = generator.training
        generator.eval()
        try:
            return generator(model.sample_z(count, rng))
        finally:
            generator.train(mode)

    return sample


@dataclass
class BaselineRun:
    path: Path  # the weights file
    steps: int
    seconds: float  # training wall time
    last: dict[str, float]  # losses of the last step


def train_baseline(config: Config, data_source: str, steps: int, out_dir: str | Path, *,
                   seed: int = 0, device: str | torch.device = "cpu",
                   num_workers: int | None = None) -> BaselineRun:
    """Train the baseline for `steps` on `data_source` with `config`'s sizes and TrainConfig;
    writes OUT/baseline.safetensors.

    Args:
        config: a COCO-GAN config (full size, z_dim, ngf/ndf, batch, learning rates, EMA).
        data_source: folder or builtin:NAME, prepared as COCO-GAN training prepares it.
        steps: iterations (one D and one G update each).
        out_dir: output folder.
        seed: fixes initial weights, data order and latents.
        device: where to train.
        num_workers: data loader processes (None: the data layer's default).
    """
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    m, train = config.model, config.train
    torch.manual_seed(seed)
    model = BaselineGAN(config).to(device)
    optimizers = build_baseline_optimizers(model, train)
    dataset = build_dataset(data_source, m.full_height, m.full_width,
                            cylindrical=m.coords == "cylindrical",
                            celeba_crop=train.celeba_crop, seed=seed)
    batches = infinite(make_loader(dataset, train.batch, num_workers=num_workers, seed=seed))
    rng = torch.Generator().manual_seed(seed)
    start, last = time.perf_counter(), {}
    for step in range(steps):
        last = baseline_step(model, optimizers, next(batches).to(device), train, rng)
        update_ema(model, step, train.ema_decay, train.ema_warmup)  # same EMA as COCO-GAN's
    seconds = time.perf_counter() - start
    path = Path(out_dir) / BASELINE_FILE
    save_baseline(path, config, model, steps)
    return BaselineRun(path=path, steps=steps, seconds=seconds, last=last)
