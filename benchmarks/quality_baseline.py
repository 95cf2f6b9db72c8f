"""COCO-GAN against a full-image baseline GAN of similar capacity: same data, same steps, same
optimiser settings, same seed; SWD and seams of both against the same real images.

The question is the paper's Table 1 one: what does generating by parts cost (or gain) in
quality? Both are trained by the one `cocogan.training` Trainer (the baseline is
`model.family=baseline`: `cocogan.model.BaselineGAN` trained by
`cocogan.training.family.baseline_step`) on the same seeded batch stream, each into a run
directory as `cocogan train` writes it (EMA with batch-norm recalibration, metrics.jsonl,
samples, resumable checkpoints), then evaluated by the `cocogan eval` pipeline against one
real reference. The baseline's seams ratio uses COCO-GAN's micro grid: a full-image generator
has no patch borders, so its figure shows what "no seams" looks like on this data. The same
baseline run by hand:
`cocogan train --preset tiny --set model.family=baseline --data builtin:blobs --out RUN`.

    python benchmarks/quality_baseline.py --preset tiny --data builtin:blobs --steps 400
    python benchmarks/quality_baseline.py --preset celeba64 --data ../shared/data/emoji-noto-64 \
        --set data.celeba_crop=false --steps 20000 --n 10000 --device cuda
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from cocogan.checkpoint import load_model
from cocogan.config import Config, apply_overrides
from cocogan.data import build_dataset
from cocogan.evaluation import EvalConfig, build_reference, evaluate
from cocogan.evaluation.sampling import Sampler, cocogan_sampler
from cocogan.evaluation.spatial import discriminator_predictor
from cocogan.model import BaselineGAN
from cocogan.presets import get_preset
from cocogan.summary import parameter_counts
from cocogan.training.device import select_device
from cocogan.training.family import baseline_images
from cocogan.training.run import RunSpec, new_trainer, prepare_new_run

FAMILIES = ("cocogan", "baseline")  # the run folders under --out, one per model.family


def train_run(config: Config, family: str, args: argparse.Namespace, out: Path) -> float:
    """Train ``family`` for --steps into OUT/FAMILY with the Trainer; returns its seconds."""
    config = copy.deepcopy(config)
    config.model.family, config.optim.steps, config.data.source = family, args.steps, args.data
    spec = RunSpec(seed=args.seed, device=args.device,
                   threads=args.threads or None)
    dataset, _ = prepare_new_run(out / family, config.validate(), spec)
    trainer = new_trainer(out / family, config, spec, dataset)
    start = time.perf_counter()
    trainer.fit()
    return time.perf_counter() - start


def baseline_sampler(model: BaselineGAN) -> Sampler:
    """Full images of the baseline's EMA generator, for the evaluation pipeline."""
    return lambda count, rng: baseline_images(model, model.sample_z(count, rng))


DIVERSITY_IMAGES = 256  # images whose per-pixel spread measures sample diversity


def diversity(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across images: ~0 for a collapsed generator
    (every z gives the same image), the real data's figure for a diverse one."""
    return float(images.float().std(dim=0).mean())


def train_both(config: Config, args: argparse.Namespace, out: Path) -> dict[str, float]:
    """Train COCO-GAN then the baseline on the same stream; returns training seconds."""
    seconds = {}
    for family in FAMILIES:
        seconds[family] = round(train_run(config, family, args, out), 1)
        print(f"{family}: {args.steps} steps in {seconds[family]:.0f} s", file=sys.stderr)
    return seconds


def measure(config: Config, args: argparse.Namespace, out: Path,
            device: torch.device) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """SWD, seams (and wrap) of both models against one real reference; spatial and
    diversity too. Returns (metrics per model, parameter counts per model)."""
    m = config.model
    _, coco, _ = load_model(out / "cocogan", device)
    _, base, _ = load_model(out / "baseline", device, family="baseline")
    cfg = EvalConfig(n=args.n, batch=64, seed=args.seed)
    dataset = build_dataset(args.data, m.full_height, m.full_width,
                            cylindrical=m.coords == "cylindrical",
                            celeba_crop=config.data.celeba_crop)
    metrics = ("swd", "seams", "wrap", "spatial") if coco.coords.cyclic else \
        ("swd", "seams", "spatial")
    ref = build_reference(metrics, dataset, coco.coords, cfg)
    samplers = {"cocogan": cocogan_sampler(coco), "baseline": baseline_sampler(base)}
    results = {"cocogan": evaluate(ref, cfg, sample=samplers["cocogan"], predictor=(
        discriminator_predictor(coco.discriminator))).values}
    results["baseline"] = evaluate(ref, cfg, sample=samplers["baseline"],
                                   only=metrics[:-1]).values  # no D head to test
    count = min(DIVERSITY_IMAGES, args.n)
    for name, sample in samplers.items():
        results[name]["diversity"] = diversity(sample(count, torch.Generator().manual_seed(0)))
        results[name]["diversity_real"] = diversity(ref.images[:count])
    counts = parameter_counts(config)
    params = {"cocogan": {"G": counts["g_params"], "D": counts["d_params"]},
              "baseline": {"G": sum(p.numel() for p in base.generator.parameters()),
                           "D": sum(p.numel() for p in base.discriminator.parameters())}}
    return results, params


def print_table(report: dict) -> None:
    results, params, seconds = report["metrics"], report["params"], report["train_seconds"]
    coco = results["cocogan"]
    order = ["swd", *sorted((k for k in coco if k.startswith("swd_")), key=lambda k: -int(k[4:])),
             "seams", "seams_real", "wrap", "wrap_real", "diversity", "diversity_real"]
    print(f"{report['preset']} on {report['data']}, {report['steps']} steps, "
          f"{report['n']} images per side")
    print(f"{'metric':<15}{'COCO-GAN':>12}{'baseline':>12}")
    for key in (k for k in order if k in coco and k in results["baseline"]):
        print(f"{key:<15}{coco[key]:>12.4g}{results['baseline'][key]:>12.4g}")
    for key in (k for k in coco if k.startswith("spatial_")):  # spatial_row_* on panoramas
        print(f"{key:<15}{coco[key]:>12.4g}{'-':>12}")
    print(f"{'G params':<15}{params['cocogan']['G']:>12,}{params['baseline']['G']:>12,}")
    print(f"{'D params':<15}{params['cocogan']['D']:>12,}{params['baseline']['D']:>12,}")
    if seconds:
        print(f"{'train s':<15}{seconds['cocogan']:>12}{seconds['baseline']:>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. data.celeba_crop=false")
    parser.add_argument("--data", default="builtin:blobs")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--n", type=int, default=1000, help="images per side for SWD/seams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0,
                        help="CPU threads (0: one per idle core, as cocogan train picks)")
    parser.add_argument("--out", default="benchmark-output/quality-baseline")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training; measure the two models already under --out")
    args = parser.parse_args(argv)

    device = select_device(args.device)
    config = apply_overrides(get_preset(args.preset), args.set).validate()
    out = Path(args.out)
    report_file = out / "quality_baseline.json"
    if args.evaluate_only:
        seconds = json.loads(report_file.read_text()).get("train_seconds") \
            if report_file.is_file() else None
    else:
        seconds = train_both(config, args, out)
    results, params = measure(config, args, out, device)
    report = {"preset": config.name, "overrides": args.set, "data": args.data,
              "steps": args.steps, "n": args.n, "seed": args.seed, "device": str(device),
              "threads": torch.get_num_threads(), "train_seconds": seconds, "params": params,
              "metrics": results}
    report_file.write_text(json.dumps(report, indent=2) + "\n")
    print_table(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
