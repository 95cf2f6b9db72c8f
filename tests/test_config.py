"""The typed config (model / loss / optim / data / run) and the one loader: a run and a
checkpoint written before the split (tests/data, by commit b2ab072) load and resume by field
name; each section validates itself; run.deterministic; and the hostile model files of issue
27 (non-finite weights, a missing or huge step, a long name with escapes, a huge run file)."""

# rename_config: skip (this file writes the old train.KEY layout on purpose)
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from tests.test_training import one_error_line as one_line

from cocogan.checkpoint import load_model, read_metadata, resumable_steps
from cocogan.cli import main
from cocogan.config import (
    FIELD_SECTION,
    Config,
    ConfigError,
    DataConfig,
    LossConfig,
    OptimConfig,
    RunConfig,
    apply_overrides,
)
from cocogan.presets import get_preset
from cocogan.training.run import read_run

DATA = Path(__file__).parent / "data"
OLD_RUN = DATA / "run-0.1.0"  # `cocogan train --preset tiny` at b2ab072, 2 steps, widths 1
OLD_INFERENCE = DATA / "inference-0.1.0.safetensors"  # `cocogan export` of that run


def assert_same_as_old_layout(config: Config, old: dict) -> None:
    """Every key of the old one-section file is in the section that owns it, unchanged."""
    assert config.name == old["name"]
    assert [getattr(config.model, k) == v for k, v in old["model"].items()] == \
        [True] * len(old["model"])
    for key, value in old["train"].items():
        assert getattr(config.section_of(key), key) == value, key


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    return run


