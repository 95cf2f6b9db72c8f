"""COCO-GAN and the full-image baseline on a real image set, against its held-out part.

Both runs are measured against the held-out side of the data's fixed split (`DIR::holdout`,
never trained on) with the same metrics and image count; next to them, the real-vs-real floor:
as many training images (`DIR::train`) against the same held-out images, which is what a
perfect generator would score at this count (FID and KID are biased upwards at small counts).
Built-in data (`--data builtin:skyline`) has no split: the reference is the built-in images of
seed 0, as `cocogan eval --real builtin:skyline` draws them, and the floor other images of it
(another seed). `--models` adds more runs or shipped models to the same table.

    python -m benchmarks.real_quality --coco RUN --baseline RUN \
        --data ../shared/data/emoji-noto-64 --n 572
    python -m benchmarks.real_quality --coco skyline-v1 --models RUN --data builtin:skyline \
        --n 1000 --metrics swd,seams,wrap,spread,repeat,likeness,colour

Writes the table to stdout and the figures to --json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from benchmarks.common import matmul_flops_per_second
from benchmarks.quality_baseline import baseline_sampler
from cocogan.checkpoint import load_model
from cocogan.data import build_dataset
from cocogan.evaluation import EvalConfig, build_reference, cocogan_sampler, evaluate
from cocogan.evaluation.sampling import Sampler, real_subset
from cocogan.metrics.inception import InceptionFeatures

METRICS = "fid,kid,swd,seams,spread,likeness"
HOLDOUT_SEED = 1_000_003  # built-in data: the floor's images are drawn with another seed


def real_sampler(dataset: torch.utils.data.Dataset, count: int) -> Sampler:
    """Images of a fixed subset of ``dataset`` in order, as if a generator drew them."""
    subset = real_subset(dataset, count)
    position = 0

    def sample(take: int, rng: torch.Generator) -> torch.Tensor:
        nonlocal position
        images = torch.stack([subset[(position + i) % len(subset)] for i in range(take)])
        position += take
        return images

    return sample


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--coco", required=True, help="COCO-GAN run (or shipped model file)")
    parser.add_argument("--baseline", help="full-image baseline run (model.family=baseline)")
    parser.add_argument("--data", required=True, help="the image folder (split inside)")
    parser.add_argument("--models", nargs="*", default=[], help="more runs or shipped models")
    parser.add_argument("--n", type=int, default=572, help="images per side")
    parser.add_argument("--metrics", default=METRICS, help=f"default {METRICS}")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args(argv)

    gflops = matmul_flops_per_second(torch.device("cpu")) / 1e9
    config, coco, step = load_model(args.coco, "cpu")
    m = config.model
    metrics = tuple(args.metrics.split(","))
    size = {"height": m.full_height, "width": m.full_width}
    if args.data.startswith("builtin:"):
        held = build_dataset(args.data, **size, cylindrical=coco.coords.cyclic)
        train = build_dataset(args.data, **size, cylindrical=coco.coords.cyclic, seed=HOLDOUT_SEED)
    else:
        held = build_dataset(f"{args.data}::holdout", **size)
        train = build_dataset(f"{args.data}::train", **size)
    count = min(args.n, len(held))  # type: ignore[arg-type]
    cfg = EvalConfig(n=count, batch=64, seed=0, kid_subset_size=min(1000, count),
                     swd_images=count, seam_images=count)
    features = {"fid", "kid", "precision", "recall"} & set(metrics)
    extractor = InceptionFeatures(None, device="cpu", batch_size=64) if features else None
    start = time.perf_counter()
    ref = build_reference(metrics, held, coco.coords, cfg, extractor=extractor)
    rows = {f"COCO-GAN (step {step})": evaluate(ref, cfg, sample=cocogan_sampler(coco),
                                                 extractor=extractor).values}
    for name in args.models:
        _, model, model_step = load_model(name, "cpu")
        rows[f"{name} (step {model_step})"] = evaluate(ref, cfg, sample=cocogan_sampler(model),
                                                       extractor=extractor).values
    if args.baseline:
        _, base, base_step = load_model(args.baseline, "cpu", family="baseline")
        rows[f"baseline (step {base_step})"] = evaluate(ref, cfg, sample=baseline_sampler(base),
                                                        extractor=extractor).values
    rows["real train vs held-out"] = evaluate(ref, cfg, sample=real_sampler(train, count),
                                              extractor=extractor).values
    seconds = time.perf_counter() - start
    keys = [k for m in metrics for k in (m, f"{m}_real") if k in rows["real train vs held-out"]]
    print(f"{args.data}: {count} images per side, held-out reference; matmul "
          f"{gflops:.0f} GFLOP/s; measured in {seconds:.0f} s")
    print(f"{'':<28}" + "".join(f"{k:>15}" for k in keys))
    for name, values in rows.items():
        print(f"{name:<28}" + "".join(f"{values.get(k, float('nan')):>15.4g}" for k in keys))
    if args.json:
        args.json.write_text(json.dumps({"n": count, "data": args.data, "rows": rows,
                                         "matmul_gflops": gflops}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
