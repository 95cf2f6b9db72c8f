"""Gigapixel generation on a CPU: ``cocogan generate huge`` at several sizes up to 32768 x 32768.

Each size runs the real command in a fresh process under ``/usr/bin/time -v`` (peak RSS of the
whole process, model and Python included), then the BigTIFF is opened with tifffile and a few
tiles (the corners and the centre) are compared with the same rectangles generated directly by
:func:`cocogan.render.render_rect` (at most one grey level apart: see docs/applications.md,
"Exactness"). The model is an untrained ``tiny`` with ``ngf=4``: speed and memory do not depend
on training.

    python -m benchmarks.gigapixel --sizes 1024,32768 --out /tmp/gigapixel

Results are appended to ``OUT/results.jsonl`` as each size finishes, so a long run that is
stopped still leaves the sizes it completed; the table at the end is printed from that file.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cocogan import CocoGAN, get_preset
from cocogan.apps.huge import plan_huge
from cocogan.apps.io import to_uint8
from cocogan.checkpoint import load_model, save_model
from cocogan.render import evaluating, latents, render_rect

TIME = "/usr/bin/time"
CLI = "import sys; from cocogan.cli import main; sys.exit(main())"  # the `cocogan` command


def make_run(folder: Path, ngf: int) -> Path:
    """An untrained ``tiny`` (width ``ngf``) saved as a checkpoint file."""
    config = get_preset("tiny")
    config.model.ngf = ngf
    torch.manual_seed(0)
    path = folder / "tiny-untrained.safetensors"
    save_model(path, config, CocoGAN(config.model).eval(), 0)
    return path


def run_huge(checkpoint: Path, size: int, output: Path, tile: int, chunk: int) -> dict:
    """``cocogan generate huge`` under /usr/bin/time -v; wall seconds and peak RSS."""
    command = [TIME, "-v", sys.executable, "-c", CLI, "generate", "huge",
               "--run", str(checkpoint), "--seed", "0", "--size", str(size), "--tile", str(tile),
               "--chunk", str(chunk), "--output", str(output), "--device", "cpu",
               "--no-progress"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"size {size} failed:\n{result.stderr[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr)[1])
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)",
                     result.stderr)[1]
    seconds = sum(float(p) * 60**i for i, p in enumerate(reversed(wall.split(":"))))
    cpu = sum(float(re.search(rf"{kind} time \(seconds\): ([\d.]+)", result.stderr)[1])
              for kind in ("User", "System"))
    return {"size": size, "seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": rss / 1024,
            "file_mb": output.stat().st_size / 2**20, "ns_per_pixel": seconds / size**2 * 1e9}


def read_tile(page, index: int) -> np.ndarray:
    """Decode one tile of a tiled page without reading the rest of the file."""
    handle = page.parent.filehandle
    handle.seek(page.dataoffsets[index])
    data = handle.read(page.databytecounts[index])
    tile, _, shape = page.decode(data, index)
    return np.asarray(tile).reshape(shape[1:])  # (T, T, 3)


def check_tiles(checkpoint: Path, path: Path, size: int, tile: int) -> int:
    """Open the file with tifffile; compare corner and centre tiles with direct generation.

    Returns the largest difference in grey levels (0-255) over the checked tiles.
    """
    import tifffile

    _, model, _ = load_model(checkpoint, torch.device("cpu"))
    plan = plan_huge(model.coords, size, size, tile=tile)
    z = latents([0], model.config.z_dim)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert tif.is_bigtiff and page.is_tiled, "expected a tiled BigTIFF"
        assert page.shape == (size, size, 3), f"shape {page.shape}, expected {(size, size, 3)}"
        rows, cols = plan.tiles
        worst = 0
        for row, col in {(0, 0), (0, cols - 1), (rows - 1, 0), (rows - 1, cols - 1),
                         (rows // 2, cols // 2)}:
            stored = read_tile(page, row * cols + col)
            with evaluating(model.generator_ema):
                direct = to_uint8(render_rect(model.generator_ema, model.coords, z,
                                              plan.tile_rect(row, col))[0])
            stored = stored[:direct.shape[0], :direct.shape[1]]
            worst = max(worst, int(np.abs(stored.astype(int) - direct.astype(int)).max()))
    return worst


def print_table(rows: list[dict]) -> None:
    print(f"load average {os.getloadavg()[0]:.1f}, torch threads per run: "
          f"{os.environ.get('OMP_NUM_THREADS', 'torch default')}\n")
    print("| size | megapixels | wall s | CPU s | ns/pixel (wall) | peak RSS MB | file MB "
          "| tiles vs direct (grey levels) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['size']}x{r['size']} | {r['size'] ** 2 / 1e6:.1f} | {r['seconds']:.1f} "
              f"| {r['cpu_seconds']:.1f} | {r['ns_per_pixel']:.0f} | {r['peak_rss_mb']:.0f} "
              f"| {r['file_mb']:.0f} | {r['max_tile_error']} |")
    if len(rows) > 1:
        first, last = rows[0], rows[-1]
        pixels = (last["size"] / first["size"]) ** 2
        print(f"\npeak RSS {last['size']}^2 / {first['size']}^2: "
              f"{last['peak_rss_mb'] / first['peak_rss_mb']:.2f} for {pixels:.0f}x the pixels; "
              f"CPU time per pixel: {last['cpu_seconds'] / first['cpu_seconds'] / pixels:.2f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1024,32768", help="square sides, smallest first")
    parser.add_argument("--out", type=Path, default=Path("gigapixel-bench"))
    parser.add_argument("--ngf", type=int, default=4)
    parser.add_argument("--tile", type=int, default=256)
    parser.add_argument("--chunk", type=int, default=1024)
    parser.add_argument("--keep", action="store_true", help="keep the TIFF files")
    args = parser.parse_args(argv)
    if not shutil.which(TIME):
        print(f"benchmarks.gigapixel: {TIME} is needed (apt install time)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    checkpoint = make_run(args.out, args.ngf)
    results = args.out / "results.jsonl"
    results.write_text("")
    for size in (int(s) for s in args.sizes.split(",")):
        output = args.out / f"huge-{size}.tif"
        started = time.time()
        row = run_huge(checkpoint, size, output, args.tile, args.chunk)
        row["max_tile_error"] = check_tiles(checkpoint, output, size, args.tile)
        row["started"] = started
        with results.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        print(f"  {size}: {row['seconds']:.0f} s, peak RSS {row['peak_rss_mb']:.0f} MB",
              file=sys.stderr, flush=True)
        if not args.keep:
            output.unlink()
    print_table([json.loads(line) for line in results.read_text().splitlines()])
    return 0


if __name__ == "__main__":
    sys.exit(main())
