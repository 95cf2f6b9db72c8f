"""What a run reports: metrics.jsonl, TensorBoard scalars and images, a progress bar (off a
terminal, a line per sample interval). A record averages each loss term over the steps since
the previous one; the losses stay on the device and are read once per record, so a GPU step
never waits for the host.
"""

from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path
from typing import Any, TextIO

import torch
from tqdm import tqdm

from cocogan.outputs import atomic_write
from cocogan.plotting import read_jsonl

METRICS_FILE = "metrics.jsonl"
TENSORBOARD_DIR = "tensorboard"
# Loss terms in the order they are reported (train_step's keys); L_W is the Wasserstein estimate.
LOSS_TERMS = ("L_W", "L_GP", "L_S_real", "L_S_fake", "L_C", "L_O", "loss_D", "loss_G",
              "loss_Q")  # L_O only when loss.w_overlap > 0
# What to look at first when WGAN-GP training goes wrong: the two means of L_W, the penalty's
# gradient norms (mean; max: the largest of the interval) and each update's gradient norm.
DIAGNOSTICS = ("D_real", "D_fake", "GP_norm", "GP_norm_max", "grad_D", "grad_G", "grad_Q")
MAXIMA = frozenset({"GP_norm_max"})  # reported as the maximum over a record's steps, not a mean
EXTRAP = "extrap/"  # prefix of the extrapolation step's terms (loss.extrapolate)


def is_maximum(name: str) -> bool:
    """Whether a term is a maximum (over steps, and over ranks), not a mean."""
    return name.removeprefix(EXTRAP) in MAXIMA


class MetricsLog:
    """Accumulates per-step losses and writes one record per ``log_every`` steps; old records
    after ``start_step`` are dropped (no step is logged twice); ``quiet``: write nothing."""

    def __init__(self, run_dir: Path, start_step: int, *, tensorboard: bool = True,
                 quiet: bool = False) -> None:
        self.path = Path(run_dir) / METRICS_FILE
        self._file: TextIO | None = None
        self.writer = None
        if not quiet:
            old = read_jsonl(self.path) if self.path.is_file() else []  # skips a torn last line
            kept = [r for r in old if r.get("step", 0) <= start_step]
            text = "".join(json.dumps(r) + "\n" for r in kept)
            atomic_write(self.path, lambda tmp: tmp.write_text(text))  # never lose the old log
            self._file = self.path.open("a")
        if tensorboard and not quiet:
            from torch.utils.tensorboard import SummaryWriter  # slow import: only when used

            self.writer = SummaryWriter(str(Path(run_dir) / TENSORBOARD_DIR), purge_step=start_step)
        self._steps: list[tuple[int, dict[str, torch.Tensor]]] = []  # since the last record
        self._bad: tuple[str, int] | None = None  # first non-finite (term, step) of past records
        self._since = time.perf_counter()
        self.data_wait = 0.0  # seconds the loop waited for batches since the last record
        self.last: dict[str, Any] = {}

    def accumulate(self, losses: dict[str, torch.Tensor | float], step: int = 0) -> None:
        """Keep one step's losses (0-dim) on their device, unread; a term some steps skip (a
        lazy penalty) is averaged over those that compute it."""
        tensors = [v for v in losses.values() if isinstance(v, torch.Tensor)]
        device = tensors[0].device if tensors else torch.device("cpu")
        self._steps.append((step, {name: torch.as_tensor(v, dtype=torch.float32, device=device)
                                   for name, v in losses.items()}))

    def first_non_finite(self) -> tuple[str, int] | None:
        """(term, step) of the earliest non-finite loss seen so far, or None (reads the device)."""
        keys = [(name, step) for step, losses in self._steps for name in losses]
        if self._bad is not None or not keys:
            return self._bad
        values = torch.stack([v for _, losses in self._steps for v in losses.values()])
        return next((key for key, finite in zip(keys, values.isfinite().tolist(), strict=True)
                     if not finite), None)

    def write(self, step: int, batch: int, lrs: dict[str, float], elapsed: float) -> dict:
        """Write the record of the steps accumulated since the last call; returns it."""
        self._bad = self.first_non_finite()
        terms: dict[str, list[torch.Tensor]] = {}
        for _, losses in self._steps:
            for name, value in losses.items():
                terms.setdefault(name, []).append(value)
        reduced = [torch.stack(v).amax() if is_maximum(n) else torch.stack(v).sum()
                   for n, v in terms.items()]
        totals = dict(zip(terms, torch.stack(reduced).tolist() if reduced else [], strict=True))
        now = time.perf_counter()
        seconds = max(now - self._since, 1e-9)
        record: dict[str, Any] = {"step": step, "time": time.time(), "elapsed_s": elapsed}
        for prefix in ("", EXTRAP):  # the extrapolation step's terms after the main ones
            for name in (*LOSS_TERMS, *DIAGNOSTICS):
                key = prefix + name
                if key in terms:
                    record[key] = totals[key] if name in MAXIMA else totals[key] / len(terms[key])
        record.update(lrs)
        record["images_per_s"] = batch * len(self._steps) / seconds
        record["data_wait_fraction"] = min(1.0, self.data_wait / seconds)
        if self._file is not None:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        if self.writer is not None:
            for key, value in record.items():
                if key not in ("step", "time", "elapsed_s"):
                    name = key.removeprefix(EXTRAP)
                    group = "loss" if name in LOSS_TERMS else "diagnostics" \
                        if name in DIAGNOSTICS else "lr" if key.startswith("lr") else "speed"
                    self.writer.add_scalar(f"{group}/{key}", value, step)
        self._steps, self._since, self.data_wait = [], now, 0.0
        self.last = record
        return record

    def image(self, tag: str, grid: torch.Tensor, step: int) -> None:
        """A (3, H, W) image in [0, 1] to TensorBoard."""
        if self.writer is not None:
            self.writer.add_image(tag, grid, step)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
        if self.writer is not None:
            self.writer.close()


def format_record(record: dict[str, Any], total: int) -> str:
    """One line for logs: step, the main losses, speed."""
    parts = [f"step {record['step']}/{total}"]
    for key in ("L_W", "L_GP", "L_S_real", "loss_D", "loss_G"):
        if key in record and math.isfinite(record[key]):
            parts.append(f"{key} {record[key]:.3g}")
    parts.append(f"{record['images_per_s']:.0f} img/s")
    return "  ".join(parts)


class Progress:
    """tqdm bar on a terminal; otherwise a plain line now and then (``note``)."""

    def __init__(self, start: int, total: int, stream: TextIO | None = None) -> None:
        self.stream = stream or sys.stderr
        self.interactive = bool(getattr(self.stream, "isatty", lambda: False)())
        self.total = total
        self.bar = tqdm(total=total, initial=start, file=self.stream, unit="step",
                        disable=not self.interactive)

    def update(self, record: dict[str, Any] | None = None) -> None:
        self.bar.update(1)
        if record is not None and self.interactive:
            self.bar.set_postfix_str(format_record(record, self.total).split("  ", 1)[-1])

    def note(self, message: str) -> None:
        """A message that must not garble the bar."""
        if self.interactive:
            self.bar.write(message, file=self.stream)
        else:
            print(message, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
