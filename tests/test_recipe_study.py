"""benchmarks/recipe_study.py: variant parsing, the budget hook (evaluation time excluded, one
evaluation per mark, a stop at the budget), the table and figure, and an end-to-end smoke run
of two variants that is then resumed to a larger budget (existing options only)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
from benchmarks import recipe_study as study

from cocogan.training.signals import StopFlag


def test_parse_variant() -> None:
    assert study.parse_variant("wide=--set model.ngf=32 model.ndf=32") == \
        ("wide", ["model.ngf=32", "model.ndf=32"])
    assert study.parse_variant("tiny") == ("tiny", None)  # a default, by name
    assert study.parse_variant("aug=--set loss.augment=color,cutout") == \
        ("aug", ["loss.augment=color,cutout"])  # passed through, checked by the config later
    with pytest.raises(ValueError, match="no such default"):
        study.parse_variant("nonesuch")
    with pytest.raises(ValueError, match=r"expected --set key=value \.\.\., got .model\.ngf."):
        study.parse_variant("w=--set model.ngf 32")
    with pytest.raises(ValueError, match="start with a NAME"):
        study.parse_variant("=--set model.ngf=32")


class FakeTrainer:
    """What the hook reads: elapsed(), state.step, refresh_ema(), notify()."""

    def __init__(self) -> None:
        self.clock, self.refreshed, self.notes = 0.0, 0, []
        self.state = SimpleNamespace(step=0)

    def elapsed(self) -> float:
        return self.clock

    def refresh_ema(self) -> None:
        self.refreshed += 1

    def notify(self, text: str) -> None:
        self.notes.append(text)


def test_budget_hook_excludes_evaluation_time_and_stops_at_the_budget() -> None:
    trainer, record, stop, saves = FakeTrainer(), {"rows": []}, StopFlag(), []

    def measure(t: FakeTrainer) -> dict[str, float]:
        t.clock += 100.0  # an evaluation takes 100 s: not training time
        return {"fid": 300.0 - t.state.step}

    hook = study.AtMinutes([60.0, 120.0], measure, record, lambda: saves.append(1), stop,
                           threads=2)
    for step in range(1, 20):  # 10 s of training per step
        trainer.state.step, trainer.clock = step, trainer.clock + 10.0
        hook(trainer)
        if stop.requested:
            break
    assert [r["step"] for r in record["rows"]] == [6, 12]  # at 60 s and 120 s of training
    assert [r["train_s"] for r in record["rows"]] == [60.0, 120.0]
    assert [r["cpu_minutes"] for r in record["rows"]] == [2.0, 4.0]  # x 2 threads
    assert [r["eval_s"] for r in record["rows"]] == [100.0, 100.0]
    assert stop.signal_name == "budget" and trainer.state.step == 12
    assert trainer.refreshed == 2 and len(saves) == 2 and len(trainer.notes) == 2


def test_several_marks_passed_at_once_give_one_evaluation() -> None:
    trainer, record, stop = FakeTrainer(), {"rows": []}, StopFlag()
    hook = study.AtMinutes([1.0, 2.0, 3.0], lambda t: {"fid": 1.0}, record, lambda: None, stop,
                           threads=1)
    trainer.state.step, trainer.clock = 1, 2.5  # one slow first step passes two marks
    hook(trainer)
    assert len(record["rows"]) == 1 and not stop.requested
    trainer.state.step, trainer.clock = 2, 3.0
    hook(trainer)
    assert len(record["rows"]) == 2 and stop.requested


@pytest.mark.slow  # two variants, then resumed, through the Trainer: 1-3 min on a loaded CPU
def test_smoke_two_variants_then_resume(tmp_path: Path) -> None:
    out = tmp_path / "study"
    common = ["--data", "builtin:blobs", "--points", "2", "--metrics", "swd", "--n", "16",
              "--matmul-size", "64", "--set", "data.num_workers=0", "--out", str(out),
              "--variant", "tiny", "--variant", "fast=--set optim.lr_g=1e-3 optim.lr_d=1e-3",
              "--variant", "bogus=--set train.no_such_option=1"]
    assert study.main(["--minutes", "0.05", *common]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["real"]["swd"] > 0
    assert "unknown config key 'train.no_such_option'" in results["variants"]["bogus"]["skipped"]
    first = {}
    for name in ("tiny", "fast"):
        record = results["variants"][name]
        assert record["rows"] and record["rows"][-1]["train_s"] >= 3.0  # 0.05 CPU-minutes
        assert record["sessions"][0]["matmul_gflops"] > 0
        first[name] = record["rows"][-1]["step"]
    assert results["variants"]["fast"]["overrides"] == ["optim.lr_g=1e-3", "optim.lr_d=1e-3"]
    assert (out / "curves.png").stat().st_size > 0
    assert "| fast | `optim.lr_g=1e-3 optim.lr_d=1e-3` |" in (out / "table.md").read_text()

    # a larger budget (a loaded machine's first step may take longer than 0.05 CPU-minutes)
    minutes = 3 * max(results["variants"][n]["rows"][-1]["cpu_minutes"] for n in first)
    assert study.main(["--minutes", str(minutes), *common]) == 0  # resumed
    results = json.loads((out / "results.json").read_text())
    for name in ("tiny", "fast"):
        record = results["variants"][name]
        assert record["rows"][-1]["cpu_minutes"] >= minutes
        assert record["rows"][-1]["step"] > first[name]
        assert [s["from_step"] for s in record["sessions"]] == [0, first[name]]


def test_plot_only_redraws_from_the_saved_evaluations(tmp_path: Path) -> None:
    """A study stopped by Ctrl-C keeps results.json (the floor) and NAME.json (its rows):
    --plot-only writes the table and the figure from them without training."""
    rows = [{"step": s, "cpu_minutes": m, "fid": f} for s, m, f in ((100, 1.0, 250.0),
                                                                 (220, 2.0, 210.0))]
    (tmp_path / "results.json").write_text(json.dumps({"real": {"fid": 77.5}}))
    (tmp_path / "tiny.json").write_text(json.dumps({"overrides": [], "rows": rows}))
    assert study.main(["--out", str(tmp_path), "--variant", "tiny", "--variant", "gp4",
                       "--metrics", "fid", "--plot-only"]) == 0
    table = (tmp_path / "table.md").read_text()
    assert "| tiny | `-` | 220 | 2.0 | 210 |" in table and "gp4" not in table  # gp4: no file
    assert (tmp_path / "curves.png").stat().st_size > 1000
