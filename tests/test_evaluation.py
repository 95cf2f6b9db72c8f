"""Tests for cocogan.evaluation and the `eval`/`plot` commands: end-to-end runs from a generator
and a real folder with a stand-in feature extractor (no Inception weights), the statistics
cache, the offline weights policy at the CLI, the spatial metric against an oracle, seams/wrap
reporting, the training-time callback and the indicator plot.
Everything runs offline on CPU in well under a minute."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from cocogan.checkpoint import load_model, save_model
from cocogan.cli import main
from cocogan.config import Config, apply_overrides
from cocogan.coords import CoordinateSystem
from cocogan.data import build_dataset
from cocogan.evaluation import (
    BestTracker,
    EvalCallback,
    EvalConfig,
    EvalHook,
    cocogan_sampler,
    discriminator_predictor,
    evaluate_run,
    generated_batches,
    parse_metrics,
    spatial_accuracy,
)
from cocogan.evaluation.callback import indicator_keys
from cocogan.evaluation.sampling import real_subset
from cocogan.metrics import FID_WEIGHTS_NAME, WEIGHTS_ENV, FeatureStats, frechet_distance, inception
from cocogan.model import CocoGAN
from cocogan.nn.discriminator import spatial_dim
from cocogan.outputs import CACHE_ENV
from cocogan.presets import get_preset

SMALL = EvalConfig(n=24, batch=12, kid_subsets=4, kid_subset_size=12, seam_images=24,
                   spatial_images=6, swd_images=24)


class StandIn:
    """Fixed random projection of 8x8-pooled images: a weight-free FeatureExtractor."""

    name = "standin-proj16"
    dim = 16

    def __init__(self) -> None:
        self.proj = torch.randn(3 * 8 * 8, self.dim, generator=torch.Generator().manual_seed(1))

    def __call__(self, images: Tensor) -> Tensor:
        pooled = nn.functional.adaptive_avg_pool2d(images.float(), 8).flatten(1)  # (B, 192)
        return pooled @ self.proj  # (B, 16)


def make_run(root: Path, preset: str = "tiny", step: int = 1) -> tuple[Path, Config, CocoGAN]:
    """A run directory holding one checkpoint of an untrained model."""
    config = get_preset(preset)
    torch.manual_seed(0)
    model = CocoGAN(config.model).eval()
    save_model(root / "checkpoints" / f"step-{step:08d}.safetensors", config, model, step)
    return root, config, model


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models gain nothing from intra-op threads, and on a shared machine oversubscribed
    OpenMP threads make their backward passes tens of times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(cache))
    return cache


# --------------------------------------------------------------------------- FID pipeline


def test_fid_kid_end_to_end_from_generator_and_folder(tmp_path: Path, emoji_dir: Path,
                                                      _isolated_cache: Path) -> None:
    run, config, model = make_run(tmp_path / "run")
    first = evaluate_run(run, str(emoji_dir), "fid,kid", cfg=SMALL, device="cpu",
                         feature_extractor=StandIn())
    values = first.values
    assert values["fid"] > 0 and np.isfinite(values["kid"]) and values["kid_std"] >= 0
    record = json.loads((run / "eval.json").read_text())
    assert record["metrics"]["fid"] == pytest.approx(values["fid"])
    assert record["n"] == {"generated": {"fid": 24, "kid": 24}, "real": {"fid": 24, "kid": 24}}
    assert record["step"] == 1 and record["real"] == str(emoji_dir)
    assert record["checkpoint"].endswith("step-00000001.safetensors")
    assert not record["real_stats_cached"]
    assert len(list((_isolated_cache / "stats").glob("*.npz"))) == 1

    # Reference: the same images and features computed directly, FID by the metric function.
    extractor = StandIn()
    fake = torch.cat(list(generated_batches(cocogan_sampler(model), 24, 12, SMALL.seed)))
    dataset = build_dataset(str(emoji_dir), 32, 32)
    real = torch.stack([img for img in real_subset(dataset, 24)])
    quantised = ((real.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # files are 8-bit
    f, r = FeatureStats.from_features(extractor(fake)), FeatureStats.from_features(
        extractor(quantised))
    assert values["fid"] == pytest.approx(frechet_distance(f.mean, f.cov, r.mean, r.cov),
                                          rel=1e-4)

    second = evaluate_run(run, str(emoji_dir), "fid", cfg=SMALL, device="cpu",
                          feature_extractor=StandIn())
    assert second.record["real_stats_cached"]
    assert second.values["fid"] == pytest.approx(values["fid"], rel=1e-9)
    assert config.name == "tiny"


def test_missing_inception_weights_cli_is_one_line_and_fast(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    run, _, _ = make_run(tmp_path / "run")
    for var in ("HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "home"))
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inception, "installed_package_weights", lambda: None)  # not installed

    def no_network(*args: object, **kwargs: object) -> None:
        raise AssertionError("evaluation must never touch the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    start = time.perf_counter()
    code = main(["eval", "--run", str(run), "--real", "builtin:blobs", "--metrics", "swd,fid"])
    assert code == 2 and time.perf_counter() - start < 10
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and FID_WEIGHTS_NAME in err and "--inception-weights" in err
    assert inception.INSTALL_COMMAND in err
    assert str(tmp_path / "home") in err  # says where to put the file
    assert not (run / "eval.json").exists()


def test_nan_generator_stops_in_one_line(tmp_path: Path, emoji_dir: Path) -> None:
    """A checkpoint whose generator weights are NaN once hung FID (scipy's sqrtm on NaN);
    the loader now refuses such weights before anything is generated, naming the cause."""
    from cocogan.checkpoint import CheckpointError

    config = get_preset("tiny")
    model = CocoGAN(config.model).eval()
    with torch.no_grad():
        for p in model.generator_ema.parameters():
            p.fill_(float("nan"))
    save_model(tmp_path / "run" / "checkpoints" / "step-00000001.safetensors", config, model, 1)
    start = time.perf_counter()
    with pytest.raises(CheckpointError, match=r"NaN or infinite.*earlier checkpoint"):
        evaluate_run(tmp_path / "run", str(emoji_dir), "fid,kid", cfg=SMALL, device="cpu",
                     feature_extractor=StandIn())
    assert time.perf_counter() - start < 30


def test_eval_cli_prints_the_estimate_first_and_shows_progress(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """`cocogan eval` ran silently for hours at its paper default of 50,000 images; it now
    prints the time estimate before any work and a bar per pass (the real images, then the
    generated ones)."""
    run, _, _ = make_run(tmp_path / "run")
    assert main(["eval", "--run", str(run), "--real", "builtin:blobs", "--metrics", "swd",
                 "--n", "16", "--batch", "8"]) == 0
    err = capsys.readouterr().err
    estimate = err.index("cocogan eval: swd on 16 generated images: ~")
    real_bar = err.index("real images:")
    assert estimate < real_bar < err.index("generated images:", real_bar)
    assert "16/16" in err  # tqdm's count at the end of a bar


def test_parse_metrics_rejects_unknown_names() -> None:
    assert parse_metrics("swd, FID,swd") == ("swd", "fid")
    with pytest.raises(ValueError, match="choose from fid, kid, swd"):
        parse_metrics("swd,is")


# --------------------------------------------------------------------------- spatial


def _position_images(count: int, coords: CoordinateSystem) -> Tensor:
    """Images whose channels 0/1 hold each pixel's row/column index / 1000 (channel 2: 0)."""
    h, w = coords.grid_h * coords.micro, coords.grid_w * coords.micro
    rows = torch.arange(h, dtype=torch.float32)[:, None].expand(h, w) / 1000
    cols = torch.arange(w, dtype=torch.float32)[None, :].expand(h, w) / 1000
    return torch.stack([rows, cols, torch.zeros(h, w)])[None].repeat(count, 1, 1, 1)


class PositionOracle(nn.Module):
    """A perfect spatial head: reads the crop's top-left pixel index from D's stand-in
    features and returns the true macro coordinate."""

    def __init__(self, coords: CoordinateSystem) -> None:
        super().__init__()
        self.coords = coords

    def forward(self, h: Tensor) -> Tensor:
        top, left = (h[:, 0] * 1000).round(), (h[:, 1] * 1000).round()  # pixels
        truth = self.coords.macro_coords(top / self.coords.micro, left / self.coords.micro)
        return truth[:, :spatial_dim(self.coords.coord_dim)]  # the row alone on the cylinder


@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
def test_spatial_oracle_scores_one_and_constant_head_one_over_m(
        preset: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = CocoGAN(get_preset(preset).model).eval()
    coords = model.coords
    images = _position_images(3, coords)
    disc = model.discriminator
    monkeypatch.setattr(disc, "features", lambda p: p[:, :2, 0, 0])  # top-left pixel values
    monkeypatch.setattr(disc, "spatial", PositionOracle(coords))
    perfect = spatial_accuracy(discriminator_predictor(disc), coords, images.split(2))
    # N1: on the cylinder the head predicts the row alone, so a constant head is right 1/rows
    positions = coords.macro_rows * (1 if coords.cyclic else coords.macro_cols)
    assert perfect.vertical == coords.cyclic and set(perfect.values()) == (
        {"spatial_row_acc", "spatial_row_err"} if coords.cyclic else {"spatial_acc", "spatial_err"})
    assert perfect.accuracy == 1.0 and perfect.error == pytest.approx(0, abs=1e-5)
    assert perfect.patches == 3 * coords.macro_rows * coords.macro_cols

    corner = PositionOracle(coords)(torch.zeros(1, 2))  # always the first position
    const = spatial_accuracy(lambda p: corner.expand(p.shape[0], -1), coords, [images])
    assert const.accuracy == pytest.approx(1 / positions) and const.error > 0


def test_spatial_metric_of_untrained_model_is_in_range() -> None:
    model = CocoGAN(get_preset("tiny").model).eval()
    real = torch.stack([build_dataset("builtin:blobs", 32, 32)[i] for i in range(4)])
    before = {k: v.clone() for k, v in model.discriminator.state_dict().items()}
    result = spatial_accuracy(discriminator_predictor(model.discriminator), model.coords,
                              real.split(2))
    assert 0.0 <= result.accuracy <= 1.0 and result.error >= 0.0
    after = model.discriminator.state_dict()  # no BN statistics or power-iteration updates
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert result.patches == 4 * model.coords.macro_rows * model.coords.macro_cols


# --------------------------------------------------------------------------- CLI: seams, wrap


def test_cli_reports_seams_and_wrap_beside_real(tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    run, _, _ = make_run(tmp_path / "pano", "tiny-panorama")
    code = main(["eval", "--run", str(run), "--real", "builtin:skyline", "--metrics",
                 "seams,wrap,swd,spatial", "--n", "8", "--batch", "8", "--device", "cpu"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.strip()}
    for name in ("seams", "wrap"):
        gen, real = float(rows[name][1]), float(rows[name][2])
        assert gen > 0 and real > 0
    assert json.loads((run / "eval.json").read_text())["resample"] == "lanczos"  # N9
    record = json.loads((run / "eval.json").read_text())["metrics"]
    assert {"seams", "seams_real", "wrap", "wrap_real", "swd", "spatial_row_acc",
            "spatial_row_err"} <= set(record) and "spatial_acc" not in record  # N1
    assert "spatial row accuracy" in out and "spatial accuracy" not in out
    assert record["wrap_real"] < 1.5  # the skyline panoramas are exactly cyclic

    cart, _, _ = make_run(tmp_path / "cart")
    assert main(["eval", "--run", str(cart), "--real", "builtin:blobs", "--metrics", "wrap"]) == 2
    assert "cylindrical" in capsys.readouterr().err



def test_layout_metrics_agree_with_the_layout_functions(tmp_path: Path) -> None:
    """`cocogan eval --metrics spread,repeat,likeness,colour`: the generated and real figures are
    the layout functions applied to the same generated and real images (a second path)."""
    from cocogan.metrics.layout import content_spread, likeness, repetition

    run, _, model = make_run(tmp_path / "pano", "tiny-panorama")
    assert main(["eval", "--run", str(run), "--real", "builtin:skyline", "--metrics",
                 "spread,repeat,likeness,colour", "--n", "16", "--batch", "8", "--device",
                 "cpu", "--seed", "3"]) == 0
    record = json.loads((run / "eval.json").read_text())["metrics"]
    fake = torch.cat(list(generated_batches(cocogan_sampler(model), 16, 8, seed=3)))
    fake = ((fake.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1  # eval keeps 8-bit images
    assert record["spread"] == pytest.approx(content_spread(fake), rel=1e-5)
    assert record["repeat"] == pytest.approx(repetition(fake, 8), rel=1e-5)
    assert record["likeness"] == pytest.approx(likeness(fake), rel=1e-5)
    assert 0 < record["likeness_real"] < 0.5  # skies shade alike; ridges sit anywhere
    assert -0.2 < record["repeat_real"] < 0.2  # real skylines do not repeat every 8 px
    assert record["spread_real"] > 0
    # an untrained G's colours are far from the skies'; two halves of the reals are close
    assert record["colour"] > 2 * record["colour_real"] > 0

# --------------------------------------------------------------------------- training callback


def test_eval_callback_values_best_tracking_and_mode_restored() -> None:
    config = get_preset("tiny")
    model = CocoGAN(config.model).train()
    callback = EvalCallback(config, "builtin:blobs", "swd,seams,spatial", every=5,
                            settings=SMALL)
    values = callback(model, config, 5)
    assert {"eval/swd", "eval/seams", "eval/seams_real", "eval/spatial_acc",
            "eval/spatial_err"} <= set(values)
    assert all(isinstance(v, float) and np.isfinite(v) for v in values.values())
    assert model.generator.training and model.discriminator.training
    assert callback(model, config, 10)["eval/swd"] == pytest.approx(values["eval/swd"])
    assert callback.best.update(values, 5) and not callback.best.update(values, 10)
    better = {**values, "eval/swd": values["eval/swd"] / 2}
    assert callback.best.update(better, 15) and callback.best.step == 15


def test_eval_hook_in_the_training_loop_logs_and_keeps_best(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cocogan.training.run import RunSpec, new_trainer, prepare_new_run

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # keeps the loop from resetting the thread count
    config = apply_overrides(get_preset("tiny"), [
        "optim.steps=4", "optim.batch=4", "run.log_every=2", "run.sample_every=100",
        "run.checkpoint_every=4", "data.num_workers=0", "data.source=builtin:blobs"])
    run = tmp_path / "run"
    spec = RunSpec(device="cpu")
    trainer = new_trainer(run, config, spec, prepare_new_run(run, config, spec)[0])
    callback = EvalCallback(config, "builtin:blobs", "swd,seams", every=2, settings=SMALL)
    trainer.hooks.append(EvalHook(callback, run))
    assert trainer.fit() is None
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evals = [r for r in records if "eval/swd" in r]
    assert [r["step"] for r in evals] == [2, 4] and any("L_W" in r for r in records)
    best = json.loads((run / "checkpoints" / "best.json").read_text())
    assert best["metric"] == "swd" and best["step"] in (2, 4)
    assert load_model(run / "checkpoints" / "best.safetensors")[2] == best["step"]
    assert EvalHook(callback, run).callback.best.score == best["score"]  # resume keeps it
    assert main(["plot", str(run)]) == 0 and (run / "training-indicators.png").is_file()


def test_best_tracker_directions_and_state() -> None:
    seams = BestTracker("seams")
    assert seams.update({"eval/seams": 2.0, "eval/seams_real": 1.0}, 1)
    assert not seams.update({"eval/seams": 0.0, "eval/seams_real": 1.0}, 2)  # as far from real
    assert seams.update({"eval/seams": 1.1, "eval/seams_real": 1.0}, 3)
    spatial = BestTracker("spatial")
    assert spatial.update({"eval/spatial_acc": 0.5}, 1)
    assert spatial.update({"eval/spatial_acc": 0.9}, 2)
    assert not spatial.update({"eval/spatial_acc": 0.7}, 3)
    assert not spatial.update({"eval/swd": 1.0}, 4)  # metric absent: no decision
    restored = BestTracker("spatial")
    restored.load_state_dict(spatial.state_dict())
    assert restored.step == 2 and not restored.update({"eval/spatial_acc": 0.8}, 5)


# --------------------------------------------------------------------------- plot


def test_plot_writes_png_from_metrics_jsonl(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    lines = [{"step": s, "L_W": 1.0 / s, "loss_D": -1.0} for s in range(10, 110, 10)]
    lines += [{"step": s, "eval/swd": 100.0 - s / 2, "eval/swd_32": 90.0, "eval/swd_16": 80.0,
               "eval/seams": 2.0 - s / 100, "eval/seams_real": 1.1} for s in (50, 100)]
    (run / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"st')
    assert indicator_keys(lines) == ["L_W", "eval/swd", "eval/seams", "eval/seams_real"]
    assert main(["plot", str(run)]) == 0
    png = run / "training-indicators.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["plot", str(tmp_path / "missing")]) == 2


def test_train_cli_eval_every_logs_metrics_and_keeps_best(tmp_path: Path) -> None:
    from cocogan.cli import main

    run = tmp_path / "run"
    code = main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out", str(run),
                 "--steps", "4", "--batch", "4", "--eval-every", "2", "--eval-n", "8",
                 "--eval-metrics", "swd,spatial", "--set", "run.sample_every=4"])
    assert code == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    evaluated = [r["step"] for r in records if "eval/swd" in r]
    assert evaluated == [2, 4]
    assert (run / "checkpoints" / "best.safetensors").is_file()
