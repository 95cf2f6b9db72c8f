"""Time and peak memory of FID on N images on this machine (one process per N, so the peak
resident memory is N's own).

Features stream through the network in batches, so time grows linearly with N and memory
stays flat; the Fréchet distance itself (a 2048 x 2048 matrix square root) is a fixed cost.
Run two sizes and compare: the ratio of their feature times should be the ratio of their N,
the ratio of their peaks ~1. Throughput is also given as achieved FLOP/s over this machine's
own matmul FLOP/s, which stays comparable when the machine is shared.

    python -m benchmarks.fid_cost --n 100 --threads 1
    python -m benchmarks.fid_cost --n 400 --threads 1
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch

from benchmarks.common import count_flops, matmul_flops_per_second
from cocogan.metrics import FeatureStats, InceptionFeatures, fid_from_stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, required=True, help="images featurised")
    ap.add_argument("--size", type=int, default=64, help="input images are size x size")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    ext = InceptionFeatures(batch_size=args.batch)
    one = ext.prepare(torch.zeros(1, 3, args.size, args.size))
    flops_per_image = count_flops(lambda: ext.net(one))
    peak_flops = matmul_flops_per_second(device)

    images = torch.rand(args.n, 3, args.size, args.size, generator=torch.Generator()
                        .manual_seed(0)) * 2 - 1
    start = time.perf_counter()
    feats = ext(images).numpy()
    t_features = time.perf_counter() - start
    start = time.perf_counter()
    stats = FeatureStats.from_features(feats)
    other = FeatureStats(mean=stats.mean + 0.1, cov=stats.cov, n=stats.n)
    fid = fid_from_stats(stats, other)
    t_fid = time.perf_counter() - start
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB

    per_image = t_features / args.n
    print(json.dumps({
        "n": args.n, "threads": args.threads, "batch": args.batch,
        "features_s": round(t_features, 1), "s_per_image": round(per_image, 4),
        "fid_s": round(t_fid, 2), "fid_check": round(fid, 3),
        "peak_rss_mib": round(peak_mib),
        "gflop_per_image": round(flops_per_image / 1e9, 2),
        "achieved_over_matmul": round(flops_per_image / per_image / peak_flops, 3),
        "estimate_10000_s": round(per_image * 10_000 + t_fid),
        "finite": bool(np.isfinite(feats).all()),
    }))


if __name__ == "__main__":
    main()
