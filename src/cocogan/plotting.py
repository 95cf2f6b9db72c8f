"""Loss curves of a run as a PNG (``metrics.jsonl`` -> one panel per scalar), by matplotlib's
object API and Agg canvas: no display needed, and the global backend is left alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

from cocogan.outputs import atomic_write

DEFAULT_KEYS = ("L_W", "L_GP", "L_S_real", "L_S_fake", "L_C", "L_O", "loss_D", "loss_G",
                "D_real", "D_fake", "GP_norm", "GP_norm_max", "grad_D", "grad_G", "grad_Q",
                "images_per_s")


def read_jsonl(path: Path) -> list[dict]:
    """Records of a JSON-lines file; a torn last line (killed writer) is skipped, and so is a
    line nested too deeply for the JSON parser (no metric record is)."""
    records = []
    for line in Path(path).read_text().splitlines():
        try:
            record = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue
        if isinstance(record, dict):
            records.append(record)
    return records


def plot_metrics(metrics_jsonl: Path, out_png: Path, keys: list[str] | None = None) -> Path:
    """Plot scalars ``keys`` (None: the losses and speed present) of a metrics.jsonl against
    ``step``, one panel each, into ``out_png``; ValueError when none appears."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    records = [r for r in read_jsonl(metrics_jsonl) if "step" in r]
    if not records:
        raise ValueError(f"{metrics_jsonl} holds no metric records with a step")
    wanted = list(keys) if keys else list(DEFAULT_KEYS)
    present = [k for k in wanted if any(_is_number(r.get(k)) for r in records)]
    if not present:
        raise ValueError(f"none of {', '.join(wanted)} appears in {metrics_jsonl}")
    columns = min(4, len(present))
    rows = math.ceil(len(present) / columns)
    figure = Figure(figsize=(3.2 * columns, 2.4 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    for index, key in enumerate(present):
        axes = figure.add_subplot(rows, columns, index + 1)
        points = [(r["step"], r[key]) for r in records if _is_number(r.get(key))]
        axes.plot([p[0] for p in points], [p[1] for p in points], linewidth=1.0)
        axes.set_title(key, fontsize=9)
        axes.set_xlabel("step", fontsize=8)
        axes.tick_params(labelsize=7)
        axes.grid(alpha=0.3)
    return atomic_write(Path(out_png), lambda tmp: figure.savefig(tmp, format="png", dpi=100))


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
