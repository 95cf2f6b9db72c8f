"""`cocogan demo`: draw the shipped models, then train a tiny preset on a laptop CPU in minutes
and print how far its images are from held-out real ones at step 0 and at the end (colour
statistics, SWD and the patch-wise measures of `cocogan.metrics`). What it writes, what the
figures mean and why these lengths: docs/training.md, "The demo".
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from cocogan import metrics
from cocogan.apps.full import full_images
from cocogan.apps.io import image_grid, load_image, save_png
from cocogan.checkpoint import load_model
from cocogan.cli.train import plain_warnings
from cocogan.config import Config
from cocogan.data import BuiltinDataset
from cocogan.outputs import atomic_write, claim_folder, is_run_dir
from cocogan.plotting import plot_metrics
from cocogan.presets import get_preset
from cocogan.shipped import models as shipped_models
from cocogan.training.device import configure_threads
from cocogan.training.logging import Progress
from cocogan.training.loop import SAMPLES_DIR, Trainer
from cocogan.training.run import RunSpec, new_trainer, prepare_new_run
from cocogan.training.signals import StopFlag

DEFAULT_OUT = Path("demo-output")
EVAL_IMAGES = 256  # generated and held-out real images per measurement
HELD_OUT_SEED = 1_000_003  # built-in seed of the held-out real images (never trained on)


@dataclass(frozen=True)
class DemoStage:
    """One dataset of the demo."""

    name: str  # sub-folder of the output
    preset: str
    data: str
    steps: int  # full demo
    fast_steps: int  # --fast (tests, smoke runs)
    step_seconds: float  # measured on a slow 2-core machine (a forecast far above it warns)
    full_steps: int  # --full: the length of the shipped models' runs


STAGES = (
    # blobs take their size from z only after ~3,000 steps (docs/seams.md); 800 fit 15 minutes
    DemoStage("blobs", "tiny", "builtin:blobs", steps=800, fast_steps=6, step_seconds=0.47,
              full_steps=3000),
    # its D sees 16 x 48 macro patches: 2.5x the step of 16 x 16; only with --full (or --fast)
    DemoStage("skyline", "tiny-panorama", "builtin:skyline", steps=0, fast_steps=6,
              step_seconds=1.2, full_steps=2000),
)


def add_parser(sub: argparse._SubParsersAction, name: str) -> None:
    parser = sub.add_parser(
        name, help="train the tiny presets on the built-in datasets and show the results",
        description="Train `tiny` on builtin:blobs and `tiny-panorama` on builtin:skyline "
                    "(minutes on 2 CPU cores) and write images, logs and a loss plot.")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help=f"output folder (default {DEFAULT_OUT}/)")
    parser.add_argument("--fast", action="store_true",
                        help="a few steps only: checks the pipeline, learns nothing")
    parser.add_argument("--full", action="store_true", help="train blobs and skyline as long "
                        "as the shipped models were (3,000 and 2,000 steps: ~1 h on 2 cores)")
    parser.add_argument("--seed", type=int, default=0, help="run seed (default 0)")


class Forecast:
    """Hook: after ``after`` steps, prints how long the rest will take, with a warning when
    that is far beyond the plan; the steps stay as planned, so results depend on steps only."""

    every = 1

    def __init__(self, planned_minutes: float, after: int = 20) -> None:
        self.planned, self.after = planned_minutes, after
        self.start: tuple[int, float] | None = None
        self.done = False

    def __call__(self, trainer: Trainer) -> None:
        step, now = trainer.state.step, time.perf_counter()
        if self.start is None:
            self.start = (step, now)  # the first steps pay for warm-up: measure after them
            return
        if self.done or step - self.start[0] < self.after:
            return
        self.done = True
        per_step = (now - self.start[1]) / (step - self.start[0])
        minutes = per_step * (trainer.config.optim.steps - step) / 60
        line = f"{per_step * 1000:.0f} ms per step: about {minutes:.1f} min for the rest"
        if minutes > 2 * self.planned:
            line += (f", {minutes / self.planned:.1f}x the planned {self.planned:g} min (the "
                     "CPU is slow or busy). The steps stay as planned so the result does not "
                     "depend on speed; Ctrl-C stops with a checkpoint")
        trainer.notify(line)


class FollowLoad:
    """Hook: every 50 steps, one CPU thread per core other processes leave idle (spinning
    threads were 50x slower). Demo only: results depend bitwise on the thread count."""

    every = 50

    def __call__(self, trainer: Trainer) -> None:
        configure_threads(trainer.device)


def distances(real: torch.Tensor, fake: torch.Tensor, micro: int, cyclic: bool
              ) -> dict[str, float]:
    """Colour (L2 distance of the per-channel mean and std), SWD and the patch-wise measures of
    two (N, 3, H, W) sets in [-1, 1]; seams, spread and wrap over the real ones."""
    def colour(x: torch.Tensor) -> torch.Tensor:
        flat = x.double().transpose(0, 1).reshape(x.shape[1], -1)  # (C, N * H * W)
        return torch.cat([flat.mean(1), flat.std(1)])

    result = {"colour": float((colour(real) - colour(fake)).norm()),
              "swd": float(metrics.sliced_wasserstein(real, fake, seed=0)["mean"]),
              "seams": metrics.seam_ratio(fake, micro) / metrics.seam_ratio(real, micro),
              "spread": metrics.content_spread(fake) / metrics.content_spread(real),
              "repeat": metrics.repetition(fake, micro), "likeness": metrics.likeness(fake)}
    if cyclic:
        result["wrap"] = metrics.wrap_ratio(fake) / metrics.wrap_ratio(real)
    return result


def stage_steps(stage: DemoStage, fast: bool, full: bool) -> int:
    """Steps of a stage: --fast, --full or the default (0: the stage is skipped)."""
    return stage.fast_steps if fast else stage.full_steps if full else stage.steps


def demo_config(stage: DemoStage, fast: bool, full: bool = False) -> Config:
    """The stage's preset with the demo's step count and intervals."""
    config = get_preset(stage.preset)
    run, steps = config.run, stage_steps(stage, fast, full)
    config.optim.steps, config.data.source = steps, stage.data
    run.sample_every, run.checkpoint_every = max(1, steps // 6), steps
    run.log_every = max(1, min(run.log_every, steps // 3))
    if fast:
        config.data.num_workers, run.n_samples = 0, 4
    return config


def run_stage(stage: DemoStage, out: Path, fast: bool, seed: int, full: bool = False) -> dict:
    """Train one stage, measure it before and after, write its pictures; returns the figures."""
    folder, config = out / stage.name, demo_config(stage, fast, full)
    run_dir, steps = folder / "run", config.optim.steps
    if is_run_dir(run_dir):  # a previous demo's run (a cocogan run; never a user's folder)
        shutil.rmtree(run_dir)
    spec = RunSpec(seed=seed, device="auto")
    print(f"\n== {stage.name}: preset {stage.preset} on {stage.data}, {steps} steps ==",
          flush=True)  # before the progress lines on stderr
    dataset, data_line = prepare_new_run(run_dir, config, spec)
    trainer = new_trainer(run_dir, config, spec, dataset)
    count, model, cyclic = (32 if fast else EVAL_IMAGES), config.model, trainer.model.coords.cyclic
    held_out = BuiltinDataset(stage.data.removeprefix("builtin:"), model.full_height,
                              model.full_width, seed=HELD_OUT_SEED + seed)
    held_out = torch.stack([held_out[i] for i in range(count)])  # never trained on
    eval_z = trainer.model.sample_z(count, torch.Generator().manual_seed(seed + 7))

    def measure(images: torch.Tensor) -> dict[str, float]:
        return distances(held_out, images, model.micro, cyclic)

    before = measure(trainer.sample_images(eval_z).cpu())
    start = time.perf_counter()
    with StopFlag() as stop:
        if not fast:
            trainer.hooks += [Forecast(stage.step_seconds * steps / 60), FollowLoad()]
        stopped = trainer.fit(stop, Progress(0, steps))
    if stopped in ("SIGINT", "SIGTERM"):
        raise KeyboardInterrupt
    seconds = time.perf_counter() - start
    fake = trainer.sample_images(eval_z).cpu()
    result = {"dataset": stage.data, "preset": stage.preset, "steps": trainer.state.step,
              "seconds": round(seconds, 1), "step0": before, "final": measure(fake),
              "real_vs_real": measure(torch.stack([dataset[i] for i in range(count)]))}
    shown = 16 if cyclic else 36
    _save_grid(folder / "final.png", fake[:shown], cyclic, folder / "panorama-720.png")
    _save_grid(folder / "real.png", held_out[:shown], cyclic)
    grids = [load_image(path) for path in sorted((run_dir / SAMPLES_DIR).glob("step-*.png"))]
    if grids:  # the sample grids over training side by side, oldest left
        save_png(folder / "training.png", enlarge(image_grid(torch.stack(grids), len(grids),
                                                             pad=8), 2))
    plot_metrics(run_dir / "metrics.jsonl", folder / "losses.png")
    print(data_line)
    print(f"trained {trainer.state.step} steps in {seconds:.0f} s")
    print(_table(result), flush=True)
    return result


def enlarge(images: torch.Tensor, scale: int = 4) -> torch.Tensor:
    """Tiny images (..., H, W) enlarged ``scale`` times by nearest neighbour, so pixels show."""
    return images.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)


def _save_grid(path: Path, images: torch.Tensor, cyclic: bool, twice: Path | None = None
               ) -> None:
    """``images`` 4x enlarged in a grid; for panoramas, ``twice``: the first 8 pasted twice side
    by side (0-720 degrees)."""
    big = enlarge(images)
    save_png(path, image_grid(big, 2 if cyclic else 6))
    if cyclic and twice is not None:
        save_png(twice, image_grid(torch.cat([big[:8], big[:8]], dim=-1), 1))  # (8, 3, H, 2W)


def show_shipped(folder: Path) -> None:
    """Every shipped model draws full images from fixed seeds into folder/NAME.png (panoramas:
    also NAME-720.png): what training longer gives, in seconds."""
    models = shipped_models()
    if not models:
        print("no shipped models in this installation (cocogan models)")
        return
    print(f"\n== shipped models: {', '.join(entry.name for entry in models)} ==", flush=True)
    for entry in models:
        _, model, _ = load_model(entry.path)
        cyclic = model.coords.cyclic
        z = model.sample_z(8 if cyclic else 36, torch.Generator().manual_seed(0))
        _save_grid(folder / f"{entry.name}.png", full_images(model, z), cyclic,
                   folder / f"{entry.name}-720.png")
        print(f"{entry.name}: {entry.card.get('description', '')} -> {folder / entry.name}.png")


def _table(result: dict) -> str:
    """Step 0, the end and real vs real: colour, SWD, seams, layout figures (and wrap)."""
    columns = [c for c in (("colour stats", "colour", ".3f"), ("SWD x1e3", "swd", ".1f"),
                           ("seams / real", "seams", ".2f"), ("spread / real", "spread", ".2f"),
                           ("repeat", "repeat", ".2f"), ("likeness", "likeness", ".2f"),
                           ("wrap / real", "wrap", ".2f")) if c[1] in result["final"]]
    rows = [("", *(title for title, _, _ in columns))]
    for label, key in (("step 0", "step0"), (f"step {result['steps']}", "final"),
                       ("real vs real", "real_vs_real")):
        rows.append((label, *(format(result[key][name], spec) for _, name, spec in columns)))
    return "\n".join(f"  {row[0]:<14}" + "".join(f"{cell:>14}" for cell in row[1:])
                     for row in rows)


def _demo_from_before_markers(out: Path) -> bool:
    """An unmarked folder an earlier demo wrote: its summary.json is a list of stage results
    (a user's folder that merely holds a summary.json is refused by claim_folder)."""
    summary = out / "summary.json"
    with contextlib.suppress(OSError, ValueError, RecursionError):
        if summary.is_file() and summary.stat().st_size < 1 << 20:
            stages = json.loads(summary.read_text())
            return isinstance(stages, list) and bool(stages) and all(
                isinstance(s, dict) and {"step0", "final"} <= s.keys() for s in stages)
    return False


def run(args: argparse.Namespace) -> int:
    out: Path = args.out
    if not _demo_from_before_markers(out):
        claim_folder(out, "--out")  # never write into a folder of the user's own files
    start = time.perf_counter()
    with plain_warnings("demo"):
        show_shipped(out / "shipped")
        results = [run_stage(stage, out, args.fast, args.seed, args.full) for stage in STAGES
                   if stage_steps(stage, args.fast, args.full)]
    text = json.dumps(results, indent=2) + "\n"
    atomic_write(out / "summary.json", lambda tmp: tmp.write_text(text))
    print(f"\ndemo finished in {time.perf_counter() - start:.0f} s; results in {out}/")
    better = all(r["final"]["swd"] < r["step0"]["swd"] and
                 r["final"]["colour"] < r["step0"]["colour"] for r in results)
    if not args.fast and not better:
        print("warning: a final distance is not below its step-0 value", file=sys.stderr)
    return 0
