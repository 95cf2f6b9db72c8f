"""The paper's training indicators (Appendix F): L_W and each evaluated metric over steps, from
a run's metrics.jsonl into one PNG. This chooses the series (`plotting.plot_metrics` draws
them): a metric's real figure follows its panel; per-level SWD, per-border seams and KID's std
stay in metrics.jsonl and TensorBoard.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cocogan.plotting import plot_metrics, read_jsonl

EVAL_PREFIX = "eval/"
INDICATOR_FILE = "training-indicators.png"


def indicator_keys(records: list[dict[str, Any]]) -> list[str]:
    """L_W first (if logged), then every evaluated metric in first-logged order."""
    keys = list(dict.fromkeys(k for r in records for k in r))
    evals = [k for k in keys if k.startswith(EVAL_PREFIX) and not _detail(k)]
    # a metric's real-image figure goes right after the metric
    ordered = [k for k in evals if not k.endswith("_real")]
    for real in (k for k in evals if k.endswith("_real")):
        metric = real.removesuffix("_real")
        ordered.insert(ordered.index(metric) + 1 if metric in ordered else len(ordered), real)
    return (["L_W"] if "L_W" in keys else []) + ordered


def _detail(key: str) -> bool:
    """Per-level SWD, per-border seams and KID's std: in metrics.jsonl, not in the plot."""
    name = key.removeprefix(EVAL_PREFIX)
    return name.startswith(("swd_", "seams_x", "seams_y")) or name.endswith("_std")


def plot_indicators(metrics_jsonl: str | Path, out_png: str | Path) -> Path:
    """Draw the indicators of a metrics.jsonl into `out_png`.

    Raises:
        FileNotFoundError: no metrics.jsonl.
        ValueError: it holds neither L_W nor evaluated metrics.
    """
    path = Path(metrics_jsonl)
    if not path.is_file():
        raise FileNotFoundError(f"no {path}: train first (cocogan train) or pass a run directory")
    keys = indicator_keys([r for r in read_jsonl(path) if "step" in r])
    if not keys:
        raise ValueError(f"{path} has no L_W and no eval/ metrics to plot")
    return plot_metrics(path, Path(out_png), keys=keys)
