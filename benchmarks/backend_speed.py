"""The generation backends (``--backend``) against the plain generator, side by side in one run.

    python -m benchmarks.backend_speed --json /tmp/backend-speed.json   # everything (~15 min)
    python -m benchmarks.backend_speed --parts huge --huge 1024      # one part

Untrained weights with the EMA batch norm recalibrated (speed does not depend on training).
Every figure is a ratio or a fraction of this machine's own dense float32 matmul FLOP/s measured
in the same run (`benchmarks.common`), so figures from different machines compare:

- patches/s of one forward pass (tiny: the CPU default chunk of every command; small64 and
  celeba64, at their real size, fewer patches), interleaved: ``plain`` (the generator module, the
  torch backend before :mod:`cocogan.nn.fused`), ``torch`` (the fused rewrite) and
  ``onnxruntime`` (its graph), on 1 and 2 threads; the FLOPs of each (plain's, the rewrite's)
  are counted by torch.utils.flop_counter, so achieved FLOP/s over the matmul rate says how close
  each backend is to the limit;
- a chunk sweep (tiny, one thread, every chunk and backend interleaved): whether the default
  chunk suits both backends;
- the torch rewrite's layouts (every preset, one thread): NCHW against channels-last, the
  measurement behind ``cocogan.nn.fused.NARROW``;
- a per-op profile of one forward (torch.profiler, onnxruntime's own profiler): where the time
  goes, in shares of the forward;
- ``cocogan generate huge --size N`` (default 8192) as a subprocess per backend (plain: torch
  with the fused rewrite switched off): wall seconds and peak RSS (the process's VmHWM), the
  ONNX graph already cached (its one-off export is timed apart);
- ``cocogan serve``'s cold-tile latency: the median seconds of a default tile nobody asked for
  before (tile cache off), per backend.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from benchmarks.common import count_flops, matmul_flops_per_second
from cocogan import CocoGAN, get_preset
from cocogan.apps.backend import CACHE_ENV, OnnxGenerator, cached_graph
from cocogan.apps.viewport import PixelBox
from cocogan.checkpoint import save_model
from cocogan.nn.fused import fuse_for_inference
from cocogan.render import DEFAULT_CHUNK
from cocogan.serve.tiles import TileRenderer, seed_latent

# Runs `cocogan ARGS` and prints the process's peak RSS in KiB. VmHWM counts this process's
# memory since exec only; getrusage's ru_maxrss would include the (large) parent's at the fork.
PEAK_RSS = ("import re, sys; from cocogan.cli import main; code = main(sys.argv[1:]); "
            "print(re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read())[1]); "
            "sys.exit(code)")
MATMUL = 1024  # side of the fp32 matmul timed beside each pass (2 GFLOP)
PATCHES = {"tiny": DEFAULT_CHUNK, "small64": 256, "celeba64": 32}  # patches per timed pass


def untrained(preset: str) -> tuple[CocoGAN, object]:
    torch.manual_seed(0)
    config = get_preset(preset)
    model = CocoGAN(config.model).eval()
    model.recalibrate_ema(8, batches=2)
    return model, config


def inputs(model: CocoGAN, count: int) -> tuple[torch.Tensor, torch.Tensor]:
    rows = torch.randint(0, model.coords.grid_h, (count,)).float()
    cols = torch.randint(0, model.coords.grid_w, (count,)).float()
    return torch.rand(count, model.config.z_dim) * 2 - 1, model.coords.micro_coords(rows, cols)


def median_seconds(calls: dict, repeats: int) -> dict:
    """Median wall seconds of each call, interleaved: a shared machine's load hits all alike."""
    for fn in calls.values():
        fn()  # warm-up
    seconds: dict = defaultdict(list)
    for _ in range(repeats):
        for key, fn in calls.items():
            start = time.perf_counter()
            fn()
            seconds[key].append(time.perf_counter() - start)
    return {k: sorted(v)[len(v) // 2] for k, v in seconds.items()}


def timed(runners: dict[str, Callable], z: torch.Tensor, c: torch.Tensor, repeats: int
          ) -> dict[str, float]:
    """Median seconds of one forward of (z, c) per backend."""
    return median_seconds({k: (lambda f=f: f(z, c)) for k, f in runners.items()}, repeats)


PLAIN = "import cocogan.apps.backend as b; b.fuse_for_inference = lambda g: g; "  # the old torch
BACKENDS = ("plain", "torch", "onnxruntime")


def backends(model: CocoGAN, threads: int) -> dict[str, Callable]:
    """name -> G(z, c) as each backend runs it (plain: eval mode, spectral norm cached)."""
    graph = OnnxGenerator(cached_graph(model), threads=threads)
    ema, fused = model.generator_ema, fuse_for_inference(model.generator_ema)

    def plain_g(z: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), parametrize.cached():
            return ema(z, c)

    return {"plain": plain_g, "torch": torch.no_grad()(fused), "onnxruntime": graph}


def patch_rates(preset: str, threads: int, repeats: int) -> dict:
    model, _ = untrained(preset)
    count = PATCHES[preset]
    z, c = inputs(model, count)
    runners = backends(model, threads)
    plain = count_flops(lambda: runners["plain"](z, c)) / count  # per patch
    fused = count_flops(lambda: runners["torch"](z, c)) / count
    flops = {"plain": plain, "torch": fused, "onnxruntime": fused}
    a, b = torch.randn(MATMUL, MATMUL), torch.randn(MATMUL, MATMUL)
    runners["matmul"] = lambda _z, _c: a @ b  # interleaved too: the rate under the same load
    seconds = timed(runners, z, c, repeats)
    matmul = 2 * MATMUL**3 / seconds.pop("matmul")
    rate = {k: count / s for k, s in seconds.items()}
    return {"preset": preset, "threads": threads, "patches": count,
            "gflop_per_patch": round(plain / 1e9, 5),
            "fused_gflop_per_patch": round(fused / 1e9, 5),
            "matmul_gflops": round(matmul / 1e9, 2),
            **{f"{k}_patches_per_s": round(v, 1) for k, v in rate.items()},
            **{f"{k}_over_plain": round(rate[k] / rate["plain"], 3) for k in BACKENDS[1:]},
            **{f"{k}_of_matmul": round(v * flops[k] / matmul, 3) for k, v in rate.items()}}


def chunk_sweep(repeats: int) -> list[dict]:
    """patches/s of tiny per chunk and backend, all of them interleaved (one thread)."""
    model, _ = untrained("tiny")
    runners = backends(model, 1)
    chunks = (32, 64, 128, 256, 512, 1024, 2048)
    feeds = {chunk: inputs(model, chunk) for chunk in chunks}
    calls = {(chunk, k): (lambda f=f, zc=feeds[chunk]: f(*zc))
             for chunk in chunks for k, f in runners.items()}
    seconds = median_seconds(calls, repeats)  # type: ignore[arg-type]
    return [{"chunk": chunk, **{f"{k}_patches_per_s": round(chunk / seconds[chunk, k], 1)
                                for k in runners}} for chunk in chunks]


def layouts(repeats: int) -> list[dict]:
    """ms per pass of the torch rewrite in NCHW and channels-last, per preset (one thread): the
    measurement behind ``cocogan.nn.fused.NARROW``."""
    rows = []
    for preset, count in PATCHES.items():
        model, _ = untrained(preset)
        z, c = inputs(model, count)
        nchw = fuse_for_inference(model.generator_ema, "onnx")  # torch's NCHW layout
        last = fuse_for_inference(model.generator_ema, "onnx")
        last.layout = torch.channels_last  # forced, whatever the width
        last.to(memory_format=torch.channels_last)
        seconds = timed({"nchw": torch.no_grad()(nchw), "channels_last": torch.no_grad()(last)},
                        z, c, repeats)
        rows.append({"preset": preset, "patches": count, "stem": model.generator_ema.stem_channels,
                     **{f"{k}_ms": round(v * 1e3, 2) for k, v in seconds.items()},
                     "channels_last_speedup": round(seconds["nchw"] / seconds["channels_last"], 3)})
    return rows


def profiles(preset: str, top: int = 6) -> dict:
    """Shares of one forward's time per op, torch.profiler and onnxruntime's profiler."""
    import onnxruntime
    from torch.profiler import ProfilerActivity, profile

    model, _ = untrained(preset)
    z, c = inputs(model, PATCHES[preset])
    run = backends(model, 1)["torch"]
    run(z, c)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        run(z, c)
    events = [e for e in prof.key_averages() if e.key.startswith("aten::")]
    total = sum(e.self_cpu_time_total for e in events)
    torch_ops = sorted(((e.key, e.self_cpu_time_total / total) for e in events),
                       key=lambda kv: -kv[1])[:top]
    options = onnxruntime.SessionOptions()
    options.enable_profiling, options.intra_op_num_threads = True, 1
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "cocogan-ort")
    session = onnxruntime.InferenceSession(cached_graph(model), options,
                                           providers=["CPUExecutionProvider"])
    feeds = {"z": z.numpy(), "coords": c.numpy()}
    session.run(None, feeds)
    session.run(None, feeds)
    trace = Path(session.end_profiling())
    ops: dict[str, float] = defaultdict(float)
    nodes = [e for e in json.loads(trace.read_text()) if e.get("cat") == "Node"
             and e["name"].endswith("_kernel_time")]
    for event in nodes[len(nodes) // 2:]:  # the second run only
        ops[event["args"]["op_name"]] += event["dur"]
    trace.unlink()
    total_ort = sum(ops.values())
    ort_ops = sorted(((k, v / total_ort) for k, v in ops.items()), key=lambda kv: -kv[1])[:top]
    return {"preset": preset, "torch": [[k, round(v, 3)] for k, v in torch_ops],
            "onnxruntime": [[k, round(v, 3)] for k, v in ort_ops]}


def huge(size: int, folder: Path, threads: int, chunk: int | None = None) -> dict:
    """`generate huge` per backend in its own process: wall seconds and peak RSS."""
    model, config = untrained("tiny")
    run = folder / "run"
    save_model(run / "checkpoints" / "step-00000000.safetensors", config, model, 0)
    start = time.perf_counter()
    cached_graph(model)  # the one-off export, outside the timed runs
    row: dict = {"size": size, "threads": threads, "chunk": chunk or "default",
                 "export_seconds": round(time.perf_counter() - start, 1)}
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), CACHE_ENV: os.environ[CACHE_ENV]}
    for backend in BACKENDS:
        argv = [sys.executable, "-c", PLAIN * (backend == "plain") + PEAK_RSS, "generate", "huge",
                "--run", str(run), "--size", str(size), "--backend",
                "torch" if backend == "plain" else backend, "--no-progress", "--force",
                "--output", str(folder / f"{backend}.tif"),
                *(["--chunk", str(chunk)] if chunk else [])]
        start = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        row[f"{backend}_seconds"] = round(time.perf_counter() - start, 1)
        assert done.returncode == 0, done.stderr
        row[f"{backend}_peak_rss_mb"] = round(int(done.stdout.split()[-1]) / 1024, 1)
        (folder / f"{backend}.tif").unlink()
    for backend in BACKENDS[1:]:
        row[f"plain_over_{backend}_seconds"] = round(row["plain_seconds"]
                                                     / row[f"{backend}_seconds"], 3)
        row[f"{backend}_over_plain_rss"] = round(row[f"{backend}_peak_rss_mb"]
                                                 / row["plain_peak_rss_mb"], 3)
    return row