def test_a_run_written_before_the_split_loads_and_resumes(
        old_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    old = yaml.safe_load((OLD_RUN / "config.yaml").read_text())
    assert "train" in old and "optim" not in old  # the fixture is the old layout
    config, spec = read_run(old_run)
    assert_same_as_old_layout(config, old)
    assert config.data.source == "builtin:blobs"  # from the old run.yaml
    assert spec.seed == 0 and spec.threads == 1
    assert main(["train", "--resume", str(old_run), "--steps", "3", "--device", "cpu"]) == 0
    assert resumable_steps(old_run) == [2, 3]
    new = yaml.safe_load((old_run / "config.yaml").read_text())
    assert "train" not in new and new["optim"]["steps"] == 3
    assert new["data"]["source"] == "builtin:blobs"
    assert read_run(old_run)[0].loss == config.loss


def test_old_checkpoints_and_inference_files_load_with_their_config(old_run: Path) -> None:
    old = json.loads(read_metadata(OLD_INFERENCE)["config"])
    for source in (old_run, old_run / "checkpoints" / "step-00000002.safetensors",
                   OLD_INFERENCE):
        config, _, step = load_model(source)
        assert step == 2
        assert_same_as_old_layout(config, old)
    weights = load_file(str(OLD_INFERENCE))
    ema = load_model(OLD_INFERENCE)[1].generator_ema.state_dict()
    assert all(torch.equal(ema[k.removeprefix("generator_ema.")], v) for k, v in weights.items())


def test_old_set_keys_and_config_files_go_to_the_new_sections(tmp_path: Path) -> None:
    config = apply_overrides(get_preset("tiny"), ["train.lr_d=2e-4", "train.celeba_crop=true",
                                                  "sn_once=false", "run.log_every=3"])
    assert (config.optim.lr_d, config.data.celeba_crop, config.run.sn_once,
            config.run.log_every) == (2e-4, True, False, 3)
    with pytest.raises(ConfigError, match=r"unknown config key 'train.nope'"):
        apply_overrides(config, ["train.nope=1"])
    file = tmp_path / "old.yaml"  # a --config in the old layout overrides the preset's values
    file.write_text("train:\n  batch: 4\n  w_spatial: 5.0\nloss:\n  w_gp: 1.0\n")
    assert main(["train", "--preset", "tiny", "--config", str(file), "--data", "builtin:blobs",
                 "--out", str(tmp_path / "run"), "--dry-run", "--deterministic"]) == 0
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    assert set(saved) == {"name", "model", "loss", "optim", "data", "run", "version"}
    assert (saved["optim"]["batch"], saved["loss"]["w_spatial"], saved["loss"]["w_gp"]) == \
        (4, 5.0, 1.0)
    assert saved["run"]["deterministic"] is True and saved["data"]["source"] == "builtin:blobs"
    assert set(FIELD_SECTION.values()) == {"loss", "optim", "data", "run"}


@pytest.mark.parametrize(("section", "values", "message"), [
    (LossConfig, {"w_gp": -1.0}, "loss.w_gp must be >= 0"),
    (LossConfig, {"w_spatial_g": float("nan")}, "loss.w_spatial_g must be a finite number"),
    (OptimConfig, {"batch": 1}, "optim.batch must be at least 2"),
    (OptimConfig, {"beta2": 1.0}, r"optim.beta2 must be in \[0, 1\)"),
    (OptimConfig, {"ema_kimg": 0.0}, "optim.ema_kimg must be a number > 0"),
    (DataConfig, {"cache_max_mb": -1}, "data.cache_max_mb must be >= 0"),
    (RunConfig, {"compile": "fast"}, "run.compile must be one of off"),
    (RunConfig, {"n_samples": 0}, "run.n_samples must be a positive integer"),
])
def test_each_section_validates_itself(section: type, values: dict, message: str) -> None:
    section().validate()
    with pytest.raises(ConfigError, match=message):
        section(**values).validate()


def test_deterministic_switch_sets_torch_and_trains_on_cpu(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from cocogan.training.device import use_determinism

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    try:
        use_determinism(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
        import os
        assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
        use_determinism(False)
        assert not torch.are_deterministic_algorithms_enabled()
        assert torch.backends.cudnn.benchmark and not torch.backends.cudnn.deterministic
        # every op of a step (GP double backward included) has a deterministic kernel
        assert main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--deterministic",
                     "--out", str(tmp_path / "run"), "--steps", "1", "--batch", "2",
                     "--device", "cpu", "--set", "model.ngf=1", "model.ndf=1",
                     "data.num_workers=0", "run.n_samples=2"]) == 0
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        use_determinism(False)


# ---- hostile model files (issue 27) -----------------------------------------------------------
def rewritten(tmp_path: Path, name: str, *, tensors: dict | None = None,
              **metadata: str | None) -> Path:
    """The old inference-only file with changed tensors or metadata (None drops a key)."""
    data = {**read_metadata(OLD_INFERENCE), **metadata}
    file = tmp_path / name
    save_file(tensors or load_file(str(OLD_INFERENCE)), str(file),
              metadata={k: v for k, v in data.items() if v is not None})
    return file


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_generator_weights_stop_every_loader(
        tmp_path: Path, bad: float, capsys: pytest.CaptureFixture[str]) -> None:
    """27.5: a NaN generator drew black images with exit 0 ("mean": NaN)."""
    tensors = load_file(str(OLD_INFERENCE))
    key = next(k for k in tensors if k.endswith("tail_conv.bias"))
    tensors[key][0] = bad
    file = rewritten(tmp_path, "nan.safetensors", tensors=tensors)
    for argv in (["generate", "full", "--run", str(file), "--seeds", "0",
                  "--out", str(tmp_path / "out"), "--device", "cpu"],
                 ["export", "--run", str(file), "--output", str(tmp_path / "x.safetensors")]):
        assert main(argv) == 2
        assert f"NaN or infinite values ({key})" in one_line(capsys)
    assert not (tmp_path / "out").exists() and not (tmp_path / "x.safetensors").exists()


def test_a_missing_or_impossible_step_is_one_line(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """27.12: no step was a KeyError traceback, 2^70 an unexplained "Value out of range"."""
    assert load_model(rewritten(tmp_path, "nostep.safetensors", step=None))[2] == 0
    for step in (str(2**70), "-3", "1e3"):
        file = rewritten(tmp_path, "step.safetensors", step=step)
        assert main(["generate", "full", "--run", str(file), "--seeds", "0",
                     "--out", str(tmp_path / "out"), "--device", "cpu"]) == 2
        assert "is not a step count (0 to 2^63-1)" in one_line(capsys)


def test_a_long_config_name_with_escapes_is_cleaned(tmp_path: Path) -> None:
    """27.13: the config name was echoed whole (900 KB) with raw ANSI escapes."""
    config = json.loads(read_metadata(OLD_INFERENCE)["config"])
    config["name"] = "\x1b[31mred\x1b]0;title\x07\n" + "n" * 900_000
    file = rewritten(tmp_path, "name.safetensors", config=json.dumps(config))
    name = load_model(file)[0].name
    assert name.startswith("red") and len(name) <= 80
    assert not any(ord(c) < 32 or c == "\x7f" for c in name)


@pytest.mark.parametrize("which", ["config.yaml", "run.yaml"])
def test_a_runs_own_files_are_size_checked_before_reading(
        old_run: Path, which: str, capsys: pytest.CaptureFixture[str]) -> None:
    """27.17: a 2 GB config.yaml was read whole (4.4 GB of memory) before its size check."""
    with open(old_run / which, "r+b") as handle:
        handle.truncate(2 << 30)  # sparse: no disk, and reading it would take 2 GB
    assert main(["train", "--resume", str(old_run), "--steps", "3", "--device", "cpu"]) == 2
    line = one_line(capsys)
    assert which in line and "2147483648 bytes; a config is a few KB" in line
