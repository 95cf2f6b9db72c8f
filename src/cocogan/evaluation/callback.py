"""Evaluation during training (`--eval-every K`, the paper's Appendix F): metrics on a small
subset every K steps as `eval/<key>` floats, and the best checkpoint kept. The real side is
prepared when the callback is built (missing weights or bad data fail before step 0); fixed
latents make successive values comparable. `plot_indicators` draws them (`cocogan plot`).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cocogan.checkpoint import CHECKPOINT_DIR, save_model
from cocogan.config import Config
from cocogan.coords import coordinate_system
from cocogan.evaluation.pipeline import IMAGE_METRICS, build_reference, evaluate
from cocogan.evaluation.run import feature_extractor_for, real_data
from cocogan.evaluation.sampling import cocogan_sampler
from cocogan.evaluation.settings import TRAINING_EVAL, EvalConfig, parse_metrics
from cocogan.evaluation.spatial import discriminator_predictor
from cocogan.metrics import FeatureExtractor
from cocogan.model import CocoGAN
from cocogan.outputs import atomic_write
from cocogan.plotting import plot_metrics, read_jsonl

PREFIX = "eval/"
INDICATOR_FILE = "training-indicators.png"


def best_score(metric: str, values: dict[str, float]) -> float | None:
    """What decides "best" for `metric` (smaller wins; None if missing): fid, kid, swd as they
    are, the image metrics' distance to the real figure, minus spatial, precision, recall."""
    get = values.get
    if metric in IMAGE_METRICS:
        gen, real = get(f"{PREFIX}{metric}"), get(f"{PREFIX}{metric}_real")
        score = None if gen is None or real is None else abs(gen - real)
    elif metric in ("spatial", "precision", "recall"):  # higher is better
        acc = (get(f"{PREFIX}spatial_acc", get(f"{PREFIX}spatial_row_acc"))
               if metric == "spatial" else get(f"{PREFIX}{metric}"))
        score = None if acc is None else -acc
    else:  # fid, kid, swd: lower is better
        score = get(f"{PREFIX}{metric}")
    return None if score is None or not math.isfinite(score) else float(score)