async def cold_tiles(renderer: TileRenderer, z_dim: int, box: PixelBox, tiles: int
                     ) -> list[float]:
    """Seconds of each of ``tiles`` tiles of new seeds (after one to warm up)."""
    seconds = []
    for seed in range(tiles + 1):
        start = time.perf_counter()
        await renderer.tile(seed_latent(z_dim, seed), box)
        seconds.append(time.perf_counter() - start)
    return seconds[1:]


def serve_latency(tiles: int) -> dict:
    """Median seconds of a cold tile (a new seed each time, tile cache off), per backend."""
    from cocogan.apps.backend import use_backend
    from cocogan.serve.tiles import TileRenderer, default_tile, tile_box

    model, config = untrained("tiny")
    row: dict = {"preset": "tiny"}
    for backend in ("torch", "onnxruntime"):
        use_backend(model, backend)
        renderer = TileRenderer(model, chunk=DEFAULT_CHUNK, cache_bytes=0,
                                max_queued=1 << 20)
        side = default_tile(model.coords)
        box = tile_box(model.coords, 0, 0, side)

        seconds = asyncio.run(cold_tiles(renderer, config.model.z_dim, box, tiles))
        renderer.close()
        row["tile_pixels"] = side
        row[f"{backend}_cold_tile_s"] = round(sorted(seconds)[len(seconds) // 2], 4)
    use_backend(model, "torch")
    row["torch_over_onnxruntime"] = round(row["torch_cold_tile_s"]
                                          / row["onnxruntime_cold_tile_s"], 3)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,small64,celeba64")
    parser.add_argument("--threads", default="1,2")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--huge", type=int, default=8192, help="generate huge side, pixels")
    parser.add_argument("--huge-threads", type=int, default=1)
    parser.add_argument("--tiles", type=int, default=9, help="cold tiles timed per backend")
    parser.add_argument("--huge-chunk", type=int, default=None,
                        help="--chunk of generate huge (default: each backend's default)")
    parser.add_argument("--parts", default="patches,sweep,layouts,profile,huge,serve",
                        help="what to measure (comma-separated)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="backend-speed-") as folder:
        os.environ.setdefault(CACHE_ENV, str(Path(folder) / "cache"))  # graphs of this run
        report: dict = {"torch": torch.__version__, "matmul_gflops": {}, "patches": []}

        def show(key: str, value: object) -> None:
            print(json.dumps({key: value}), flush=True)

        parts = set(args.parts.split(","))
        for threads in (int(t) for t in args.threads.split(",") if "patches" in parts):
            torch.set_num_threads(threads)
            matmul = matmul_flops_per_second(torch.device("cpu"))
            report["matmul_gflops"][threads] = round(matmul / 1e9, 2)
            show("matmul_gflops", {threads: report["matmul_gflops"][threads]})
            for preset in args.presets.split(","):
                report["patches"].append(patch_rates(preset, threads, args.repeats))
                show("patches", report["patches"][-1])
        torch.set_num_threads(1)
        measures = {"sweep": lambda: chunk_sweep(args.repeats),
                    "layouts": lambda: layouts(args.repeats),
                    "profile": lambda: [profiles(p) for p in ("tiny", "small64")],
                    "huge": lambda: huge(args.huge, Path(folder), args.huge_threads,
                                         args.huge_chunk),
                    "serve": lambda: serve_latency(args.tiles)}
        for name, measure in measures.items():
            if name in parts:
                report[name] = measure()
                show(name, report[name])
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
