"""Evaluation: runs and generators against real data with `cocogan.metrics` — `evaluate_run`
(`cocogan eval`), `EvalHook` (during training, keeping the best checkpoint), and the staged
pipeline `build_reference` (the real side, once; cached on disk) / `evaluate`.
"""

from cocogan.evaluation.callback import BestTracker, EvalCallback, EvalHook
from cocogan.evaluation.pipeline import build_reference, evaluate
from cocogan.evaluation.run import evaluate_run, format_table
from cocogan.evaluation.sampling import cocogan_sampler, generated_batches
from cocogan.evaluation.settings import TRAINING_EVAL, EvalConfig, parse_metrics
from cocogan.evaluation.spatial import discriminator_predictor, spatial_accuracy

__all__ = [
    "TRAINING_EVAL", "BestTracker", "EvalCallback", "EvalConfig", "EvalHook", "build_reference",
    "cocogan_sampler", "discriminator_predictor", "evaluate", "evaluate_run", "format_table",
    "generated_batches", "parse_metrics", "spatial_accuracy",
]