@dataclass
class BestTracker:
    """Remembers the best score seen for one metric; `update` says when to save "best"."""

    metric: str  # metric name, e.g. "swd"
    score: float | None = None  # best `best_score` so far (smaller is better)
    step: int | None = None  # training step where it was reached

    def update(self, values: dict[str, float], step: int) -> bool:
        """True when `values` improves on the best so far (then a checkpoint is saved)."""
        score = best_score(self.metric, values)
        if score is None or (self.score is not None and score >= self.score):
            return False
        self.score, self.step = score, step
        return True

    def state_dict(self) -> dict[str, Any]:
        """For best.json, so a resumed run does not overwrite a better checkpoint."""
        return {"metric": self.metric, "score": self.score, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("metric") == self.metric:
            self.score, self.step = state.get("score"), state.get("step")


class EvalCallback:
    """`callback(model, config, step) -> {"eval/swd": ..., ...}` on a subset of `real` (prepared
    as `config` says); the first of `metrics` decides the best checkpoint; `device` runs
    Inception (G runs on the model's); `raw` evaluates the raw generator instead of the EMA."""

    def __init__(self, config: Config, real: str, metrics: str | list[str], *, every: int,
                 settings: EvalConfig = TRAINING_EVAL, device: str | torch.device = "cpu",
                 inception_weights: str | None = None,
                 feature_extractor: FeatureExtractor | None = None, raw: bool = False) -> None:
        if every <= 0:
            raise ValueError(f"--eval-every must be a positive number of steps, got {every}")
        self.metrics = parse_metrics(metrics)
        self.every, self.raw = every, raw
        self.settings = settings.validate()
        self.best = BestTracker(self.metrics[0])
        self.extractor = feature_extractor_for(self.metrics, torch.device(device), settings.batch,
                                               inception_weights, feature_extractor)
        dataset, fingerprint = real_data(real, config)
        self.reference = build_reference(self.metrics, dataset, coordinate_system(config.model),
                                         settings, extractor=self.extractor,
                                         fingerprint=fingerprint)

    def __call__(self, model: CocoGAN, config: Config, step: int) -> dict[str, float]:
        """Metric values as `eval/<key>` floats; undefined (NaN) values are dropped."""
        assert coordinate_system(config.model) == self.reference.coords, \
            f"eval callback built for {self.reference.coords}, step {step} has another geometry"
        result = evaluate(self.reference, self.settings,
                          sample=cocogan_sampler(model, raw=self.raw),
                          predictor=discriminator_predictor(model.discriminator),
                          extractor=self.extractor)
        return {f"{PREFIX}{k}": float(v) for k, v in result.values.items() if math.isfinite(v)}


BEST_WEIGHTS = "best.safetensors"  # in RUN/checkpoints/, beside step-*.safetensors (not pruned)
BEST_STATE = "best.json"  # the BestTracker state, so a resumed run keeps its best


class EvalHook:
    """The training loop's hook (here, so training never imports evaluation): evaluate, log to
    metrics.jsonl and TensorBoard; when the first metric improves write RUN/checkpoints/
    best.safetensors and best.json (loaded again on resume)."""

    def __init__(self, callback: EvalCallback, run_dir: str | Path) -> None:
        self.callback = callback
        self.every = callback.every
        self.folder = Path(run_dir) / CHECKPOINT_DIR
        state = self.folder / BEST_STATE
        if state.is_file():
            callback.best.load_state_dict(json.loads(state.read_text()))

    def __call__(self, trainer: Any) -> None:
        """`trainer`: a `cocogan.training.loop.Trainer` (model, config, state.step, log, notify)."""
        step = trainer.state.step
        trainer.refresh_ema()  # the EMA generator's own BN statistics, as checkpoints hold
        values = self.callback(trainer.model, trainer.config, step)
        with Path(trainer.log.path).open("a") as handle:  # same file as the loss records
            handle.write(json.dumps({"step": step, **values}) + "\n")
        if trainer.log.writer is not None:
            for key, value in values.items():
                trainer.log.writer.add_scalar(key, value, step)
        shown = "  ".join(
            f"{k[len(PREFIX):]} {v:.4g}" + (f" (real {values[k + '_real']:.4g})"
                                            if k + "_real" in values else "")
            for k, v in values.items()
            if not k.startswith((f"{PREFIX}swd_", f"{PREFIX}seams_")) and not k.endswith("_real"))
        trainer.notify(f"eval at step {step}: {shown}")
        if self.callback.best.update(values, step):
            save_model(self.folder / BEST_WEIGHTS, trainer.config, trainer.model, step)
            text = json.dumps(self.callback.best.state_dict()) + "\n"
            atomic_write(self.folder / BEST_STATE, lambda tmp: tmp.write_text(text))


def indicator_keys(records: list[dict[str, Any]]) -> list[str]:
    """The paper's training indicators (Appendix F): L_W first (if logged), then every evaluated
    metric in first-logged order, each metric's real figure right after it; per-level SWD,
    per-border seams and KID's std stay in metrics.jsonl and TensorBoard."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    evals = [k for k in keys if k.startswith(PREFIX) and not (
        k[len(PREFIX):].startswith(("swd_", "seams_x", "seams_y")) or k.endswith("_std"))]
    ordered = [k for k in evals if not k.endswith("_real")]
    for real in (k for k in evals if k.endswith("_real")):
        metric = real.removesuffix("_real")
        ordered.insert(ordered.index(metric) + 1 if metric in ordered else len(ordered), real)
    return (["L_W"] if "L_W" in keys else []) + ordered


def plot_indicators(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Draw the indicators of a metrics.jsonl into `out_png` (`plotting.plot_metrics`):
    FileNotFoundError without metrics.jsonl, ValueError when it holds neither L_W nor eval/."""
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: train first (cocogan train) or pass a run directory")
    keys = indicator_keys([r for r in read_jsonl(path) if "step" in r])
    if not keys:
        raise ValueError(f"{path} has no L_W and no eval/ metrics to plot")
    return plot_metrics(path, Path(out_png), keys=keys)
