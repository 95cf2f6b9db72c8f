"""`evaluate_run`: a trained run's checkpoint against real data, the numbers written to
`RUN/eval.json` and printed as a table. The Python face of `cocogan eval`.
"""

from __future__ import annotations

import json
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from cocogan import shipped
from cocogan.budget import format_seconds
from cocogan.checkpoint import load_model, resolve_checkpoint
from cocogan.config import Config
from cocogan.data import build_dataset, dataset_fingerprint
from cocogan.evaluation.pipeline import build_reference, evaluate, load_real_features, reference_key
from cocogan.evaluation.sampling import Sampler, cocogan_sampler
from cocogan.evaluation.settings import FEATURE_METRICS, EvalConfig, parse_metrics
from cocogan.evaluation.spatial import discriminator_predictor
from cocogan.metrics import FeatureExtractor, InceptionFeatures
from cocogan.outputs import OutputError, atomic_write, is_ours, read_json_object
from cocogan.training.device import select_device
from cocogan.version import __version__

EVAL_FILE = "eval.json"
MIN_REAL_IMAGES = 50  # below this, `cocogan eval` warns that its figures are unreliable
PROBE_IMAGES = 4  # images generated and featurised once to time the evaluation up front


def feature_extractor_for(metrics: tuple[str, ...], device: torch.device, batch: int,
                          weights: str | Path | None,
                          given: FeatureExtractor | None) -> FeatureExtractor | None:
    """The given extractor, else Inception when fid/kid are asked for (MissingWeightsError at
    once, before any model or data is loaded, when its weights are not on disk)."""
    wanted = given is None and any(m in FEATURE_METRICS for m in metrics)
    return InceptionFeatures(weights, device=device, batch_size=batch) if wanted else given


def real_data(real: str, config: Config, fingerprint: bool = True
              ) -> tuple[Dataset[torch.Tensor], str | None]:
    """The real images prepared as the run's were (size, cylinder, CelebA crop, resize filter),
    and their fingerprint for the statistics cache (None when not asked for)."""
    m, data = config.model, config.data
    kw = {"cylindrical": m.coords == "cylindrical", "resample": data.resample}
    dataset = build_dataset(real, m.full_height, m.full_width, celeba_crop=data.celeba_crop, **kw)
    return dataset, (dataset_fingerprint(real, m.full_height, m.full_width, data.celeba_crop, **kw)
                     if fingerprint else None)


@dataclass
class RunEvaluation:
    """What `cocogan eval` reports and writes."""

    values: dict[str, float]
    record: dict[str, Any]  # the content of eval.json
    path: Path | None  # where eval.json was (or, with write=False, is to be) written


def eval_json_path(run: str | Path) -> Path | None:
    """Where eval.json goes (None for a weights file), checked by the write rule before any
    work: beside a run's checkpoints, or ./generated/NAME for a shipped model (never into the
    package's folder); an eval.json there that cocogan did not write is never replaced."""
    local = shipped.output_folder(run)
    folder = local or Path(run)
    if local is None and not folder.is_dir():
        return None
    path = folder / EVAL_FILE
    ours = {"metrics", "requested", "version"} <= (read_json_object(path) or {}).keys()
    if path.exists() and not is_ours(folder) and not ours:  # eval.json's keys: cocogan wrote it
        raise OutputError(f"{path} exists and cocogan did not write it: move it away, or "
                          "evaluate a copy of the run (nothing was overwritten)")
    return path


def write_evaluation(evaluation: RunEvaluation) -> None:
    """Write eval.json (atomic); after the figures are shown, so a failed write loses none."""
    if evaluation.path is not None:
        evaluation.path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(_finite(evaluation.record), indent=2) + "\n"
        atomic_write(evaluation.path, lambda tmp: tmp.write_text(text))


def evaluate_run(run: str | Path, real: str, metrics: str | list[str] | tuple[str, ...], *,
                 checkpoint: str | Path | None = None, cfg: EvalConfig | None = None,
                 device: str = "auto", inception_weights: str | Path | None = None,
                 raw: bool = False, feature_extractor: FeatureExtractor | None = None,
                 use_cache: bool = True, write: bool = True,
                 report: Callable[[str], None] | None = None,
                 backend: str = "torch") -> RunEvaluation:
    """Evaluate a run's newest checkpoint (or `checkpoint`) against `real` (folder or
    builtin:NAME, prepared as the run's data) on `metrics` (e.g. "fid,swd,seams"). `write=False`:
    the caller shows the figures, then calls `write_evaluation`; `report` (the CLI) is told the
    time estimate before any work, and bars are shown; `backend` runs G (`cocogan.apps.backend`)."""
    start = time.perf_counter()
    names = parse_metrics(metrics)
    cfg = (cfg or EvalConfig()).validate()
    dev = select_device(device)
    path = eval_json_path(run)
    extractor = feature_extractor_for(names, dev, cfg.batch, inception_weights, feature_extractor)
    file = resolve_checkpoint(checkpoint if checkpoint is not None else run)
    config, model, step = load_model(file, dev)
    dataset, fingerprint = real_data(real, config, fingerprint=use_cache)
    count = len(dataset)  # type: ignore[arg-type]
    if count < MIN_REAL_IMAGES:
        warnings.warn(f"{real} has only {count} image(s): figures from fewer than "
                      f"{MIN_REAL_IMAGES} real images are unreliable (FID and KID need "
                      "thousands; seams and SWD of one image may be nan)", stacklevel=2)
    sample = cocogan_sampler(model, raw=raw, backend=backend)
    notes: list[str] = []
    if not getattr(extractor, "standard", True):  # only the TTUR weights give comparable FIDs
        where = getattr(extractor, "weights_path", None) or "a network given in code"
        notes.append(f"NON-STANDARD Inception weights ({where}, SHA-256 "
                     f"{getattr(extractor, 'sha256', '?')[:16]}...): these FID/KID figures are "
                     "not comparable with published ones; use the standard weights "
                     "(scripts/setup.sh) for any figure you report")
        warnings.warn(notes[0], stacklevel=2)
    if report is not None:
        report(estimate_line(names, cfg, sample, extractor, dataset, fingerprint))
    ref = build_reference(names, dataset, model.coords, cfg, extractor=extractor,
                          fingerprint=fingerprint, progress=report is not None)
    result = evaluate(ref, cfg, sample=sample,
                      predictor=discriminator_predictor(model.discriminator),
                      extractor=extractor, progress=report is not None)
    record = {
        "metrics": result.values, "requested": list(names),
        "n": {"generated": result.generated, "real": result.real},
        "checkpoint": str(file), "step": step, "real": real, "preset": config.name,
        "resample": config.data.resample,
        "generator": "raw" if raw else "ema", "seed": cfg.seed, "device": str(dev),
        "feature_extractor": extractor.name if extractor is not None else None,
        "inception_weights": getattr(extractor, "describe_weights", lambda: None)(),
        "warnings": notes,
        "real_stats_cached": ref.cache_hit, "seconds": round(time.perf_counter() - start, 2),
        "version": __version__,
    }
    evaluation = RunEvaluation(values=result.values, record=record, path=path)
    if write:
        write_evaluation(evaluation)
    return evaluation


