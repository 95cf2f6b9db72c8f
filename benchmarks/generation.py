"""Generation benchmarks (paper Section 3.5): full images, viewports and huge images.

    python -m benchmarks.generation                      # all three, CPU-sized defaults
    python -m benchmarks.generation --presets celeba128 --skip-huge --device cuda

Reported, each as a ratio measured in the same run so machines compare:
- full images: images/s, megapixels/s, achieved FLOP/s over this device's dense matmul FLOP/s,
  and the speed-up of batching all (image, position) pairs over one forward pass per coordinate
  (what the authors' release did), for the same batch of images and for a single image;
- viewport: time for a quarter of the image (the top-left quadrant) over the full image's time;
- huge: peak resident memory and time of ``write_huge`` (tiled BigTIFF) for square outputs of
  increasing size, each in a fresh subprocess. The peak is sampled from /proc every 5 ms during
  generation: ru_maxrss is no use here, because Linux carries it across fork and exec, so a
  worker would report its parent's peak.
Untrained weights are used: speed does not depend on training.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

from benchmarks.common import count_flops, matmul_flops_per_second, pick_device, time_call
from cocogan import CocoGAN, generate_micro, get_preset
from cocogan.apps import DEFAULT_CHUNK, cartesian_box, full_images, latents, viewport
from cocogan.apps.huge import plan_huge, write_huge
from cocogan.render import GPU_CHUNK, default_chunk

BATCH = {"tiny": 64, "small64": 16, "celeba128": 4}  # images per call on CPU


def authors_loop(model: CocoGAN, z: torch.Tensor) -> torch.Tensor:
    """One forward pass per micro coordinate for the whole batch (the released TF loop)."""
    rows, cols = model.coords.micro_grid()
    with torch.no_grad():
        return torch.stack([generate_micro(model.generator_ema, model.coords, z,
                                           r.expand(len(z), 1).float(),
                                           c.expand(len(z), 1).float())[:, 0]
                            for r, c in zip(rows, cols, strict=True)], dim=1)


def bench_full(preset: str, device: torch.device, matmul: float, chunk: int,
               repeats: int) -> dict:
    model = CocoGAN(get_preset(preset).model).to(device).eval()
    batch = BATCH.get(preset, 8)
    if device.type == "cuda":  # a GPU needs large passes: at least one full chunk per call
        batch = max(8 * batch, chunk // (model.coords.grid_h * model.coords.grid_w))
    z = latents(list(range(batch)), model.config.z_dim, device)
    flops = count_flops(lambda: full_images(model, z, chunk=chunk))
    seconds = time_call(lambda: full_images(model, z, chunk=chunk), device, warmup=1,
                        repeats=repeats)
    loop = time_call(lambda: authors_loop(model, z), device, warmup=1, repeats=repeats)
    one = z[:1]  # a single image: P passes of one patch against one pass of P patches
    single = (time_call(lambda: authors_loop(model, one), device, warmup=1, repeats=repeats)
              / time_call(lambda: full_images(model, one, chunk=chunk), device, warmup=1,
                          repeats=repeats))
    half_h, half_w = model.config.full_height // 2, model.config.full_width // 2
    box = cartesian_box(model.coords, 0, 0, half_h, half_w)
    quarter = time_call(lambda: viewport(model, z, box, chunk=chunk), device, warmup=1,
                        repeats=repeats)
    pixels = model.config.full_height * model.config.full_width
    return {"preset": preset, "batch": batch, "seconds": seconds,
            "images_per_s": batch / seconds,
            "megapixels_per_s": batch * pixels / seconds / 1e6,
            "gflop_per_image": flops / batch / 1e9,
            "achieved_over_matmul": flops / seconds / matmul,
            "speedup_over_per_coordinate": loop / seconds,
            "speedup_over_per_coordinate_one_image": single,
            "viewport_quarter_over_full": quarter / seconds}


def current_rss_mb() -> float:
    """Resident set size now (Linux /proc); ru_maxrss would be a high-water mark inherited from
    the parent process."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class RssSampler(threading.Thread):
    """Samples the current RSS every few milliseconds; ``peak`` is the highest seen."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self.done = interval, current_rss_mb(), threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.interval):
            self.peak = max(self.peak, current_rss_mb())


def huge_worker(size: int, preset: str, ngf: int, chunk: int, tile: int) -> dict:
    """Runs in a fresh process: generate one size x size image to a temporary file."""
    config = get_preset(preset).model
    config.ngf = ngf
    model = CocoGAN(config).eval()
    z = latents([0], config.z_dim)
    plan = plan_huge(model.coords, size, size, tile=tile)
    before = current_rss_mb()
    sampler = RssSampler()
    sampler.start()
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        path = write_huge(model, z, Path(folder) / "huge.tif", plan, chunk=chunk,
                          progress=False)
        seconds = time.perf_counter() - start
        file_mb = path.stat().st_size / 2**20
    sampler.done.set()
    sampler.join()
    return {"size": size, "seconds": seconds, "file_mb": file_mb,
            "rss_before_generation_mb": before, "peak_rss_during_generation_mb": sampler.peak,
            "us_per_pixel": seconds / size**2 * 1e6}


def bench_huge(sizes: list[int], preset: str, ngf: int, chunk: int, tile: int,
               threads: int | None) -> list[dict]:
    rows = []
    for size in sizes:  # a fresh process per size: no allocator state from the other sizes
        command = [sys.executable, "-m", "benchmarks.generation", "--huge-worker", str(size),
                   "--huge-preset", preset, "--huge-ngf", str(ngf), "--chunk", str(chunk),
                   "--tile", str(tile), *(["--threads", str(threads)] if threads else [])]
        result = subprocess.run(command, capture_output=True, text=True, check=True,
                                cwd=Path(__file__).resolve().parents[1])
        rows.append(json.loads(result.stdout.strip().splitlines()[-1]))
        print(f"  huge {size}: {rows[-1]['seconds']:.1f} s, peak RSS "
              f"{rows[-1]['peak_rss_during_generation_mb']:.0f} MB", file=sys.stderr)
    return rows


def print_tables(device: torch.device, matmul: float, full: list[dict], huge: list[dict],
                 huge_model: str) -> None:
    print(f"device: {device} ({torch.get_num_threads()} threads), torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}; dense fp32 matmul {matmul / 1e9:.1f} GFLOP/s")
    if full:
        print("\n| preset | images/call | images/s | megapixels/s | GFLOP/image | "
              "achieved / matmul FLOP/s | speed-up over per-coordinate loop (same images) | "
              "same, one image | viewport 1/4 time / full time |")
        print("|---|---|---|---|---|---|---|---|---|")
        for r in full:
            print(f"| {r['preset']} | {r['batch']} | {r['images_per_s']:.1f} | "
                  f"{r['megapixels_per_s']:.3f} | {r['gflop_per_image']:.2f} | "
                  f"{r['achieved_over_matmul']:.2f} | {r['speedup_over_per_coordinate']:.2f}x | "
                  f"{r['speedup_over_per_coordinate_one_image']:.2f}x | "
                  f"{r['viewport_quarter_over_full']:.2f} |")
    if huge:
        print(f"\nhuge ({huge_model}), tiled BigTIFF, one process per size:\n")
        print("| size | megapixels | seconds | us/pixel | RSS before MB | peak RSS during "
              "generation MB | file MB |")
        print("|---|---|---|---|---|---|---|")
        for r in huge:
            print(f"| {r['size']}x{r['size']} | {r['size'] ** 2 / 1e6:.1f} | {r['seconds']:.1f} "
                  f"| {r['us_per_pixel']:.2f} | {r['rss_before_generation_mb']:.0f} | "
                  f"{r['peak_rss_during_generation_mb']:.0f} | {r['file_mb']:.0f} |")
        first, last = huge[0], huge[-1]
        peaks = [r["peak_rss_during_generation_mb"] for r in (first, last)]
        growth = [peaks[0] - first["rss_before_generation_mb"],
                  peaks[1] - last["rss_before_generation_mb"]]
        time_ratio = last["us_per_pixel"] / first["us_per_pixel"]
        print(f"\npeak RSS during generation largest/smallest: {peaks[1] / peaks[0]:.2f} "
              f"(growth over the loaded model: {growth[0]:.0f} MB -> {growth[1]:.0f} MB); "
              f"time per pixel largest/smallest: {time_ratio:.2f} "
              f"(pixels x{last['size'] ** 2 / first['size'] ** 2:.0f})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--presets", default="tiny,small64,celeba128")
    parser.add_argument("--chunk", type=int, default=None,
                        help=f"micro patches per pass (default {DEFAULT_CHUNK} on a CPU, "
                        f"{GPU_CHUNK} on a GPU)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's choice); 1 is steadier when "
                        "other processes share the cores")
    parser.add_argument("--huge-sizes", default="1024,4096,16384")
    parser.add_argument("--huge-preset", default="tiny")
    parser.add_argument("--huge-ngf", type=int, default=4,
                        help="generator width for the huge benchmark (4: a thin tiny model, "
                        "so 16384^2 finishes in minutes on a CPU)")
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--skip-full", action="store_true")
    parser.add_argument("--skip-huge", action="store_true")
    parser.add_argument("--json", type=Path, help="also write the raw figures here")
    parser.add_argument("--huge-worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.huge_worker:
        print(json.dumps(huge_worker(args.huge_worker, args.huge_preset, args.huge_ngf,
                                     args.chunk or DEFAULT_CHUNK, args.tile)))
        return 0
    device = pick_device(args.device)
    args.chunk = args.chunk or default_chunk(device)
    matmul = matmul_flops_per_second(device)
    full = [] if args.skip_full else [bench_full(p, device, matmul, args.chunk, args.repeats)
                                      for p in args.presets.split(",")]
    huge = [] if args.skip_huge else bench_huge(
        [int(s) for s in args.huge_sizes.split(",")], args.huge_preset, args.huge_ngf,
        args.chunk, args.tile, args.threads)
    print_tables(device, matmul, full, huge, f"{args.huge_preset}, ngf={args.huge_ngf}")
    if args.json:
        args.json.write_text(json.dumps({"device": str(device), "matmul_flops": matmul,
                                         "full": full, "huge": huge}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
