"""onnxruntime against PyTorch: micro patches per second of the exported generator.

    python -m benchmarks.export_speed                       # tiny, small64, celeba64 on CPU
    python -m benchmarks.export_speed --threads 2 --presets tiny --json speed.json

For each preset (untrained weights, EMA batch norm recalibrated: speed does not depend on
training) the same passes of ``--chunk`` patches (the CPU default of every generate command) are
timed three ways, interleaved so that load on a shared machine hits all of them alike:
- pytorch: the EMA generator in eval mode with spectral norm cached, as ``render_patches`` runs it;
- pytorch_plain: the plain copy that is exported (spectral norm baked into the weights), which
  separates what the runtime gains from what baking the weights gains;
- onnxruntime: the exported graph (CPU provider, the same number of threads).
The ratio onnxruntime / pytorch is the figure to compare between machines. Whether
``generate huge`` would gain: the share of its time spent in G (timed on one tile, the rest is
8-bit conversion and TIFF writing) and the speed-up that share allows (Amdahl).
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch.nn.utils import parametrize

from cocogan import CocoGAN, get_preset
from cocogan.apps.huge import plan_huge, write_huge
from cocogan.config import Config
from cocogan.export import model_card, onnx_model, plain_generator
from cocogan.render import DEFAULT_CHUNK, latents


def seconds_of(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_preset(name: str, chunk: int, repeats: int, threads: int) -> dict:
    import onnxruntime

    config: Config = get_preset(name)
    model = CocoGAN(config.model).eval()
    model.recalibrate_ema(8, batches=2)
    card = model_card(config, model.coords, 0, Path("untrained"), "onnx")
    data = onnx_model(plain_generator(model), card).SerializeToString()
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    session = onnxruntime.InferenceSession(data, options, providers=["CPUExecutionProvider"])
    z = torch.rand(chunk, config.model.z_dim) * 2 - 1
    rows = torch.randint(0, model.coords.grid_h, (chunk,)).float()
    cols = torch.randint(0, model.coords.grid_w, (chunk,)).float()
    c = model.coords.micro_coords(rows, cols)
    plain, ema = plain_generator(model), model.generator_ema
    feeds = {"z": z.numpy(), "coords": c.numpy()}

    def run_pytorch() -> None:
        with torch.no_grad(), parametrize.cached():
            ema(z, c)

    def run_plain() -> None:
        with torch.no_grad():
            plain(z, c)

    calls = {"pytorch": run_pytorch, "pytorch_plain": run_plain,
             "onnxruntime": lambda: session.run(None, feeds)}
    for fn in calls.values():
        fn()  # warm-up
    seconds: dict[str, list[float]] = {k: [] for k in calls}
    for _ in range(repeats):  # interleaved: the machine's load changes over a run
        for key, fn in calls.items():
            seconds[key].append(seconds_of(fn))
    rate = {k: chunk / sorted(v)[len(v) // 2] for k, v in seconds.items()}
    return {"preset": name, "chunk": chunk, "threads": threads,
            **{f"{k}_patches_per_s": round(v, 1) for k, v in rate.items()},
            "onnxruntime_over_pytorch": round(rate["onnxruntime"] / rate["pytorch"], 3),
            "plain_over_pytorch": round(rate["pytorch_plain"] / rate["pytorch"], 3),
            **huge_share(model, chunk, 1.0 / rate["pytorch"],
                         rate["onnxruntime"] / rate["pytorch"])}


def huge_share(model: CocoGAN, chunk: int, patch_seconds: float, ratio: float) -> dict:
    """Share of ``write_huge``'s time (one 256-pixel tile, BigTIFF) spent in G, and the
    speed-up of the whole command if G ran ``ratio`` times as fast."""
    side = 256 // model.coords.micro * model.coords.micro
    plan = plan_huge(model.coords, side, side, tile=side)
    z = latents([0], model.config.z_dim)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "h.tif"
        run = lambda: write_huge(model, z, path, plan, chunk=chunk, progress=False)  # noqa: E731
        run()  # warm-up
        seconds = sorted(seconds_of(run) for _ in range(3))[1]  # median, as for the passes
    share = min(1.0, (side // model.coords.micro) ** 2 * patch_seconds / seconds)
    return {"huge_g_share": round(share, 3),
            "huge_speedup_with_onnxruntime": round(1.0 / ((1 - share) + share / ratio), 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", default="tiny,small64,celeba64")
    parser.add_argument("--chunk", type=int, default=DEFAULT_CHUNK)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch and onnxruntime threads (default 1: steady under load)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    for name in args.presets.split(","):
        row = bench_preset(name, args.chunk, args.repeats, args.threads)
        print(json.dumps(row), flush=True)
        rows.append(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