def estimate_line(names: tuple[str, ...], cfg: EvalConfig, sample: Sampler,
                  extractor: FeatureExtractor | None, dataset: Any, fingerprint: str | None) -> str:
    """'fid on 50000 generated images (...) and 50000 real images: ~2 h on this device', from
    generating and featurising a timed probe (which pays the warm-up: an upper estimate)."""
    features = any(m in FEATURE_METRICS for m in names)
    generated = cfg.n if features else min(cfg.n, max(cfg.swd_images, cfg.seam_images))
    key = reference_key(dataset, cfg, extractor, fingerprint) if features else None
    cached = key is not None and load_real_features(key) is not None
    real = 0 if cached or not features else min(cfg.n, len(dataset))
    start = time.perf_counter()
    images = sample(PROBE_IMAGES, torch.Generator().manual_seed(0)).float().cpu()
    per_gen, per_feat = (time.perf_counter() - start) / PROBE_IMAGES, 0.0
    if features and extractor is not None:
        start = time.perf_counter()
        extractor(images)
        per_feat = (time.perf_counter() - start) / PROBE_IMAGES
    seconds = generated * (per_gen + per_feat) + real * per_feat
    side = (" and cached real statistics" if cached else f" and {real} real images") \
        if features else ""
    default = " (50,000 as in the paper; --n sets fewer)" if features and cfg.n == 50_000 else ""
    return (f"{','.join(names)} on {generated} generated images{default}{side}: "
            f"~{format_seconds(seconds)} on this device")


def _finite(value: Any) -> Any:
    """JSON has no NaN: non-finite floats become null (e.g. seams of a flat image set)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


# A metric's table row is (label, its key, its "_real" key), "-" where a key has no value;
# spatial has rows of real-side figures only: the grid's pair, or the cylinder's row pair.
_LABELS = {"precision": "precision (k=3)", "recall": "recall (k=3)", "swd": "swd (x1e3)",
           "spread": "content spread", "repeat": "repeat at micro width",
           "likeness": "layout likeness", "colour": "colour (x1e3, halves)"}
_SPATIAL_ROWS = (("spatial accuracy", "spatial_acc"), ("spatial error (grid units)", "spatial_err"),
                 ("spatial row accuracy", "spatial_row_acc"),
                 ("spatial row error (grid units)", "spatial_row_err"))


def format_table(evaluation: RunEvaluation) -> str:
    """Plain-text table: metric, generated value, real-image value, image counts."""
    values, counts = evaluation.values, evaluation.record["n"]
    lines: list[tuple[str, ...]] = [("metric", "generated", "real", "n gen", "n real")]
    for name in evaluation.record["requested"]:
        rows: list[tuple[str, str | None, str | None]] = [
            (_LABELS.get(name, name), name, f"{name}_real")]
        if name == "spatial":
            rows = [(label, None, key) for label, key in _SPATIAL_ROWS if key in values]
        if name == "swd":
            rows += [(f"  swd level {k[4:]}px", k, None) for k in values if k.startswith("swd_")]
        if name == "seams":
            rows += [("  on object pixels", "seams_object", "seams_object_real")]
            rows += [(f"  border {k[6]}={k[7:]} px "  # seams_x16: the vertical line at x=16
                      f"({'vertical' if k[6] == 'x' else 'horizontal'} line)", k, f"{k}_real")
                     for k in values if k[:7] in ("seams_x", "seams_y") and not k.endswith("_real")]
        for label, gen_key, real_key in rows:
            gen = _fmt(values, gen_key)
            if name == "kid" and gen_key == "kid":
                gen = f"{values['kid']:.5f} ± {values['kid_std']:.5f}"
            lines.append((label, gen, _fmt(values, real_key),
                          str(counts["generated"].get(name, "-")),
                          str(counts["real"].get(name, "-"))))
    widths = [max(len(row[i]) for row in lines) for i in range(len(lines[0]))]
    text = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
            for row in lines]
    text.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(text)


def _fmt(values: dict[str, float], key: str | None) -> str:
    return f"{values[key]:.4g}" if key in values else "-"
