"""How much the real-image resize filter alone moves the figures (review 2026-12b N9).

The same real images are resized with ``data.resample=lanczos`` and with ``bilinear`` (the
release's PIL bilinear) and measured against each other, next to the floor of the same filter:
two disjoint sets of lanczos images. A gap well above the floor means figures computed with one
filter are not on the scale of the other's.

    python -m benchmarks.resample_gap --data ../shared/data/emoji-noto-64 --size 32 --n 500
"""

from __future__ import annotations

import argparse
import sys

import torch
from torch.utils.data import Subset

from benchmarks.real_quality import real_sampler
from cocogan.coords import CoordinateSystem
from cocogan.data import build_dataset
from cocogan.evaluation import EvalConfig, build_reference, evaluate
from cocogan.evaluation.run import feature_extractor_for
from cocogan.evaluation.sampling import REAL_ORDER_SEED


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True, help="an image folder")
    parser.add_argument("--size", type=int, default=32, help="square side in pixels")
    parser.add_argument("--n", type=int, default=500, help="images per side")
    parser.add_argument("--metrics", default="swd", help="swd, and fid,kid with the weights")
    parser.add_argument("--celeba-crop", action="store_true", help="the CelebA face box first")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    metrics = tuple(args.metrics.split(","))
    sets = {r: build_dataset(args.data, args.size, args.size, celeba_crop=args.celeba_crop,
                             resample=r) for r in ("lanczos", "bilinear")}
    coords = CoordinateSystem(1, 1, 1, 1, args.size)  # one patch: geometry is unused here
    cfg = EvalConfig(n=args.n, batch=50, swd_images=args.n, kid_subset_size=min(1000, args.n))
    extractor = feature_extractor_for(metrics, torch.device("cpu"), 50, None, None)
    count = len(sets["lanczos"])  # type: ignore[arg-type]
    order = torch.randperm(count, generator=torch.Generator().manual_seed(REAL_ORDER_SEED))
    other = Subset(sets["lanczos"], order[args.n:2 * args.n].tolist())  # not the reference's
    rows = {"bilinear vs lanczos (same images)": sets["bilinear"],
            "lanczos vs lanczos (other images: floor)": other}
    ref = build_reference(metrics, sets["lanczos"], coords, cfg, extractor=extractor)
    for label, dataset in rows.items():
        result = evaluate(ref, cfg, sample=real_sampler(dataset, args.n), extractor=extractor)
        figures = "  ".join(f"{k} {v:.4g}" for k, v in result.values.items()
                           if k.split("_")[0] in metrics)
        print(f"{label}: {figures}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
