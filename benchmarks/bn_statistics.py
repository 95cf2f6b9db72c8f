"""Do the generator's batch-norm statistics at inference match what training saw?

COCO-GAN's G normalises with batch statistics in training (over the B x P micro patches of B
macro patches at random positions) and with running statistics at inference, which makes every
patch independent of the rest of its batch (so a viewport equals the crop of the full image).
This compares, for a trained checkpoint's generators, full images rendered:
- eval: running statistics, as every application and `cocogan eval` render (the default);
- train-full: batch statistics over all positions of the images in one batch;
- recalibrated: running statistics recomputed for these very weights (cumulative average over
  ``--batches`` training-like batches) — for the EMA generator, whose weights are an average
  while its statistics are copied from the live G;
and reports the mean |difference| to the eval images (in [-1, 1] units; 1/127.5 is one grey
level), and seams (generated over real) and SWD of each against real images.

    python -m benchmarks.bn_statistics runs/seams-study/blobs-tiny/paper.safetensors \
        --real builtin:blobs
"""

from __future__ import annotations

import argparse
import copy
import json

import torch

from cocogan.checkpoint import load_model
from cocogan.data import build_dataset
from cocogan.evaluation import EvalConfig, build_reference, evaluate
from cocogan.model import CocoGAN
from cocogan.nn import Generator
from cocogan.render import render_rect, trained_rect


def recalibrated(generator: Generator, model: CocoGAN, batches: int, batch: int) -> Generator:
    """A copy of ``generator`` whose BN running statistics are the cumulative average over
    ``batches`` training-like batches (random z and macro positions, as in training)."""
    copy_ = copy.deepcopy(generator)
    model.recalibrate_ema(batch, batches, seed=99, generator=copy_)
    return copy_


def render(generator: Generator, model: CocoGAN, z: torch.Tensor, train: bool) -> torch.Tensor:
    """Full images; ``train`` uses batch statistics over all their patches (one forward)."""
    probe = copy.deepcopy(generator).train(train)  # running stats of the original untouched
    with torch.no_grad():
        return render_rect(probe, model.coords, z, trained_rect(model.coords), chunk=1 << 30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--real", required=True)
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config, model, step = load_model(args.checkpoint)
    m = config.model
    cyclic = m.coords == "cylindrical"
    metrics = ("swd", "seams", "wrap") if cyclic else ("swd", "seams")
    settings = EvalConfig(n=args.n, batch=args.n, seed=0, swd_images=args.n,
                          seam_images=args.n)
    real = build_dataset(args.real, m.full_height, m.full_width, cylindrical=cyclic,
                         seed=1_000_003)
    reference = build_reference(metrics, real, model.coords, settings)
    z = model.sample_z(args.n, torch.Generator().manual_seed(0))
    report: dict[str, dict[str, float]] = {}
    for name, generator in (("ema", model.generator_ema), ("live", model.generator)):
        base = render(generator, model, z, train=False)
        variants = {"eval": base, "train-full": render(generator, model, z, train=True),
                    "recalibrated": render(recalibrated(generator, model, args.batches,
                                                        config.optim.batch), model, z, False)}
        for label, images in variants.items():
            values = evaluate(reference, settings, sample=lambda count, rng, x=images: x).values
            row = {"mean_abs_diff_to_eval": float((images - base).abs().mean()),
                   "swd": values["swd"], "seams": values["seams"] / values["seams_real"]}
            if cyclic:
                row["wrap"] = values["wrap"] / values["wrap_real"]
            report[f"{name} {label}"] = row
    print(f"{args.checkpoint} (step {step})")
    print(f"{'generator / statistics':<26}{'|diff| to eval':>16}{'SWD':>8}{'seams':>8}"
          + (f"{'wrap':>8}" if cyclic else ""))
    for label, row in report.items():
        print(f"{label:<26}{row['mean_abs_diff_to_eval']:>16.4f}{row['swd']:>8.1f}"
              f"{row['seams']:>8.2f}" + (f"{row['wrap']:>8.2f}" if cyclic else ""))
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
