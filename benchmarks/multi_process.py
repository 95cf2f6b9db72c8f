"""Data-parallel scaling: training steps/s of `cocogan train` with 1 and N processes, in one run.

Each setting is a real `torchrun --nproc-per-node N -m cocogan train` run (data loading,
gradient all-reduce, batch-norm synchronisation, logging included) at the same global batch,
so N processes each train on batch/N images. Steps/s comes from metrics.jsonl (``elapsed_s``
between the first record after warm-up and the last); the figures that travel are the
ratios to the 1-process run of the same invocation. On CPU each process gets one thread
(OMP_NUM_THREADS=1), so N processes use N cores.

    python benchmarks/multi_process.py                                   # tiny, 1 vs 2, CPU
    python benchmarks/multi_process.py --preset celeba64 --procs 1 2 4 8 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

TORCHRUN = Path(sys.executable).with_name("torchrun")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def steps_per_second(metrics: Path, warmup: int) -> float:
    records = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    records = [r for r in records if "elapsed_s" in r and r["step"] >= warmup]
    first, last = records[0], records[-1]
    return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def run(procs: int, norm: str, args: argparse.Namespace, folder: Path) -> float:
    """Steps/s of one `cocogan train` under torchrun with ``procs`` processes."""
    out = folder / f"p{procs}-{norm}"
    command = [str(TORCHRUN), "--nproc-per-node", str(procs), "--master-addr", "127.0.0.1",
               "--master-port", str(free_port()), "-m", "cocogan", "train",
               "--preset", args.preset, "--data", "builtin:blobs", "--out", str(out),
               "--steps", str(args.steps), "--device", args.device, "--dist-norm", norm,
               "--set", f"optim.batch={args.batch}", "run.log_every=1",
               f"run.sample_every={10 * args.steps}", f"run.checkpoint_every={10 * args.steps}",
               "data.num_workers=0"]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL,
                   stderr=subprocess.PIPE)
    return steps_per_second(out / "metrics.jsonl", args.warmup)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--batch", type=int, default=16, help="global batch (optim.batch)")
    parser.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--warmup", type=int, default=5, help="steps left out of the timing")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1, help="OMP threads per process")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as folder:
        for procs in args.procs:
            for norm in ("sync", "per-rank") if procs > 1 else ("sync",):
                rate = run(procs, norm, args, Path(folder))
                results.append({"procs": procs, "norm": norm, "steps_per_s": rate})
                print(f"{procs} process(es), {norm:8s} BN: {rate:.3g} steps/s", flush=True)
    base = results[0]["steps_per_s"]
    print(f"\n{args.preset}, global batch {args.batch}, {args.device}, {args.threads} thread(s) "
          f"per process, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| processes | batch per process | BN statistics | steps/s over 1 process | "
          "efficiency |")
    print("|---|---|---|---|---|")
    for r in results:
        ratio = r["steps_per_s"] / base
        r["speedup"], r["efficiency"] = ratio, ratio / r["procs"]
        print(f"| {r['procs']} | {args.batch // r['procs']} | {r['norm']} | {ratio:.2f}x | "
              f"{ratio / r['procs']:.0%} |")
    if args.json:
        args.json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                         "results": results}, indent=1))


if __name__ == "__main__":
    main()
