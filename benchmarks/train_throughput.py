"""Training throughput of the presets on this machine: images/s and achieved FLOP/s as a
fraction of the same device's measured dense matmul FLOP/s.

Times :func:`cocogan.training.step.train_step` (one D, Q and G update) on synthetic full images
already on the device, so data loading is excluded; the loop's data workers overlap decoding with
the step. Paper presets run at a small batch on CPU (``--paper-batch``) so the run ends in
minutes; images/s scales with the batch until the device saturates.

    python benchmarks/train_throughput.py                  # small + paper presets
    python benchmarks/train_throughput.py --presets tiny celeba64 --batch 8
    python benchmarks/train_throughput.py --device cuda --batch 64 --presets celeba64 \
        --amp --channels-last --compile reduce-overhead   # the GPU options (sn_once is on)

On CUDA the table also gives achieved FLOP/s over the measured bf16 matmul rate.
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
from cocogan.config import COMPILE_MODES, RunConfig
from cocogan.presets import PRESETS
from cocogan.training.device import configure_threads, prepare_model
from cocogan.training.state import step_generator
from cocogan.training.step import build_optimizers, train_step

SMALL_PRESETS = ("tiny", "tiny-panorama", "small64")
PAPER_PRESETS = ("celeba64", "lsun64", "celeba128", "lsun256", "matterport")




def measure(name: str, batch: int | None, device: torch.device, repeats: int,
            options: argparse.Namespace) -> dict:
    """Seconds per step, FLOPs per step and images/s of one preset."""
    config = get_preset(name)
    if batch is not None:
        config.optim.batch = batch
    config.run.channels_last, config.run.compile = options.channels_last, options.compile
    torch.manual_seed(0)
    model = CocoGAN(config.model).to(device)
    optimizers = build_optimizers(model, config)
    m = config.model
    images = torch.rand(config.optim.batch, 3, m.full_height, m.full_width, device=device)
    images = images * 2 - 1  # (B, 3, H, W) in [-1, 1]
    rng = step_generator(device).manual_seed(0)

    def step() -> None:
        train_step(model, optimizers, images, config, rng, amp=options.amp,
                   sn_once=options.sn_once)

    flops = count_flops(step)  # eager, before compiling: the counter cannot see fused kernels
    prepare_model(model, config)
    if options.channels_last:
        images = images.contiguous(memory_format=torch.channels_last)
    warmup = 1 if options.compile == "off" else 5  # compilation, then CUDA-graph recording
    seconds = time_call(step, device, warmup=warmup, repeats=repeats)
    return {"preset": name, "size": f"{m.full_height}x{m.full_width}",
            "patches": f"{m.micro}/{m.macro}", "batch": config.optim.batch,
            "seconds": seconds, "images_per_s": config.optim.batch / seconds,
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
    parser.add_argument("--sn-once", action=argparse.BooleanOptionalAction,
                        default=RunConfig.sn_once, help="run.sn_once, on as in the config")
    parser.add_argument("--channels-last", action="store_true", help="run.channels_last")
    parser.add_argument("--compile", default="off", choices=COMPILE_MODES, help="run.compile")
    args = parser.parse_args()

    device = pick_device(args.device)
    threads = configure_threads(device)
    peak = matmul_flops_per_second(device)
    rows = []
    for name in args.presets:
        batch = args.batch
        if batch is None and device.type == "cpu" and name not in SMALL_PRESETS:
            batch = args.paper_batch
        rows.append(measure(name, batch, device, args.repeats, args))
    peak = max(peak, matmul_flops_per_second(device))  # re-measured: the better of the two
    bf16 = (max(matmul_flops_per_second(device, dtype=torch.bfloat16) for _ in range(2))
            if device.type == "cuda" else None)
    what = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor()
    options = [f"--{k.replace('_', '-')}" for k in ("amp", "channels_last") if getattr(args, k)]
    options += ([] if args.sn_once else ["--no-sn-once"]) + (
        [f"--compile {args.compile}"] if args.compile != "off" else [])
    print(f"device: {device} ({what or platform.machine()}), {threads} threads, torch "
          f"{torch.__version__}; dense float32 matmul: {peak / 1e9:.1f} GFLOP/s"
          + (f", bfloat16: {bf16 / 1e9:.1f} GFLOP/s" if bf16 else "")
          + f"; options: {' '.join(options) or 'none'}\n")
    print("| preset | full | micro/macro | batch | s/step | images/s | GFLOP/step "
          "| GFLOP/s | of matmul |" + (" of bf16 matmul |" if bf16 else ""))
    print("|---|---|---|---:|---:|---:|---:|---:|---:|" + ("---:|" if bf16 else ""))
    for r in rows:
        print(f"| {r['preset']} | {r['size']} | {r['patches']} | {r['batch']} "
              f"| {r['seconds']:.3f} | {r['images_per_s']:.1f} | {r['flops'] / 1e9:.2f} "
              f"| {r['flops_per_s'] / 1e9:.1f} | {100 * r['flops_per_s'] / peak:.0f}% |"
              + (f" {100 * r['flops_per_s'] / bf16:.1f}% |" if bf16 else ""))


if __name__ == "__main__":
    main()
