"""Training throughput of the presets on this machine: images/s and achieved FLOP/s as a
fraction of the same device's measured dense matmul FLOP/s.

Times :func:`cocogan.training.step.train_step` (one D, Q and G update) on synthetic full images
already on the device, so data loading is excluded; the loop's data workers overlap decoding with
the step. Paper presets run at a small batch on CPU (``--paper-batch``) so the run ends in
minutes; images/s scales with the batch until the device saturates.

    python benchmarks/train_throughput.py                  # small + paper presets
    python benchmarks/train_throughput.py --presets tiny celeba64 --batch 8
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make `benchmarks` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    count_flops,
    matmul_flops_per_second,
    pick_device,
    time_call,
)
from cocogan import CocoGAN, get_preset
from cocogan.presets import PRESETS
from cocogan.training.device import configure_threads
from cocogan.training.step import build_optimizers, train_step

SMALL_PRESETS = ("tiny", "tiny-panorama", "small64")
PAPER_PRESETS = ("celeba64", "lsun64", "celeba128", "lsun256", "matterport")




def measure(name: str, batch: int | None, device: torch.device, repeats: int,
            amp: bool) -> dict:
    """Seconds per step, FLOPs per step and images/s of one preset."""
    config = get_preset(name)
    if batch is not None:
        config.train.batch = batch
    torch.manual_seed(0)
    model = CocoGAN(config.model).to(device)
    optimizers = build_optimizers(model, config.train)
    m = config.model
    images = torch.rand(config.train.batch, 3, m.full_height, m.full_width, device=device)
    images = images * 2 - 1  # (B, 3, H, W) in [-1, 1]
    rng = torch.Generator().manual_seed(0)

    def step() -> None:
        train_step(model, optimizers, images, config.train, rng, amp=amp)

    flops = count_flops(step)
    seconds = time_call(step, device, warmup=1, repeats=repeats)
    return {"preset": name, "size": f"{m.full_height}x{m.full_width}",
            "patches": f"{m.micro}/{m.macro}", "batch": config.train.batch,
            "seconds": seconds, "images_per_s": config.train.batch / seconds,
            "flops": flops, "flops_per_s": flops / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", choices=list(PRESETS), metavar="NAME",
                        default=[*SMALL_PRESETS, *PAPER_PRESETS])
    parser.add_argument("--batch", type=int, help="batch for every preset (default: the "
                        "preset's own for small presets, --paper-batch for the others on CPU)")
    parser.add_argument("--paper-batch", type=int, default=4,
                        help="CPU batch of presets not in the small set (default 4)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per preset")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast (CUDA only)")
    args = parser.parse_args()

    device = pick_device(args.device)
    threads = configure_threads(device)
    peak = matmul_flops_per_second(device)
    rows = []
    for name in args.presets:
        batch = args.batch
        if batch is None and device.type == "cpu" and name not in SMALL_PRESETS:
            batch = args.paper_batch
        rows.append(measure(name, batch, device, args.repeats, args.amp))
    peak = max(peak, matmul_flops_per_second(device))  # re-measured: the better of the two
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    print(f"device: {device} ({what or platform.machine()}), {threads} threads, torch "
          f"{torch.__version__}; dense float32 matmul: {peak / 1e9:.1f} GFLOP/s\n")
    print("| preset | full | micro/macro | batch | s/step | images/s | GFLOP/step "
          "| GFLOP/s | of matmul |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['preset']} | {r['size']} | {r['patches']} | {r['batch']} "
              f"| {r['seconds']:.3f} | {r['images_per_s']:.1f} | {r['flops'] / 1e9:.2f} "
              f"| {r['flops_per_s'] / 1e9:.1f} | {100 * r['flops_per_s'] / peak:.0f}% |")


if __name__ == "__main__":
    main()
