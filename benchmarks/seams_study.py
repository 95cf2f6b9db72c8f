"""Seam study: how fast does each generator option make the micro-patch grid disappear?

For one built-in dataset and one small preset, trains the paper's method and each option of
``VARIANTS`` from the same seed for the largest budget, and at every budget measures, with the
`cocogan eval` pipeline against one real reference:
- seams: micro-patch border ratio of generated images over that of real images (1 = as seamless
  as the data; ``cocogan.metrics.seams``), and wrap likewise for panoramas;
- SWD x1e3 (PGGAN's multi-scale sliced Wasserstein distance; real vs real is the floor);
- spread: how far the content moves from image to image, generated over real
  (``cocogan.metrics.layout``; below 1: objects stuck in one place);
- repeat: correlation of the image with itself one micro patch to the right (real: ~0; a strip
  of identical tiles: 1);
- likeness: mean layout similarity of two different images (real: ~0; one layout for all: 1);
and writes one picture per (variant, budget) cell, each variant's run directory (VARIANT/, trained
by the one `cocogan.training.Trainer` as `cocogan train` would; delete it to rerun that
variant), its final weights (VARIANT.safetensors, for `cocogan generate`/`eval` and
benchmarks/bn_statistics.py), results.json and a Markdown table.

    python -m benchmarks.seams_study --data builtin:blobs --preset tiny --budgets 300,1000
    python -m benchmarks.seams_study --data builtin:skyline --preset tiny-panorama \
        --variants paper,margin --budgets 300,1000,3000
    python -m benchmarks.seams_study --preset tiny --cost 20 --variants paper,margin+overlap30

Each variant is an override of the preset (``--set`` syntax); the options are off in every
paper preset. A variant's steps are the same whatever the machine's speed; seconds are reported
for information only (the machine may be shared).
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cocogan.apps.io import image_grid, save_png
from cocogan.checkpoint import save_model
from cocogan.config import Config, apply_overrides
from cocogan.data import BuiltinDataset, build_dataset
from cocogan.evaluation import EvalConfig, build_reference, evaluate
from cocogan.evaluation.sampling import cocogan_sampler
from cocogan.model import CocoGAN
from cocogan.presets import get_preset
from cocogan.render import evaluating, render_rect, trained_rect
from cocogan.training import RunSpec, Trainer, new_trainer, prepare_new_run
from cocogan.training.step import build_optimizers, train_step

LAYOUT = ("spread", "repeat", "likeness")  # cocogan.metrics.layout, via the eval pipeline
# the paper's G, whatever the preset adopts
PAPER_SETTINGS = ["model.g_margin=false", "loss.w_overlap=0", "loss.w_spatial_g=null",
                  "model.macro_width=null"]
# The study also measured per-pixel coordinates (pixel_coords, pixel_fourier), replicate padding
# (g_padding) and a coordinate-field G (g_field); none was adopted and the options were removed
# from the generator: their figures stay in docs/seams.md.
VARIANTS: dict[str, list[str]] = {
    "paper": [],
    "margin": ["model.g_margin=true"],
    "margin+overlap": ["model.g_margin=true", "loss.w_overlap=10"],
    "margin+overlap20": ["model.g_margin=true", "loss.w_overlap=20"],
    "margin+overlap30": ["model.g_margin=true", "loss.w_overlap=30"],
    "margin+overlap100": ["model.g_margin=true", "loss.w_overlap=100"],
    "margin+overlap30+gfree": ["model.g_margin=true", "loss.w_overlap=30",
                               "loss.w_spatial_g=0"],
    "margin+overlap30+gfree+wide48": ["model.g_margin=true", "loss.w_overlap=30",
                                      "loss.w_spatial_g=0", "model.macro_width=48"],
}


def variant_config(preset: str, variant: str, extra: list[str]) -> Config:
    return apply_overrides(get_preset(preset), [*PAPER_SETTINGS, *VARIANTS[variant], *extra])


@dataclass
class AtBudgets:
    """Trainer hook: at each budget, ``measure(model, step)`` and a row of results."""

    budgets: list[int]
    measure: Callable[[CocoGAN, int], dict]
    recalibrate: bool = True  # EMA norms of its own weights first, as checkpoints have them
    rows: list[dict] = field(default_factory=list)
    every: int = 1  # looked at every step; measures only at the budgets

    def __call__(self, trainer: Trainer) -> None:
        step = trainer.state.step
        if step in self.budgets:
            if self.recalibrate:
                trainer.refresh_ema()
            row = {"steps": step, "seconds": round(trainer.elapsed(), 1),
                   **self.measure(trainer.model, step)}
            self.rows.append(row)
            trainer.notify(json.dumps(row))


def train_variant(config: Config, run_dir: Path, data: str, budgets: list[int], seed: int,
                  threads: int, measure: Callable[[CocoGAN, int], dict], recalibrate: bool
                  ) -> tuple[list[dict], CocoGAN]:
    """Train to max(budgets) into the run directory ``run_dir`` with the Trainer (as `cocogan
    train` does: one seeded batch stream, EMA, metrics.jsonl, checkpoints), calling
    ``measure(model, step)`` at each budget."""
    config = copy.deepcopy(config)
    config.optim.steps = config.run.checkpoint_every = max(budgets)
    config.data.source = data
    spec = RunSpec(seed=seed, device="cpu", threads=threads)
    dataset, _ = prepare_new_run(run_dir, config.validate(), spec)
    trainer = new_trainer(run_dir, config, spec, dataset)
    hook = AtBudgets(budgets, measure, recalibrate)
    trainer.hooks.append(hook)
    trainer.fit()
    return hook.rows, trainer.model


def step_costs(preset: str, variants: list[str], steps: int, extra: list[str]) -> dict[str, float]:
    """Seconds per training step of each variant, timed round-robin (one step of each in
    turn, after a warm-up step) so a shared machine's load falls on all of them alike."""
    states = []
    for variant in variants:
        config = variant_config(preset, variant, extra)
        model = CocoGAN(config.model)
        images = torch.rand(config.optim.batch, 3, config.model.full_height,
                            config.model.full_width) * 2 - 1
        states.append((model, build_optimizers(model, config), images, config,
                       torch.Generator().manual_seed(0)))
    totals = [0.0] * len(variants)
    for repeat in range(steps + 1):
        for index, (model, optimizers, images, train, rng) in enumerate(states):
            start = time.perf_counter()
            train_step(model, optimizers, images, train, rng)
            if repeat:  # the first round warms up
                totals[index] += time.perf_counter() - start
    return {v: t / steps for v, t in zip(variants, totals, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", default="builtin:blobs")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--budgets", default="300,1000")
    parser.add_argument("--set", action="append", default=[], help="extra override, all variants")
    parser.add_argument("--n", type=int, default=500, help="images per side for the metrics")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("runs/seams-study"))
    parser.add_argument("--cost", type=int, metavar="STEPS",
                        help="only time STEPS training steps of each variant (round-robin) and "
                             "print seconds per step and the ratio to the first variant")
    parser.add_argument("--copied-bn-stats", action="store_true",
                        help="sample the EMA generator with the live G's BN statistics (as "
                             "before the EMA recalibration; for comparison with older tables)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    budgets = sorted(int(b) for b in args.budgets.split(","))
    variants = args.variants.split(",")
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; choose from {', '.join(VARIANTS)}")
    if args.cost:
        costs = step_costs(args.preset, variants, args.cost, args.set)
        first = next(iter(costs.values()))
        for variant, seconds in costs.items():
            print(f"{variant:<28}{seconds * 1000:8.1f} ms/step{seconds / first:8.2f}x")
        return 0
    name = args.data.removeprefix("builtin:")
    out = args.out / f"{name}-{args.preset}"
    out.mkdir(parents=True, exist_ok=True)

    base = get_preset(args.preset).model
    cyclic = base.coords == "cylindrical"
    metrics = ("swd", "seams", "spread", "repeat", "likeness") + (("wrap",) if cyclic else ())
    settings = EvalConfig(n=args.n, batch=64, seed=args.seed, swd_images=args.n,
                          seam_images=args.n)
    real = build_dataset(args.data, base.full_height, base.full_width, cylindrical=cyclic,
                         seed=1_000_003)  # held out: another seed than training
    config0 = variant_config(args.preset, "paper", args.set)
    reference = build_reference(metrics, real, CocoGAN(config0.model).coords, settings)
    train_set = BuiltinDataset(name, base.full_height, base.full_width, seed=args.seed)

    def real_sample(count: int, rng: torch.Generator) -> torch.Tensor:  # training images
        index = torch.randint(0, len(train_set), (count,), generator=rng)
        return torch.stack([train_set[int(i)] for i in index])

    floor = evaluate(reference, settings, sample=real_sample)
    results_path = out / "results.json"
    results = json.loads(results_path.read_text()) if results_path.is_file() else {}
    results["_real"] = {k: floor.values[k] for k in ("swd", "seams_real", "wrap_real")
                        if k in floor.values}
    results["_real"].update({m: floor.values[f"{m}_real"] for m in LAYOUT})
    print("real:", results["_real"], flush=True)

    for variant in variants:
        config = variant_config(args.preset, variant, args.set)

        def measure(model: CocoGAN, step: int, variant: str = variant) -> dict:
            values = evaluate(reference, settings, sample=cocogan_sampler(model)).values
            with evaluating(model.generator_ema):
                pictures = render_rect(model.generator_ema, model.coords,
                                       model.sample_z(16, torch.Generator().manual_seed(7)),
                                       trained_rect(model.coords))
            big = pictures.repeat_interleave(3, -1).repeat_interleave(3, -2)
            if cyclic:
                big = torch.cat([big[:8], big[:8]], dim=-1)  # 0-720 degrees
            save_png(out / f"{variant}-{step:05d}.png", image_grid(big, 2 if cyclic else 4))
            row = {"swd": values["swd"], "seams": values["seams"] / values["seams_real"],
                   "seams_raw": values["seams"], "spread": values["spread"] / values["spread_real"],
                   "repeat": values["repeat"], "likeness": values["likeness"]}
            if cyclic:
                row["wrap"] = values["wrap"] / values["wrap_real"]
            return row

        print(f"== {variant}: {VARIANTS[variant]}", flush=True)
        rows, model = train_variant(config, out / variant, args.data, budgets, args.seed,
                                    args.threads, measure, not args.copied_bn_stats)
        results[variant] = {"overrides": VARIANTS[variant], "rows": rows}
        save_model(out / f"{variant}.safetensors", config, model, budgets[-1])
        results_path.write_text(json.dumps(results, indent=2) + "\n")
    (out / "table.md").write_text(markdown_table(results, budgets, cyclic))
    compose_figure(out, [v for v in results if not v.startswith("_")], budgets, cyclic)
    print(markdown_table(results, budgets, cyclic))
    return 0


def compose_figure(out: Path, variants: list[str], budgets: list[int], cyclic: bool) -> Path:
    """figure.png: one row per variant, one column per budget, each cell the first row of that
    cell's samples (the first panorama, 0-720 degrees, for cylindrical runs), labelled."""
    from PIL import Image, ImageDraw

    def first_row(path: Path) -> Image.Image:
        grid = Image.open(path).convert("RGB")
        columns = 2 if cyclic else 4
        cell = (grid.width - 2) // columns  # image_grid(): 2-px gaps, 2-px border
        height = cell if not cyclic else (grid.height - 2) // 4
        width = cell if cyclic else grid.width
        return grid.crop((0, 0, width, height + 2))

    cells = {(v, b): out / f"{v}-{b:05d}.png" for v in variants for b in budgets}
    sample = next((first_row(p) for p in cells.values() if p.is_file()), None)
    if sample is None:
        raise FileNotFoundError(f"no sample pictures in {out}")
    label_w, head_h = 150, 18
    figure = Image.new("RGB", (label_w + len(budgets) * sample.width,
                               head_h + len(variants) * sample.height), "white")
    draw = ImageDraw.Draw(figure)
    for j, budget in enumerate(budgets):
        draw.text((label_w + j * sample.width + 4, 3), f"{budget} steps", fill="black")
    for i, variant in enumerate(variants):
        top = head_h + i * sample.height
        draw.text((4, top + sample.height // 2 - 6), variant, fill="black")
        for j, budget in enumerate(budgets):
            if cells[variant, budget].is_file():
                figure.paste(first_row(cells[variant, budget]), (label_w + j * sample.width, top))
    figure.save(out / "figure.png")
    return out / "figure.png"


def markdown_table(results: dict, budgets: list[int], cyclic: bool) -> str:
    nan = float("nan")
    figures = "seams / SWD / spread / repeat / likeness" + (" / wrap" if cyclic else "")
    head = "| variant | " + " | ".join(f"{b} steps: {figures}" for b in budgets) + " |"
    lines = [head, "|---" * (len(budgets) + 1) + "|"]
    for variant, entry in results.items():
        if variant.startswith("_"):
            continue
        cells = {row["steps"]: row for row in entry["rows"]}
        text = []
        for b in budgets:
            row = cells.get(b)
            if row is None:
                text.append("-")
                continue
            cell = (f"{row['seams']:.2f} / {row['swd']:.0f} / {row.get('spread', nan):.2f} / "
                    f"{row.get('repeat', nan):.2f} / {row.get('likeness', nan):.2f}")
            text.append(cell + (f" / {row['wrap']:.2f}" if cyclic else ""))
        lines.append(f"| {variant} | " + " | ".join(text) + " |")
    real = results.get("_real", {})
    lines.append(f"\nreal vs real SWD {real.get('swd', float('nan')):.0f}; "
                 f"real seam ratio {real.get('seams_real', float('nan')):.3f}")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
