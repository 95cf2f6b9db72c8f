"""`cocogan demo --fast`: the whole demo pipeline in seconds (it learns nothing at this length;
the full demo's quality claim is checked by running it, see docs/training.md). The blobs stage
trains `tiny-paper` here (the paper's model; the demo itself trains `tiny`, with the seam
options); the panorama stage keeps `tiny-panorama`."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cocogan.cli import demo, main


def test_fast_demo_writes_every_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    stages = tuple(dataclasses.replace(s, preset="tiny-paper") if s.preset == "tiny" else s
                   for s in demo.STAGES)
    assert [s.preset for s in stages] == ["tiny-paper", "tiny-panorama"]
    monkeypatch.setattr(demo, "STAGES", stages)
    out = tmp_path / "demo"
    assert main(["demo", "--fast", "--out", str(out)]) == 0
    for name in ("blobs", "skyline"):
        folder = out / name
        for picture in ("final.png", "real.png", "losses.png", "training.png"):
            assert Image.open(folder / picture).size[0] > 0, picture
        assert len(list((folder / "run" / "samples").glob("step-*.png"))) >= 3
        assert (folder / "run" / "metrics.jsonl").stat().st_size > 0
    # Each panorama is pasted twice side by side (0-720 degrees): the halves of a row agree.
    panorama = np.asarray(Image.open(out / "skyline" / "panorama-720.png"))
    row = panorama[2:2 + 8, 2:-2]  # top rows of the first panorama, (8, 2W', 3)
    half = row.shape[1] // 2
    assert panorama.shape[1] > 2 * 96 and np.array_equal(row[:, :half], row[:, half:])
    from cocogan import shipped

    for model in shipped.models():  # the shipped models' pictures come first
        assert Image.open(out / "shipped" / f"{model.name}.png").size[0] > 0
    summary = json.loads((out / "summary.json").read_text())
    assert [r["dataset"] for r in summary] == ["builtin:blobs", "builtin:skyline"]
    assert [r["preset"] for r in summary] == ["tiny-paper", "tiny-panorama"]
    for result in summary:
        for key in ("step0", "final", "real_vs_real"):
            assert result[key]["swd"] >= 0 and result[key]["colour"] >= 0
            assert result[key]["seams"] > 0
            assert ("wrap" in result[key]) == (result["dataset"] == "builtin:skyline")


def test_forecast_warns_only_when_far_beyond_the_plan() -> None:
    from types import SimpleNamespace

    from cocogan.cli.demo import Forecast

    lines: list[str] = []
    trainer = SimpleNamespace(state=SimpleNamespace(step=0), notify=lines.append,
                              config=SimpleNamespace(optim=SimpleNamespace(steps=1000)))
    forecast = Forecast(planned_minutes=1e-6, after=2)
    for step in range(5):
        trainer.state.step = step
        forecast(trainer)
    assert len(lines) == 1 and "ms per step" in lines[0]
    assert "planned" in lines[0] and "Ctrl-C" in lines[0]  # far beyond a microsecond budget
    lines.clear()
    relaxed = Forecast(planned_minutes=1e6, after=2)
    for step in range(5):
        trainer.state.step = step
        relaxed(trainer)
    assert len(lines) == 1 and "planned" not in lines[0]
