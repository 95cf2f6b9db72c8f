"""How big is an FID? Reference points on one image set, so users can read the scale.

Splits a folder (seeded permutation) into two disjoint sets A and B (halves, or `--per-set`
images each) and reports FID and KID
of A against: B (the noise floor: same distribution, finite samples), B blurred (Gaussian,
sigma in pixels), B with Gaussian noise (std in [-1, 1] units). It also reports how far the
two preprocessing conventions (`cocogan.metrics.inception.PREPROCESSING`) move the features:
FID between the same images under "tf" and under "pytorch-fid".

    python benchmarks/fid_scale.py --data ../shared/data/emoji-noto-64 --size 64 \
        --per-set 300 --out benchmark-output/fid-scale

FID depends on the sample count (it is biased upwards for small sets), so compare figures only
at the same count; KID is unbiased.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from cocogan.data import build_dataset
from cocogan.metrics import (
    FeatureStats,
    InceptionFeatures,
    fid_from_stats,
    kernel_inception_distance,
)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur (B, C, H, W), reflect-padded, radius 3 sigma."""
    radius = max(1, math.ceil(3 * sigma))
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    k = (k / k.sum()).to(images)
    c = images.shape[1]
    x = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def features(ext: InceptionFeatures, images: torch.Tensor, cache: Path) -> np.ndarray:
    """Features of `images`, cached in `cache` (.npy) so an interrupted run resumes."""
    if cache.is_file():
        return np.load(cache)
    start = time.perf_counter()
    feats = ext(images).numpy()
    np.save(cache, feats)
    print(f"  {cache.stem}: {len(images)} images in {time.perf_counter() - start:.0f} s",
          flush=True)
    return feats


def compare(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    kid, kid_std = kernel_inception_distance(a, b, subsets=100, subset_size=1000)
    fid = fid_from_stats(FeatureStats.from_features(a), FeatureStats.from_features(b))
    return {"fid": fid, "kid": kid, "kid_std": kid_std}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="image folder")
    ap.add_argument("--size", type=int, default=64, help="images are loaded at size x size")
    ap.add_argument("--blur", type=float, default=1.0, help="blur sigma in pixels")
    ap.add_argument("--noise", type=float, default=0.1, help="noise std in [-1, 1] units")
    ap.add_argument("--per-set", type=int, default=0, help="images in A and in B (0: halves)")
    ap.add_argument("--convention-images", type=int, default=1000,
                    help="images of A also featurised with the pytorch-fid convention")
    ap.add_argument("--parts", default="floor,blur,noise,conventions",
                    help="comma list of floor, blur, noise, conventions")
    ap.add_argument("--batch", type=int, default=50)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    dataset = build_dataset(args.data, args.size, args.size)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))
    half = args.per_set or len(dataset) // 2
    if 2 * half > len(dataset):
        raise SystemExit(f"--per-set {half}: the folder has only {len(dataset)} images")
    images = torch.stack([dataset[int(i)] for i in order[: 2 * half]])  # (2 half, 3, S, S)
    a, b = images[:half], images[half:]
    tf = InceptionFeatures(batch_size=args.batch, preprocessing="tf")
    pt = InceptionFeatures(net=tf.net, batch_size=args.batch, preprocessing="pytorch-fid")
    tag = f"{half}of{len(dataset)}"  # cached features are reused only for the same sets
    results_file = args.out / f"results-{tag}.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results.update(folder_images=len(dataset), per_set=half)

    def report(name: str, x: np.ndarray, y: np.ndarray) -> None:
        results[name] = compare(x, y)
        results_file.write_text(json.dumps(results, indent=2))  # after each: partial runs count
        print(f"{name}: {json.dumps(results[name])}", flush=True)

    fa = features(tf, a, args.out / f"a-{tag}-tf.npy")
    fb = features(tf, b, args.out / f"b-{tag}-tf.npy")
    parts = set(args.parts.split(","))
    if "floor" in parts:
        report("A vs B", fa, fb)
    if "blur" in parts:
        blurred = gaussian_blur(b, args.blur)
        report(f"A vs B blurred (sigma {args.blur} px)", fa,
               features(tf, blurred, args.out / f"b-{tag}-blur{args.blur}-tf.npy"))
    if "noise" in parts:
        noise = torch.randn(b.shape, generator=torch.Generator().manual_seed(1))
        noised = (b + args.noise * noise).clamp(-1, 1)
        report(f"A vs B noised (std {args.noise})", fa,
               features(tf, noised, args.out / f"b-{tag}-noise{args.noise}-tf.npy"))
    if "conventions" in parts:
        m = min(args.convention_images, len(a))
        fpt = features(pt, a[:m], args.out / f"a-{tag}-first{m}-pytorch-fid.npy")
        results[f"max abs feature difference, A[:{m}] tf vs pytorch-fid"] = float(
            np.abs(fa[:m] - fpt).max())
        report(f"A[:{m}] tf vs the same images pytorch-fid", fa[:m], fpt)
        report(f"A[:{m}] vs B[:{m}], tf", fa[:m], fb[:m])


if __name__ == "__main__":
    main()
