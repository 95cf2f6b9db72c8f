"""Recipe study: image quality per CPU-minute for variants of a training recipe.

Every variant (an override list of the preset, ``NAME=--set key=value ...``) is trained by the
one `cocogan.training.Trainer` (as `cocogan train` does: seeded batch stream, EMA, checkpoints)
from the same seed for the same budget of training time, and evaluated at fixed points of that
budget against the held-out split of the data (`DIR::holdout`, never trained on) with the
`cocogan eval` pipeline: FID, KID, precision and recall on Inception pool3 features by default.
Evaluation time is not counted in the budget. Beside them, the real-vs-real floor: as many
training images (`DIR::train`) against the same held-out ones. The full-image baseline
(`model.family=baseline`) is one variant, so both models share the axes of one figure.

    python -m benchmarks.recipe_study --data ../shared/data/emoji-noto-64 --minutes 30 \
        --points 5 --out /tmp/recipe-study
    python -m benchmarks.recipe_study --data ../shared/data/emoji-noto-64 --minutes 30 \
        --variant tiny --variant "wide48=--set model.ngf=48 model.ndf=48" --out /tmp/recipe-study

Budgets are CPU-minutes: wall-clock training seconds times --threads (default 1). Each
session's measured matmul rate is recorded, so figures from other machines can be scaled.
Writes OUT/NAME/ (the variant's run directory), OUT/NAME.json (its evaluations), OUT/results.json,
OUT/table.md and OUT/curves.png (every metric against CPU-minutes, one line per variant, the
real floor dotted). Run again with the same --out to continue: a variant whose run folder
exists resumes from its newest checkpoint (exact resume) up to the current --minutes; delete
the folder and OUT/NAME.json to retrain it. A variant whose options this version lacks (a
ConfigError) is skipped with one line.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import matmul_flops_per_second
from benchmarks.quality_baseline import baseline_sampler
from benchmarks.real_quality import real_sampler
from cocogan.checkpoint import resumable_steps
from cocogan.config import Config, ConfigError, apply_overrides
from cocogan.coords import coordinate_system
from cocogan.data import build_dataset, dataset_fingerprint
from cocogan.evaluation import EvalConfig, build_reference, cocogan_sampler, evaluate
from cocogan.evaluation.run import feature_extractor_for
from cocogan.outputs import first_line
from cocogan.presets import get_preset
from cocogan.training import (
    RunSpec,
    Trainer,
    TrainingDiverged,
    new_trainer,
    prepare_new_run,
    resume_trainer,
)
from cocogan.training.signals import StopFlag

# Today's emoji32 recipe (docs/evaluation.md): the tiny preset with a 10 kimg EMA half-life.
BASE = ["optim.ema_kimg=10", "run.sample_every=500", "run.checkpoint_every=500"]
DEFAULT_VARIANTS: dict[str, list[str]] = {
    "tiny": [],
    "baseline": ["model.family=baseline"],
    "wide32": ["model.ngf=32", "model.ndf=32"],
    "lr1e-3": ["optim.lr_g=1e-3", "optim.lr_d=1e-3"],
    "lr2.5e-4": ["optim.lr_g=2.5e-4", "optim.lr_d=2.5e-4"],
    "batch32": ["optim.batch=32"],
    "ema3": ["optim.ema_kimg=3"],
    "ema30": ["optim.ema_kimg=30"],
    "gp4": ["loss.gp_every=4"],  # lazy gradient penalty (the option of issue 25)
    "augment": ["loss.augment=color,cutout"],  # pixel-preserving augmentation (issue 25)
}
METRICS = "fid,kid,precision,recall"
MAX_STEPS = 10_000_000  # the budget stops training, not the step count
HOLDOUT_SEED = 1_000_003  # built-in data: "held out" images are drawn with another seed


def parse_variant(text: str) -> tuple[str, list[str] | None]:
    """'wide=--set model.ngf=32 model.ndf=32' -> ('wide', [...]); 'tiny' -> ('tiny', None): a
    default variant by name."""
    name, sep, rest = text.partition("=")
    if not name or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise ValueError(f"--variant {text!r}: start with a NAME (letters, digits, - . _)")
    if not sep:
        if name not in DEFAULT_VARIANTS:
            raise ValueError(f"--variant {name}: no such default ({', '.join(DEFAULT_VARIANTS)});"
                             " give its options as NAME=--set key=value ...")
        return name, None
    overrides = [t for t in shlex.split(rest) if t != "--set"]
    bad = [t for t in overrides if "=" not in t]
    if bad:
        raise ValueError(f"--variant {name}: expected --set key=value ..., got {bad[0]!r}")
    return name, overrides


def split_sources(data: str, seed: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """build_dataset arguments of the training and the held-out images."""
    if data.startswith("builtin:"):
        return {"source": data, "seed": seed}, {"source": data, "seed": HOLDOUT_SEED}
    return {"source": f"{data}::train"}, {"source": f"{data}::holdout"}


@dataclass
class AtMinutes:
    """Trainer hook: evaluate when the training seconds (evaluations excluded) pass each mark;
    request a stop once they reach the budget."""

    marks: list[float]  # training seconds, ascending; the last is the budget
    measure: Callable[[Trainer], dict[str, float]]
    record: dict[str, Any]  # the variant's record: its "rows" grow here
    save: Callable[[], None]
    stop: StopFlag
    threads: int
    every: int = 1

    def training_seconds(self, trainer: Trainer) -> float:
        return trainer.elapsed() - sum(row["eval_s"] for row in self.record["rows"])

    def __call__(self, trainer: Trainer) -> None:
        seconds = self.training_seconds(trainer)
        last = self.record["rows"][-1]["train_s"] if self.record["rows"] else -1.0
        pending = [m for m in self.marks if m > last]
        if pending and seconds >= pending[0]:
            start = trainer.elapsed()  # the same clock as the budget's
            trainer.refresh_ema()
            values = self.measure(trainer)
            row = {"step": trainer.state.step, "train_s": round(seconds, 2),
                   "cpu_minutes": round(seconds * self.threads / 60, 3), **values,
                   "eval_s": round(trainer.elapsed() - start, 3)}
            self.record["rows"].append(row)
            self.save()
            trainer.notify(json.dumps(row))
        if seconds >= self.marks[-1]:
            self.stop.request("budget")


def run_variant(name: str, config: Config, args: argparse.Namespace, train_source: dict,
                measure: Callable[[Trainer], dict[str, float]]) -> dict[str, Any]:
    """Train (or resume) one variant until its budget; returns its record."""
    run_dir, record_file = args.out / name, args.out / f"{name}.json"
    if run_dir.is_dir() and (run_dir / "run.yaml").is_file() and not resumable_steps(run_dir):
        shutil.rmtree(run_dir)  # stopped before its first checkpoint: nothing to resume
    resuming = bool(resumable_steps(run_dir))
    record = json.loads(record_file.read_text()) if resuming and record_file.is_file() else \
        {"overrides": [], "rows": [], "sessions": []}
    budget = args.minutes * 60 / args.threads
    if record["rows"] and record["rows"][-1]["train_s"] >= budget:
        return record  # done at this budget
    if resuming:
        trainer, _ = resume_trainer(run_dir)
        record["rows"] = [r for r in record["rows"] if r["step"] <= trainer.state.step]
    else:
        config.data.source = train_source["source"]
        spec = RunSpec(seed=args.seed, device="cpu", threads=args.threads)
        dataset, _ = prepare_new_run(run_dir, config.validate(), spec)
        trainer = new_trainer(run_dir, config, spec, dataset)
    gflops = matmul_flops_per_second(torch.device("cpu"), size=args.matmul_size) / 1e9
    record["sessions"].append({"from_step": trainer.state.step, "threads": args.threads,
                               "matmul_gflops": round(gflops, 1)})

    def save() -> None:
        record_file.write_text(json.dumps(record, indent=2) + "\n")

    stop = StopFlag()
    marks = [budget * (i + 1) / args.points for i in range(args.points)]
    trainer.hooks.append(AtMinutes(marks, measure, record, save, stop, args.threads))
    with stop:
        trainer.fit(stop=stop)
    save()
    if stop.signal_name not in (None, "budget"):  # Ctrl-C: checkpointed; the study stops
        raise SystemExit(f"stopped by {stop.signal_name}: run the same command to resume")
    return record


def plot_curves(results: dict[str, Any], metrics: list[str], out: Path) -> Path:
    """One panel per metric against CPU-minutes: a line per variant (the baseline dashed), the
    real-vs-real floor dotted."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    keys = [m for m in metrics if m in results["real"]]
    figure = Figure(figsize=(4.2 * max(1, len(keys)), 3.6), layout="constrained")
    axes = figure.subplots(1, max(1, len(keys)), squeeze=False)[0]
    for axis, key in zip(axes, keys, strict=False):
        for name, record in results["variants"].items():
            rows = record.get("rows", [])
            if rows:
                style = "--" if "model.family=baseline" in record["overrides"] else "-"
                axis.plot([r["cpu_minutes"] for r in rows], [r.get(key) for r in rows], style,
                          marker="o", markersize=3, label=name)
        axis.axhline(results["real"][key], color="grey", linestyle=":", label="real vs real")
        axis.set_xlabel("training CPU-minutes")
        axis.set_title(key)
    axes[0].legend(fontsize=7)
    FigureCanvasAgg(figure).print_png(str(out))
    return out


