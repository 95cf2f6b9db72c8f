"""Evaluation: glue between runs and the metrics of `cocogan.metrics`.

- `evaluate_run`: a checkpoint against real data (`cocogan eval`), written to RUN/eval.json.
- `EvalCallback` / `BestTracker` / `EvalHook`: metrics on a subset during training, logged
  with the losses, and the best checkpoint kept.
- `build_reference` / `evaluate`: the staged pipeline (real side once, generated side per call).
- `spatial_accuracy`: the COCO-GAN-specific check of D's spatial head on real macro patches.
Real-data FID statistics are cached on disk (see `cocogan.evaluation.cache`).
"""

from cocogan.evaluation.cache import stats_dir
from cocogan.evaluation.callback import (
    BestTracker,
    EvalCallback,
    EvalHook,
    best_score,
)
from cocogan.evaluation.pipeline import Evaluation, Reference, build_reference, evaluate
from cocogan.evaluation.run import EVAL_FILE, RunEvaluation, evaluate_run, format_table
from cocogan.evaluation.sampling import cocogan_sampler, generated_batches
from cocogan.evaluation.settings import TRAINING_EVAL, EvalConfig, parse_metrics
from cocogan.evaluation.spatial import SpatialResult, discriminator_predictor, spatial_accuracy

__all__ = [
    "EVAL_FILE",
    "TRAINING_EVAL",
    "BestTracker",
    "EvalCallback",
    "EvalConfig",
    "EvalHook",
    "Evaluation",
    "Reference",
    "RunEvaluation",
    "SpatialResult",
    "best_score",
    "build_reference",
    "cocogan_sampler",
    "discriminator_predictor",
    "evaluate",
    "evaluate_run",
    "format_table",
    "generated_batches",
    "parse_metrics",
    "spatial_accuracy",
    "stats_dir",
]
