"""End-to-end tests of `cocogan train`: run directories, exact resume, atomic checkpoints,
signals, untrusted checkpoints, bad input and divergence. Tiny widths keep each run to seconds."""

from __future__ import annotations

import copy
import dataclasses
import errno
import itertools
import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from safetensors.torch import load_file, save_file

from cocogan.checkpoint import CheckpointError, load_model, load_state, resumable_steps
from cocogan.cli import main
from cocogan.config import Config
from cocogan.plotting import plot_metrics
from cocogan.training.datastream import ResumableBatchSampler, roll_panoramas
from cocogan.training.run import new_trainer, open_dataset, read_run
from cocogan.training.signals import StopFlag

# The preset the training tests train: the paper's model and losses at tiny widths.
PRESET = "tiny-paper"
# Shrinks the tiny presets further and makes every interval small, so a run takes seconds.
SMALL = ["--set", "model.z_dim=8", "model.ngf=8", "model.ndf=8", "model.aux_hidden=16",
         "optim.batch=4", "run.log_every=1", "run.sample_every=2", "run.checkpoint_every=2",
         "data.num_workers=0", "run.n_samples=4", "optim.ema_warmup=1"]


@pytest.fixture(autouse=True)
def _one_thread(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Pin runs to one thread: results differ bitwise between thread counts, and the loop's
    own choice follows the machine's load, which would make the exact-resume test flaky."""
    previous = torch.get_num_threads()
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def train(*args: str | Path) -> int:
    return main(["train", *map(str, args)])


def new_run(out: Path, *extra: str, preset: str = PRESET, data: str = "builtin:blobs",
            steps: int = 2) -> int:
    return train("--preset", preset, "--data", data, "--out", out, "--steps", steps, *SMALL,
                 *extra)


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


def states_equal(a: object, b: object) -> bool:
    """Deep equality of checkpoint trees with torch.equal on tensors."""
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            states_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(states_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """40 real emoji (two levels deep), a corrupt PNG and a half-transparent RGBA PNG."""
    source = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "emoji-noto-64"
    if not source.is_dir():
        pytest.skip(f"{source} not present")
    root = tmp_path_factory.mktemp("images")
    (root / "sub").mkdir()
    for index, path in enumerate(sorted(source.glob("*.png"))[::90][:40]):
        shutil.copy(path, root / ("sub" if index % 2 else ".") / path.name)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))
    rgba = np.zeros((48, 48, 4), dtype=np.uint8)
    rgba[8:40, 8:40] = (200, 30, 30, 128)
    Image.fromarray(rgba, mode="RGBA").save(root / "alpha.png")
    return root