def markdown_table(results: dict[str, Any], metrics: list[str]) -> str:
    """Each variant's last evaluation (and its best FID when FID is measured)."""
    head = ["variant", "overrides", "steps", "CPU-min", *metrics]
    lines = ["| " + " | ".join(head) + " |", "|---" * len(head) + "|"]
    for name, record in results["variants"].items():
        if "skipped" in record:
            lines.append(f"| {name} | skipped: {record['skipped']} |" + " |" * (len(head) - 2))
            continue
        last = record["rows"][-1] if record["rows"] else {}
        cells = [f"{last.get(m, float('nan')):.4g}" for m in metrics]
        lines.append(f"| {name} | `{' '.join(record['overrides']) or '-'}` | "
                     f"{last.get('step', '-')} | {last.get('cpu_minutes', '-')} | "
                     + " | ".join(cells) + " |")
    real = results["real"]
    lines.append("| real train vs held-out | | | | "
                 + " | ".join(f"{real.get(m, float('nan')):.4g}" for m in metrics) + " |")
    return "\n".join(lines) + "\n"


def plot_saved(out: Path, names: list[str], metrics: list[str]) -> int:
    """table.md and curves.png of the variants whose NAME.json is in ``out`` (no training)."""
    if not (out / "results.json").is_file():
        raise SystemExit(f"--plot-only: no {out / 'results.json'}; run the study (or "
                         "--floor-only) with this --out first")
    results = json.loads((out / "results.json").read_text())
    results.setdefault("variants", {}).update(
        {name: json.loads((out / f"{name}.json").read_text()) for name in names
         if (out / f"{name}.json").is_file()})
    (out / "table.md").write_text(markdown_table(results, metrics))
    plot_curves(results, metrics, out / "curves.png")
    print(markdown_table(results, metrics))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="../shared/data/emoji-noto-64",
                        help="an image folder (split into ::train / ::holdout) or builtin:NAME")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="override for every variant (after the recipe's own)")
    parser.add_argument("--variant", action="append", default=[], metavar="NAME[=--set K=V ...]",
                        help=f"repeatable; default all of {', '.join(DEFAULT_VARIANTS)}")
    parser.add_argument("--minutes", type=float, default=30.0, help="CPU-minutes per variant")
    parser.add_argument("--points", type=int, default=5, help="evaluations per budget")
    parser.add_argument("--metrics", default=METRICS)
    parser.add_argument("--n", type=int, default=1000, help="images per side (capped by holdout)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--matmul-size", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("runs/recipe-study"))
    parser.add_argument("--floor-only", action="store_true",
                        help="measure the real-vs-real floor only (no training)")
    parser.add_argument("--plot-only", action="store_true",
                        help="redraw table.md and curves.png from the saved evaluations (a "
                             "study stopped by Ctrl-C, or one session of it)")
    args = parser.parse_args(argv)
    try:
        chosen = [parse_variant(v) for v in args.variant] or \
            [(n, None) for n in DEFAULT_VARIANTS]
    except ValueError as error:
        parser.error(str(error))
    if args.minutes <= 0 or args.points <= 0:
        parser.error("--minutes and --points must be positive")
    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    metrics = [m for m in args.metrics.split(",") if m]
    if args.plot_only:
        return plot_saved(args.out, [name for name, _ in chosen], metrics)
    base = get_preset(args.preset)
    m = base.model
    train_source, held_source = split_sources(args.data, args.seed)
    held = build_dataset(**held_source, height=m.full_height, width=m.full_width)
    count = min(args.n, len(held))  # type: ignore[arg-type]
    cfg = EvalConfig(n=count, batch=64, seed=0, kid_subset_size=min(1000, count),
                     swd_images=count, seam_images=count)
    extractor = feature_extractor_for(tuple(metrics), torch.device("cpu"), 64, None, None)
    fingerprint = None if args.data.startswith("builtin:") else dataset_fingerprint(
        held_source["source"], m.full_height, m.full_width, base.data.celeba_crop)
    reference = build_reference(tuple(metrics), held, coordinate_system(m), cfg,
                                extractor=extractor, fingerprint=fingerprint)

    def values(sample: Callable) -> dict[str, float]:
        result = evaluate(reference, cfg, sample=sample, extractor=extractor).values
        return {k: v for k, v in result.items() if k in metrics or k == "kid_std"}

    results_file = args.out / "results.json"
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    if results.get("n") != count or not set(metrics) <= set(results.get("real", {})):
        train_images = build_dataset(**train_source, height=m.full_height, width=m.full_width)
        results["real"] = values(real_sampler(train_images, count))
    results.update({"data": args.data, "preset": args.preset, "n": count, "seed": args.seed,
                    "minutes": args.minutes, "threads": args.threads})
    results.setdefault("variants", {})
    print(f"real train vs held-out ({count} images per side): {results['real']}", flush=True)
    results_file.write_text(json.dumps(results, indent=2) + "\n")  # kept if a variant is stopped
    if args.floor_only:
        return 0

    for name, given in chosen:
        overrides = DEFAULT_VARIANTS[name] if given is None else given
        try:
            config = apply_overrides(copy.deepcopy(base), [*BASE, *args.set, *overrides])
            config.optim.steps = MAX_STEPS
            config.validate()
        except ConfigError as error:
            print(f"== {name}: skipped ({error})", flush=True)
            reason = str(error).split(";")[0]  # not the list of allowed keys
            results["variants"][name] = {"overrides": overrides, "skipped": reason}
            continue
        print(f"== {name}: {' '.join(overrides) or '(the recipe as it is)'}", flush=True)

        def measure(trainer: Trainer) -> dict[str, float]:
            model = trainer.model
            baseline = trainer.config.model.family == "baseline"
            return values(baseline_sampler(model) if baseline else cocogan_sampler(model))

        try:
            record = run_variant(name, config, args, train_source, measure)
        except TrainingDiverged as error:  # a recipe that diverges is a result, not a crash
            print(f"== {name}: diverged ({error})", flush=True)
            saved = args.out / f"{name}.json"
            record = json.loads(saved.read_text()) if saved.is_file() else {"rows": []}
            record["skipped"] = f"diverged: {first_line(error)}"
        record["overrides"] = overrides
        results["variants"][name] = record
        results_file.write_text(json.dumps(results, indent=2) + "\n")
    results_file.write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "table.md").write_text(markdown_table(results, metrics))
    plot_curves(results, metrics, args.out / "curves.png")
    print(markdown_table(results, metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
