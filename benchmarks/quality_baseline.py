"""COCO-GAN against a full-image baseline GAN of similar capacity: same data, same steps, same
optimiser settings, same seed; SWD and seams of both against the same real images.

The question is the paper's Table 1 one: what does generating by parts cost (or gain) in
quality? Both models are trained in this process by their step functions (COCO-GAN:
`cocogan.training.step.train_step`; baseline: `cocogan.evaluation.baseline_train`) on the same
seeded batch stream, then evaluated by the `cocogan eval` pipeline against one real reference.
The baseline's seams ratio uses COCO-GAN's micro grid: a full-image generator has no patch
borders, so its figure shows what "no seams" looks like on this data.

    python benchmarks/quality_baseline.py --preset tiny --data builtin:blobs --steps 400
    python benchmarks/quality_baseline.py --preset celeba64 --data ../shared/data/emoji-noto-64 \
        --set train.celeba_crop=false --steps 20000 --n 10000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from cocogan.checkpoint import load_model, save_model
from cocogan.config import Config, apply_overrides
from cocogan.data import build_dataset, infinite, make_loader
from cocogan.evaluation import EvalConfig, build_reference, evaluate
from cocogan.evaluation.baseline_train import (
    BASELINE_FILE,
    baseline_sampler,
    load_baseline,
    train_baseline,
)
from cocogan.evaluation.sampling import cocogan_sampler
from cocogan.evaluation.spatial import discriminator_predictor
from cocogan.model import CocoGAN
from cocogan.presets import get_preset
from cocogan.summary import parameter_counts
from cocogan.training.device import select_device
from cocogan.training.step import build_optimizers, train_step, update_ema


def train_cocogan(config: Config, data: str, steps: int, out: Path, seed: int,
                  device: torch.device) -> tuple[CocoGAN, float]:
    """COCO-GAN for `steps` on the same seeded stream the baseline uses; writes a run dir
    (checkpoint + metrics.jsonl with L_W, so `cocogan eval` and `cocogan plot` work on it)."""
    m, train = config.model, config.train
    torch.manual_seed(seed)
    model = CocoGAN(m).to(device)
    optimizers = build_optimizers(model, train)
    dataset = build_dataset(data, m.full_height, m.full_width,
                            cylindrical=m.coords == "cylindrical", celeba_crop=train.celeba_crop,
                            seed=seed)
    batches = infinite(make_loader(dataset, train.batch, num_workers=0, seed=seed))
    rng = torch.Generator().manual_seed(seed)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with (out / "metrics.jsonl").open("w") as log:
        for step in range(steps):
            losses = train_step(model, optimizers, next(batches).to(device), train, rng)
            losses = {name: value.item() for name, value in losses.items()}
            update_ema(model, step, train.ema_decay, train.ema_warmup)
            if (step + 1) % train.log_every == 0:
                log.write(json.dumps({"step": step + 1, **losses}) + "\n")
                log.flush()  # progress is visible while it runs
    seconds = time.perf_counter() - start
    save_model(out / "checkpoints" / f"step-{steps:08d}.safetensors", config, model, steps)
    return model.eval(), seconds


DIVERSITY_IMAGES = 256  # images whose per-pixel spread measures sample diversity


def diversity(images: torch.Tensor) -> float:
    """Mean over pixels of the standard deviation across images: ~0 for a collapsed generator
    (every z gives the same image), the real data's figure for a diverse one."""
    return float(images.float().std(dim=0).mean())


def train_both(config: Config, args: argparse.Namespace, out: Path,
               device: torch.device) -> dict[str, float]:
    """Train COCO-GAN then the baseline on the same stream; returns training seconds."""
    _, coco_s = train_cocogan(config, args.data, args.steps, out / "cocogan", args.seed, device)
    print(f"COCO-GAN: {args.steps} steps in {coco_s:.0f} s", file=sys.stderr)
    base = train_baseline(config, args.data, args.steps, out / "baseline", seed=args.seed,
                          device=device, num_workers=0)
    print(f"baseline: {args.steps} steps in {base.seconds:.0f} s", file=sys.stderr)
    return {"cocogan": round(coco_s, 1), "baseline": round(base.seconds, 1)}


def measure(config: Config, args: argparse.Namespace, out: Path,
            device: torch.device) -> tuple[dict[str, dict[str, float]], dict[str, dict]]:
    """SWD, seams (and wrap) of both models against one real reference; spatial and
    diversity too. Returns (metrics per model, parameter counts per model)."""
    m = config.model
    _, coco, _ = load_model(out / "cocogan", device)
    _, base, _ = load_baseline(out / "baseline" / BASELINE_FILE, device)
    cfg = EvalConfig(n=args.n, batch=64, seed=args.seed)
    dataset = build_dataset(args.data, m.full_height, m.full_width,
                            cylindrical=m.coords == "cylindrical",
                            celeba_crop=config.train.celeba_crop)
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
    for key in ("spatial_acc", "spatial_err"):
        print(f"{key:<15}{coco[key]:>12.4g}{'-':>12}")
    print(f"{'G params':<15}{params['cocogan']['G']:>12,}{params['baseline']['G']:>12,}")
    print(f"{'D params':<15}{params['cocogan']['D']:>12,}{params['baseline']['D']:>12,}")
    if seconds:
        print(f"{'train s':<15}{seconds['cocogan']:>12}{seconds['baseline']:>12}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. train.celeba_crop=false")
    parser.add_argument("--data", default="builtin:blobs")
    parser.add_argument("--steps", type=int, default=400)
    parser.add_argument("--n", type=int, default=1000, help="images per side for SWD/seams")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (0: torch default)")
    parser.add_argument("--out", default="benchmark-output/quality-baseline")
    parser.add_argument("--evaluate-only", action="store_true",
                        help="skip training; measure the two models already under --out")
    args = parser.parse_args(argv)

    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    config = apply_overrides(get_preset(args.preset), args.set).validate()
    out = Path(args.out)
    report_file = out / "quality_baseline.json"
    if args.evaluate_only:
        seconds = json.loads(report_file.read_text()).get("train_seconds") \
            if report_file.is_file() else None
    else:
        seconds = train_both(config, args, out, device)
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