def test_train_from_folder_writes_a_complete_run(image_folder: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert new_run(run, "data.num_workers=1", data=str(image_folder), steps=3) == 0
    out = capsys.readouterr()
    assert "broken.png" in out.err and "warning" in out.err  # skipped, said once, no traceback
    assert "41 images (1 unreadable file(s) skipped)" in out.out
    saved = yaml.safe_load((run / "config.yaml").read_text())
    assert saved["version"] and Config.from_dict(saved).optim.steps == 3
    assert yaml.safe_load((run / "run.yaml").read_text())["skipped_files"] == 1
    assert resumable_steps(run) == [2, 3]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in ("time", "L_W", "L_GP", "L_S_real", "L_S_fake", "L_C", "loss_D", "loss_G",
                "lr_g", "lr_d", "lr_q", "images_per_s"):
        assert all(np.isfinite(r[key]) for r in records), key
    assert sorted(p.name for p in (run / "samples").glob("*.png")) == [
        "step-00000000.png", "step-00000002.png", "step-00000003.png"]
    assert any((run / "tensorboard").iterdir())
    config, _, step = load_model(run)  # the applications' loader reads our checkpoints
    assert step == 3 and config.model.ngf == 8
    plot_metrics(run / "metrics.jsonl", tmp_path / "losses.png")
    assert Image.open(tmp_path / "losses.png").size[0] > 100


@pytest.mark.parametrize(("preset", "data"), [(PRESET, "builtin:blobs"),
                                              ("tiny", "builtin:blobs"),
                                              ("tiny-panorama", "builtin:skyline")])
def test_train_on_builtin_datasets(preset: str, data: str, tmp_path: Path) -> None:
    assert new_run(tmp_path / "run", preset=preset, data=data) == 0
    grid = Image.open(tmp_path / "run" / "samples" / "step-00000002.png")
    width = 96 if preset == "tiny-panorama" else 32
    assert grid.width > 2 * width  # a grid of full images, not single patches


def straight_and_resumed(tmp_path: Path, *overrides: str) -> tuple[Path, Path, dict]:
    """4 steps in one go and 2 steps + resume to 4 of tiny-panorama (the roll too), checked
    equal in every weight and in the resume state; returns both runs and the state."""
    straight, split = tmp_path / "straight", tmp_path / "split"
    args = {"preset": "tiny-panorama", "data": "builtin:skyline"}
    assert new_run(straight, *overrides, "run.checkpoint_every=4", steps=4, **args) == 0
    assert new_run(split, *overrides, steps=2, **args) == 0
    assert train("--resume", split, "--steps", 4) == 0
    a = load_file(straight / "checkpoints" / "step-00000004.safetensors")
    b = load_file(split / "checkpoints" / "step-00000004.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    sa = load_state(straight / "checkpoints" / "step-00000004.state.pt")
    sb = load_state(split / "checkpoints" / "step-00000004.state.pt")
    sa.pop("elapsed"), sb.pop("elapsed")
    assert states_equal(sa, sb)
    return straight, split, sa


def test_resume_is_exact(tmp_path: Path) -> None:
    """4 steps in one go == 2 steps, stop, resume to 4: every tensor and RNG state equal."""
    _, split, _ = straight_and_resumed(tmp_path)
    steps = [json.loads(line)["step"] for line in (split / "metrics.jsonl").open()]
    assert steps == [1, 2, 3, 4]


def test_resume_is_exact_with_augmentation_and_a_lazy_penalty(tmp_path: Path) -> None:
    """loss.augment and loss.gp_every draw from the step RNG and count the run's steps, so
    a resumed run is still exact; records average the penalty over the steps that ran it."""
    straight, _, _ = straight_and_resumed(tmp_path, "loss.augment=color,cutout",
                                          "loss.gp_every=2")
    records = [json.loads(line) for line in (straight / "metrics.jsonl").open()]
    assert [("L_GP" in r) for r in records] == [True, False, True, False]  # steps 1-4: 0, 2


def test_baseline_family_is_trained_and_resumed_by_the_same_trainer(tmp_path: Path) -> None:
    """model.family=baseline: the full-image GAN gets the run directory, sample grids, the
    EMA with its own recalibrated BN statistics and exact resume of the one Trainer."""
    from cocogan.model import BaselineGAN

    straight, split, state = straight_and_resumed(tmp_path, "model.family=baseline")
    assert set(state["optimizers"]) == {"g", "d"}
    a = load_file(straight / "checkpoints" / "step-00000004.safetensors")
    records = [json.loads(line) for line in (split / "metrics.jsonl").open()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]
    assert {"L_W", "L_GP", "loss_D", "loss_G", "lr_g", "lr_d"} <= set(records[-1])
    assert Image.open(split / "samples" / "step-00000004.png").width > 2 * 96
    with pytest.raises(CheckpointError, match=r"model\.family=baseline"):
        load_model(straight)  # the applications need COCO-GAN's patches
    config, model, _ = load_model(straight, family="baseline")
    assert isinstance(model, BaselineGAN) and config.model.family == "baseline"
    saved = {k: v for k, v in a.items() if k.startswith("generator_ema.") and "running" in k}
    model.recalibrate_ema(config.optim.batch, seed=4)  # what the Trainer does before saving
    again = {f"generator_ema.{k}": v for k, v in model.generator_ema.state_dict().items()}
    assert saved and all(torch.allclose(saved[k], again[k], atol=1e-6) for k in saved)
    live = {k.replace("generator_ema.", "generator."): v for k, v in saved.items()}
    assert any(not torch.equal(v, a[k]) for k, v in live.items())  # not the live G's


def test_baseline_family_refuses_what_it_cannot_do(tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert new_run(tmp_path / "run", "model.family=baseline", "model.full_height=48") == 2
    assert "model.family=baseline needs a power-of-two" in one_error_line(capsys)
    assert not (tmp_path / "run" / "config.yaml").exists()
    assert new_run(tmp_path / "run", "model.family=baseline", "--eval-every", "1") == 2
    assert "--eval-every evaluates COCO-GAN runs" in one_error_line(capsys)
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_batch_order_resumes_across_epochs() -> None:
    full = ResumableBatchSampler(10, 3, seed=5)
    expected = [b for _, b in zip(range(8), iter(full), strict=False)]
    later = ResumableBatchSampler(10, 3, seed=5, start=4)
    assert [b for _, b in zip(range(4), iter(later), strict=False)] == expected[4:]
    assert expected[0] != expected[3]  # epoch 1 is shuffled differently from epoch 0


def test_roll_panoramas_is_a_cyclic_shift() -> None:
    images = torch.arange(2 * 3 * 4 * 8, dtype=torch.float32).view(2, 3, 4, 8)
    rolled = roll_panoramas(images, torch.Generator().manual_seed(0))
    for original, shifted in zip(images, rolled, strict=True):
        assert any(torch.equal(torch.roll(original, s, dims=2), shifted) for s in range(8))


def test_interrupted_checkpoint_write_keeps_the_last_good_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    assert new_run(run) == 0
    good = load_file(run / "checkpoints" / "step-00000002.safetensors")

    write_bytes = Path.write_bytes

    def torn_write(path: Path, data: bytes) -> int:  # the state file fails half-way through
        if ".state.pt" not in path.name:
            return write_bytes(path, data)
        write_bytes(path, data[:100])
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(Path, "write_bytes", torn_write)
    assert train("--resume", run, "--steps", 4) == 2
    monkeypatch.undo()
    files = sorted(p.name for p in (run / "checkpoints").iterdir())
    # The weights of step 4 were written, its state was not: both go (no orphan, no temp
    # file) and step 2 stays the resume point.
    assert files == ["step-00000002.safetensors", "step-00000002.state.pt"]
    assert resumable_steps(run) == [2]
    assert all(torch.equal(v, load_file(run / "checkpoints" / "step-00000002.safetensors")[k])
               for k, v in good.items())
    assert train("--resume", run, "--steps", 4) == 0
    assert resumable_steps(run) == [2, 4]


def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [sys.executable, "-c", "import sys; from cocogan.cli import main; sys.exit(main())",
               "train", "--preset", PRESET, "--data", "builtin:blobs", "--out", str(run),
               "--steps", "100000", *SMALL, "run.checkpoint_every=100000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    deadline = time.monotonic() + 120
    metrics = run / "metrics.jsonl"
    while time.monotonic() < deadline and process.poll() is None:
        if metrics.is_file() and metrics.read_text().count("\n") >= 2:
            break
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err
    assert "Resume with: cocogan train --resume" in out and "Traceback" not in err
    steps = resumable_steps(run)
    assert len(steps) == 1 and steps[0] >= 2


def test_stop_before_the_first_step_still_leaves_a_resumable_run(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert new_run(run, "--dry-run") == 0
    config, spec = read_run(run)
    trainer = new_trainer(run, config, spec, open_dataset(config, spec.seed))
    stop = StopFlag()
    stop.request("SIGTERM")
    assert trainer.fit(stop) == "SIGTERM"
    assert resumable_steps(run) == [0]
    assert train("--resume", run, "--steps", 2) == 0
    assert resumable_steps(run) == [0, 2]


def test_pickled_and_foreign_checkpoints_are_refused(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = tmp_path / "run"
    assert new_run(run) == 0
    state_file = run / "checkpoints" / "step-00000002.state.pt"
    honest = state_file.read_bytes()
    torch.save({"format": "cocogan-train-state", "step": 2, "payload": Exploit()}, state_file)
    with pytest.raises(CheckpointError, match="pickled Python objects"):
        load_state(state_file)
    capsys.readouterr()
    assert train("--resume", run, "--steps", 3) == 2
    assert "pickled Python objects" in one_error_line(capsys)

    state_file.write_bytes(honest)
    weights = run / "checkpoints" / "step-00000002.safetensors"
    save_file({"weight": torch.zeros(3)}, str(weights))  # a safetensors file, but not ours
    assert train("--resume", run, "--steps", 3) == 2
    assert "not a cocogan checkpoint" in one_error_line(capsys)
    with pytest.raises(CheckpointError):
        load_model(weights)


class Exploit:
    """Stands for any pickled object: loading it would run code chosen by the file's author."""


@pytest.mark.parametrize("case", ["empty folder", "unknown preset", "no checkpoints",
                                  "resume with preset", "bad --set key", "missing --data"])
def test_bad_input_is_one_clear_line(case: str, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "run"
    if case == "no checkpoints":
        assert new_run(out, "--dry-run") == 0
        capsys.readouterr()
    args = {
        "empty folder": ["--preset", "tiny", "--data", empty, "--out", out],
        "unknown preset": ["--preset", "tiny2", "--data", "builtin:blobs", "--out", out],
        "no checkpoints": ["--resume", out],
        "resume with preset": ["--resume", out, "--preset", "tiny"],
        "bad --set key": ["--preset", "tiny", "--data", "builtin:blobs", "--out", out,
                          "--set", "train.learning_rate=1"],
        "missing --data": ["--preset", "tiny", "--out", out],
    }[case]
    assert train(*args) == 2
    line = one_error_line(capsys)
    expected = {"empty folder": "no usable images", "unknown preset": "unknown preset 'tiny2'",
                "no checkpoints": "no complete checkpoint", "resume with preset": "--preset",
                "bad --set key": "train.learning_rate", "missing --data": "--data"}[case]
    assert expected in line
    if case != "no checkpoints":
        assert not (out / "checkpoints").exists()


def test_dry_run_writes_only_the_config(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert new_run(run, "--dry-run") == 0
    assert sorted(p.name for p in run.iterdir()) == [".cocogan", "config.yaml", "run.yaml"]


def test_non_finite_loss_stops_without_saving(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    from cocogan.training.family import FAMILIES

    real_step = FAMILIES["cocogan"].step
    calls = []

    def exploding_step(*args: object, **kwargs: object) -> dict[str, float]:
        losses = real_step(*args, **kwargs)
        calls.append(1)
        if len(calls) == 3:
            losses["L_GP"] = float("nan")
        return losses

    monkeypatch.setitem(FAMILIES, "cocogan", dataclasses.replace(FAMILIES["cocogan"],
                                                                 step=exploding_step))
    run = tmp_path / "run"
    capsys.readouterr()
    assert new_run(run, steps=6) == 1
    line = one_error_line(capsys)
    assert "L_GP" in line and "step 3" in line
    assert resumable_steps(run) == [2]


def test_init_from_fine_tunes_beyond_the_boundary(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    base = tmp_path / "base"
    assert new_run(base) == 0
    tuned = tmp_path / "tuned"
    assert train("--init-from", base, "--extrapolate", "1", "--data", "builtin:blobs",
                 "--out", tuned, "--steps", 1, "--set", "data.num_workers=0") == 0
    config = Config.from_yaml((tuned / "config.yaml").read_text())
    assert config.loss.extrapolate == 1 and config.model.ngf == 8  # the base run's model
    # N4: the extrapolation step's values reach metrics.jsonl and TensorBoard
    record = json.loads((tuned / "metrics.jsonl").read_text().splitlines()[-1])
    assert all(np.isfinite(record[f"extrap/{k}"]) for k in ("L_W", "L_GP", "GP_norm_max"))
    events = b"".join(p.read_bytes() for p in (tuned / "tensorboard").iterdir())
    assert b"loss/extrap/L_W" in events and b"diagnostics/extrap/GP_norm_max" in events
    capsys.readouterr()
    other = tmp_path / "other"  # the plain preset is wider than the base run
    assert train("--init-from", base, "--preset", PRESET, "--data", "builtin:blobs",
                 "--out", other) == 2
    assert "model.ngf" in one_error_line(capsys) and not other.exists()
    assert train("--resume", base, "--steps", 1) == 2
    assert "below the step" in one_error_line(capsys)


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert new_run(run, "run.checkpoint_every=1", "run.keep_checkpoints=2", steps=4) == 0
    assert resumable_steps(run) == [3, 4]
    assert len(list((run / "checkpoints").iterdir())) == 4


# ---- review 2026-12, A3-A9 and B6: what each phase of a step may change ------------------------

def _effective_sigmas(generator: torch.nn.Module) -> dict[str, float]:
    """True largest singular value of every spectrally normalised weight, as used in eval mode."""
    generator.eval()
    sigmas = {}
    with torch.no_grad():
        for name, module in generator.named_modules():
            if torch.nn.utils.parametrize.is_parametrized(module, "weight"):
                weight = module.weight  # W / (u^T W v) with the module's own u, v
                matrix = weight.reshape(weight.shape[0], -1).double()
                sigmas[name] = float(torch.linalg.matrix_norm(matrix, ord=2))
    return sigmas


@pytest.mark.slow
def test_saved_ema_generator_is_spectrally_normalised_for_its_own_weights(
        tmp_path: Path) -> None:
    """A3: the EMA's u, v were the live G's, which left sigma_max up to ~1.2 (measured: 1.23
    after 150 tiny steps); the saved EMA must be normalised for its own weights."""
    run = tmp_path / "run"
    assert new_run(run, "optim.ema_warmup=0", "optim.ema_decay=0.99", "optim.ema_rampup=0",
                   "run.checkpoint_every=150", "run.sample_every=150", "run.log_every=50",
                   steps=150) == 0
    _, model, _ = load_model(run / "checkpoints" / "step-00000150.safetensors", "cpu")
    ema = _effective_sigmas(model.generator_ema)
    assert len(ema) > 10 and all(abs(s - 1.0) < 0.03 for s in ema.values()), ema
    # The test can see the defect: the EMA with the live G's u, v is off by more than that.
    live_uv = copy.deepcopy(model.generator_ema)
    for (name, buffer), (_, live) in zip(live_uv.named_buffers(),
                                         model.generator.named_buffers(), strict=True):
        if name.endswith(("._u", "._v")):
            buffer.copy_(live)
    assert max(abs(s - 1.0) for s in _effective_sigmas(live_uv).values()) > 0.03


def _tiny_model(preset: str = "tiny", **train: object) -> tuple:
    from cocogan import CocoGAN, get_preset
    from cocogan.training.step import build_optimizers

    config = get_preset(preset)
    config.model.ngf = config.model.ndf = 8
    config.model.z_dim, config.model.aux_hidden = 8, 16
    for key, value in train.items():
        setattr(config.section_of(key), key, value)
    torch.manual_seed(0)
    model = CocoGAN(config.model)
    images = torch.rand(4, 3, config.model.full_height, config.model.full_width,
                        generator=torch.Generator().manual_seed(1)) * 2 - 1
    return config, model, build_optimizers(model, config), images


def _tracked(module: torch.nn.Module) -> dict[str, int]:
    return {name: int(m.num_batches_tracked) for name, m in module.named_modules()
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)}


@pytest.mark.parametrize("sn_once", [True, False])
def test_each_network_changes_only_in_its_own_phase(sn_once: bool,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """A4, A7: G runs forward once per step (its batch norms advance once); D's batch norms
    track only D's own update (the spatial head on reals, once; Q's head on fakes, once), and
    D's weights build gradients only in D's backward, never in G's."""
    from cocogan.training import step as step_module

    config, model, optimizers, images = _tiny_model(w_content=1.0)
    D = model.discriminator
    g_forwards = []
    model.generator.register_forward_hook(lambda *args: g_forwards.append(1))
    grads = {name: 0 for name, _ in D.named_parameters()}
    for name, p in D.named_parameters():
        p.register_hook(lambda g, name=name: grads.__setitem__(name, grads[name] + 1))
    after_d: dict[str, torch.Tensor] = {}
    d_phase = step_module.Phases.d

    def recording_d_phase(*args, **kwargs):
        values = d_phase(*args, **kwargs)
        after_d.update({k: v.clone() for k, v in D.named_buffers()})
        return values

    monkeypatch.setattr(step_module.Phases, "d", recording_d_phase)
    g_before, d_before = _tracked(model.generator), _tracked(D)
    rng = torch.Generator().manual_seed(2)
    for _ in range(2):
        step_module.train_step(model, optimizers, images, config, rng, sn_once=sn_once)
    assert len(g_forwards) == 2
    assert all(_tracked(model.generator)[k] == v + 2 for k, v in g_before.items())
    assert all(_tracked(D)[k] == v + 2 for k, v in d_before.items())  # once per step
    # Every buffer of D (BN statistics, spectral norm's u, v) as D's own update left it.
    buffers = dict(D.named_buffers())
    assert after_d and all(torch.equal(buffers[k], v) for k, v in after_d.items())
    trunk = [k for k in grads if not k.startswith("content.")]
    assert all(grads[k] == 2 for k in trunk), {k: grads[k] for k in trunk}  # D's backward only
    # Q's head: D's loss (L_C) and Q's own update, not G's.
    assert all(grads[k] == 4 for k in grads if k.startswith("content.")), grads


def test_diagnostics_equal_an_independent_computation() -> None:
    """B6: D_real / D_fake / GP_norm of a step are D's mean scores and the penalty's gradient
    norms, recomputed here from a copy of the model and of the step's RNG."""
    from cocogan.model import generate_macro
    from cocogan.training.step import sample_step, train_step

    config, model, optimizers, images = _tiny_model()
    reference = copy.deepcopy(model)
    rng = torch.Generator().manual_seed(2)
    twin = torch.Generator().manual_seed(2)
    values = train_step(model, optimizers, images, config, rng, sn_once=True)

    step = sample_step(reference, images, config, twin)
    G, D = reference.generator, reference.discriminator
    G.train()
    D.train()
    with torch.no_grad():
        fake = generate_macro(G, reference.coords, step.z, step.rows, step.cols)
        D(step.real[:2], step.real_coords[:2])  # the step's one power iteration (all of D)
    D.eval()  # now the step's spectrally normalised weights, without further iterations
    with torch.no_grad():
        real_score = D.adversarial(D.features(step.real), step.real_coords)
        fake_score = D.adversarial(D.features(fake), step.fake_coords)
    assert float(values["D_real"]) == pytest.approx(float(real_score.mean()), rel=1e-4)
    assert float(values["D_fake"]) == pytest.approx(float(fake_score.mean()), rel=1e-4)
    assert float(values["L_W"]) == pytest.approx(float(values["D_real"] - values["D_fake"]),
                                                 rel=1e-5)
    alpha = torch.rand(4, 1, 1, 1, generator=twin)
    mixed = (alpha * step.real + (1 - alpha) * fake).requires_grad_(True)
    # N3: the penalty differentiates D's unconditional score, as the release (no projection)
    (grad,) = torch.autograd.grad(D.score(D.features(mixed)).sum(), mixed)
    norms = grad.flatten(1).norm(dim=1)
    assert float(values["GP_norm"]) == pytest.approx(float(norms.mean()), rel=1e-4)
    assert float(values["GP_norm_max"]) == pytest.approx(float(norms.max()), rel=1e-4)
    for name in ("g", "q"):  # each update's gradient norm: the norm of what it stepped with
        grads = [p.grad.flatten() for p in getattr(optimizers, name).param_groups[0]["params"]]
        assert float(values[f"grad_{name.upper()}"]) == pytest.approx(
            float(torch.cat(grads).norm()), rel=1e-5)


def test_diagnostics_reach_metrics_tensorboard_and_the_plot(tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert new_run(run, "run.log_every=2", steps=4) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    names = ("D_real", "D_fake", "GP_norm", "GP_norm_max", "grad_D", "grad_G", "grad_Q")
    for record in records:
        assert all(np.isfinite(record[k]) for k in names), record
        assert record["GP_norm_max"] >= record["GP_norm"] >= 0
        assert record["L_W"] == pytest.approx(record["D_real"] - record["D_fake"], rel=1e-4,
                                              abs=1e-5)
    events = b"".join(p.read_bytes() for p in (run / "tensorboard").iterdir())
    assert all(f"diagnostics/{k}".encode() in events for k in names)
    png = plot_metrics(run / "metrics.jsonl", tmp_path / "plot.png")
    assert png.stat().st_size > 0


def test_ema_warm_up_ramps_and_its_horizon_is_in_images() -> None:
    """A8: after the copy phase the half-life grows with the steps done (StyleGAN's rampup)
    instead of jumping to the full decay; ema_kimg gives one horizon in images per batch."""
    from cocogan.config import Config, OptimConfig
    from cocogan.training.loop import ema_beta, ema_decay

    betas = [ema_beta(step, 0.999, 10, 0.05) for step in range(20_000)]
    assert betas[:10] == [0.0] * 10
    assert 0.0 < betas[10] < 0.9  # a ramp, not a step to 0.999
    assert all(a <= b for a, b in itertools.pairwise(betas))  # never decreases
    assert betas[-1] == pytest.approx(0.999)
    half_life = np.log(0.5) / np.log(np.array(betas[10:]))  # steps
    assert np.all(half_life <= 0.05 * np.arange(11, 20_001) + 1e-6)
    assert ema_beta(5, 0.999, 0, 0.0) == 0.999  # rampup 0: full decay at once
    small, large = (Config(optim=OptimConfig(batch=b, ema_kimg=10.0)) for b in (16, 32))
    assert ema_decay(large) == pytest.approx(ema_decay(small) ** 2)  # same decay per image
    assert ema_decay(small) ** (10_000 / 16) == pytest.approx(0.5)
    assert ema_decay(Config(optim=OptimConfig(ema_decay=0.99))) == 0.99


def test_init_from_keeps_the_pre_trained_ema(tmp_path: Path) -> None:
    """A5: starting from weights, the first steps average into the loaded EMA instead of
    overwriting it with the raw G during the warm-up."""
    base = tmp_path / "base"
    assert new_run(base) == 0
    tuned = tmp_path / "tuned"
    assert train("--init-from", base, "--data", "builtin:blobs", "--out", tuned, "--steps", 1,
                 "--set", "data.num_workers=0", "optim.ema_warmup=100",
                 "optim.ema_decay=0.9") == 0
    _, start, _ = load_model(base / "checkpoints" / "step-00000002.safetensors", "cpu")
    _, end, _ = load_model(tuned / "checkpoints" / "step-00000001.safetensors", "cpu")
    name = "stem.parametrizations.weight.original"
    loaded = dict(start.generator_ema.named_parameters())[name]
    live = dict(end.generator.named_parameters())[name]
    torch.testing.assert_close(dict(end.generator_ema.named_parameters())[name],
                               0.9 * loaded + 0.1 * live)


@pytest.mark.parametrize("with_d", [False, True])
def test_init_from_an_inference_file_starts_g_from_its_ema(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], with_d: bool) -> None:
    """A shipped model or an export continues training: G and its EMA start from the file's
    EMA generator, D from the file's D where it has one, else from the seeded init (said)."""
    base, file, tuned = tmp_path / "base", tmp_path / "g.safetensors", tmp_path / "tuned"
    assert new_run(base) == 0
    assert main(["export", "--run", str(base), "--output", str(file),
                 *([] if with_d else ["--no-discriminator"])]) == 0
    capsys.readouterr()
    assert train("--init-from", file, "--data", "builtin:blobs", "--out", tuned,
                 "--dry-run") == 0
    config, spec = read_run(tuned)
    model = new_trainer(tuned, config, spec, open_dataset(config, spec.seed)).model
    told = "holds no discriminator" in capsys.readouterr().err
    _, source, _ = load_model(base, "cpu")
    ema, d = source.generator_ema.state_dict(), source.discriminator.state_dict()
    for network in (model.generator, model.generator_ema):
        assert all(torch.equal(v.cpu(), ema[k]) for k, v in network.state_dict().items())
    d_loaded = all(torch.equal(v.cpu(), d[k]) for k, v in model.discriminator.state_dict().items())
    assert d_loaded == with_d and told == (not with_d)


def test_extrapolation_step_trains_g_first_blocks_on_the_extended_grid(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A5, N4: a normal in-range step, then an extrapolation step whose fakes come from the
    extended grid, whose reals are independent in-range crops, whose D update has Adam moments
    of its own (the release's d_optim_extrap), and whose G update moves only G's first two
    blocks (their own optimiser); Q is updated once per iteration; the extra step's values are
    returned with an extrap/ prefix."""
    from cocogan.training import step as step_module

    config, model, optimizers, images = _tiny_model(extrapolate=1)
    G, coords = model.generator, model.coords
    first = {id(p) for p in G.blocks[:2].parameters()}
    assert optimizers.g_extrap is not None and optimizers.d_extrap is not None
    assert {id(p) for p in optimizers.g_extrap.param_groups[0]["params"]} == first
    d_params = [id(p) for p in optimizers.d.param_groups[0]["params"]]
    assert [id(p) for p in optimizers.d_extrap.param_groups[0]["params"]] == d_params
    batches, changes = [], []
    sample_step, g_phase = step_module.sample_step, step_module.Phases.g
    monkeypatch.setattr(step_module, "sample_step",
                        lambda *a, **k: batches.append(sample_step(*a, **k)) or batches[-1])

    def recording_g_phase(*args, **kwargs):
        before = {n: p.detach().clone() for n, p in G.named_parameters()}
        result = g_phase(*args, **kwargs)
        changes.append({n for n, p in G.named_parameters() if not torch.equal(before[n], p)})
        return result

    monkeypatch.setattr(step_module.Phases, "g", recording_g_phase)
    d_steps = {"d": 0, "d_extrap": 0, "q": 0}
    for name in d_steps:
        getattr(optimizers, name).register_step_post_hook(
            lambda *a, name=name: d_steps.__setitem__(name, d_steps[name] + 1))
    rng = torch.Generator().manual_seed(3)
    for _ in range(3):
        values = step_module.train_step(model, optimizers, images, config, rng)
    assert d_steps == {"d": 3, "d_extrap": 3, "q": 3}  # Q once per iteration
    moments = optimizers.d.state_dict()["state"][0]["exp_avg_sq"]
    extra = optimizers.d_extrap.state_dict()["state"][0]["exp_avg_sq"]
    assert not torch.equal(moments, extra)  # two sets of moments, each of its own gradients
    assert {"extrap/L_W", "extrap/L_GP", "extrap/L_S_real", "extrap/L_S_fake",
            "extrap/GP_norm_max", "extrap/loss_D", "extrap/loss_G"} <= set(values)
    assert not any(name.startswith("extrap/") and "Q" in name for name in values)
    normal, extra = batches[0::2], batches[1::2]
    assert all(bool(coords.in_bounds(b.rows, b.cols).all()) for b in normal)
    rows = torch.cat([b.rows for b in extra])
    cols = torch.cat([b.cols for b in extra])
    assert not bool(coords.in_bounds(rows, cols).all())  # the extended grid
    assert rows.min() >= -1 and rows.max() <= coords.macro_rows
    for b in extra:  # reals: crops at in-range positions of their own
        real_rows, real_cols = coords.decode_macro(b.real_coords)
        assert bool(coords.in_bounds(real_rows.round(), real_cols.round()).all())
    names = {n for n, p in G.named_parameters() if id(p) in first}
    assert changes[0] - names and all(c <= names and c for c in changes[1::2])


def test_ema_recalibration_draws_the_positions_training_draws(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A5: continuous and extrapolated runs recalibrate the EMA on their own positions."""
    _, model, _, _ = _tiny_model()
    calls = []
    original = type(model.coords).sample_macro
    monkeypatch.setattr(type(model.coords), "sample_macro",
                        lambda self, batch, **k: calls.append(k) or original(self, batch, **k))
    model.config.sampling = "continuous"
    model.recalibrate_ema(4, batches=4, extend=1)
    assert [c["extend"] for c in calls] == [0, 1, 0, 1]
    assert all(c["continuous"] for c in calls)
