"""Shipped trained models (cocogan.shipped): every model in the package folder draws the images
its figures were measured on (a fixed-seed fingerprint) and runs every application its card
lists; the registry, `cocogan models`, `--run NAME` in every command and `cocogan serve` without
--run, on fixture models trained for a few steps (``$COCOGAN_SHIPPED_DIR``)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import urllib.request
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from safetensors.torch import load_file, save_file

from cocogan import shipped
from cocogan.apps import APPLICATIONS
from cocogan.apps.fingerprint import fingerprint
from cocogan.checkpoint import CheckpointError, load_model, read_metadata, resolve_checkpoint
from cocogan.cli import main

MEAN_TOLERANCE = 1e-5  # thread counts and CPUs move the float mean by ~1e-7
MAX_TOTAL_BYTES = 20 << 20  # issue 17: 20 MB of shipped models at most
PACKAGED = shipped.all_versions(shipped.PACKAGE_DIR)  # the lead's files, when present


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


# ---- the checks every shipped model must pass (used on the package's and the fixtures') -------
def check_fingerprint(model: shipped.ShippedModel) -> None:
    """The file draws the card's images: the uint8 pixels' sha256 equal, or (when rounding of a
    pixel flips on this CPU) the float mean within MEAN_TOLERANCE."""
    card = model.card["fingerprint"]
    got = fingerprint(model.path, card["seed"], card["count"])
    if got["sha256"] != card["sha256"]:
        assert got["mean"] == pytest.approx(card["mean"], abs=MEAN_TOLERANCE), (model.key, got)
        warnings.warn(f"{model.key}: pixels differ in rounding on this CPU (sha256 {got['sha256']}"
                      f"), mean within {MEAN_TOLERANCE:g}", stacklevel=2)
    else:
        assert got["mean"] == pytest.approx(card["mean"], abs=MEAN_TOLERANCE)


def app_arguments(app: str, cyclic: bool, work: Path) -> list[str]:
    """Small arguments for each application (a few images)."""
    return {
        "full": ["--seeds", "0-1", "--grid"],
        "viewport": ["--angles", "350,20"] if cyclic else ["--box", "0,0,16,16"],
        "panorama": ["--seeds", "0", "--degrees", "90"],
        "interpolate": ["micro", "--frames", "3"],
        "inspire": ["--image", str(work / "generated" / "probe" / "seed0000.png"),
                    "--box", "0,0"],
        "beyond": ["--seeds", "0", "--extend", "1,1,0,0" if cyclic else "1"],
        "huge": ["--size", "64", "--no-progress"],
    }[app]


def check_applications(value: str, applications: list[str], work: Path) -> None:
    """Run every application through the CLI with `--run value` into ./generated (the current
    folder is ``work``); each writes files, and nothing is written beside the model file."""
    assert applications and set(applications) <= set(APPLICATIONS), applications
    file = resolve_checkpoint(value)
    before = sorted(file.parent.iterdir())
    config, _, _ = load_model(file)
    cyclic = config.model.coords == "cylindrical"
    assert main(["generate", "full", "--run", value, "--seeds", "0",
                 "--out", str(work / "generated" / "probe"), "--device", "cpu"]) == 0
    for app in applications:
        argv = ["generate", app, "--run", value, "--device", "cpu",
                *app_arguments(app, cyclic, work)]
        assert main(argv) == 0, argv
        written = [p for p in (work / "generated" / value / app).iterdir()
                   if p.suffix in (".png", ".gif", ".tif")]
        assert written, app
    assert sorted(file.parent.iterdir()) == before


# ---- the models in the package folder (none until the lead ships them) -------------------------
@pytest.mark.parametrize("model", PACKAGED, ids=lambda m: m.key)
def test_packaged_model_draws_its_fingerprint(model: shipped.ShippedModel) -> None:
    check_fingerprint(model)


@pytest.mark.parametrize("model", PACKAGED, ids=lambda m: m.key)
def test_packaged_model_runs_its_applications(model: shipped.ShippedModel, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(shipped.DIR_ENV, raising=False)
    monkeypatch.chdir(tmp_path)
    check_applications(model.key, model.card["applications"], tmp_path)


def test_packaged_models_are_small_inference_files_with_cards() -> None:
    assert sum(m.size for m in PACKAGED) <= MAX_TOTAL_BYTES
    stems = {p.stem for p in shipped.PACKAGE_DIR.glob("*.json")}
    assert stems == {m.key for m in PACKAGED}  # no card without its file
    for model in PACKAGED:
        contents = read_metadata(model.path).get("contents")
        assert contents in ("generator_ema", "generator_ema+discriminator"), model.key
        with_d = contents == "generator_ema+discriminator"  # inspire needs D and Q
        assert ("inspire" in model.card["applications"]) == with_d, model.key
        assert "TODO" not in json.dumps(model.card)


# ---- fixture models: the machinery --------------------------------------------------------------
@pytest.fixture(scope="module")
def fixture_dir(trained_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
                ) -> Path:
    """A registry folder as the lead fills one, from the shared 3-step runs (conftest):
    blobs-v1 (tiny-inspired on blobs, with D), blobs-v2 (the same weights, another card) and
    skyline-v1 (tiny-panorama, the EMA generator alone), each exported, then fingerprinted by
    `cocogan models --fingerprint FILE --write` and described."""
    folder = tmp_path_factory.mktemp("shipped")
    for name, run in (("blobs-v1", trained_runs["tiny-inspired"]),
                      ("skyline-v1", trained_runs["tiny-panorama"])):
        file = folder / f"{name}.safetensors"
        alone = ["--no-discriminator"] if name == "skyline-v1" else []
        assert main(["export", "--run", str(run), "--output", str(file), *alone]) == 0
        assert main(["models", "--fingerprint", str(file), "--write"]) == 0
        card = json.loads(file.with_suffix(".json").read_text())
        card.update(description=f"{name} fixture", data=f"builtin:{name[:-3]}", train_seconds=1.5,
                    command=f"cocogan train --out {name}", matmul_gflops=44.0,
                    figures={"swd": 89.25, "seams": 1.02})
        file.with_suffix(".json").write_text(json.dumps(card))
    shutil.copy(folder / "blobs-v1.safetensors", folder / "blobs-v2.safetensors")
    card = json.loads((folder / "blobs-v1.json").read_text())
    (folder / "blobs-v2.json").write_text(json.dumps({**card, "version": 2,
                                                      "description": "the second blobs"}))
    return folder


@pytest.fixture
def registry(fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The fixture models as the registry; the current folder is an empty tmp_path."""
    monkeypatch.setenv(shipped.DIR_ENV, str(fixture_dir))
    monkeypatch.chdir(tmp_path)
    return fixture_dir


def test_newest_version_per_name_and_lookup(registry: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert [(m.name, m.version) for m in shipped.models()] == [("blobs", 2), ("skyline", 1)]
    assert shipped.find("blobs").path == registry / "blobs-v2.safetensors"
    assert shipped.find("blobs-v1").path == registry / "blobs-v1.safetensors"
    assert resolve_checkpoint("skyline") == registry / "skyline-v1.safetensors"
    assert shipped.find("emoji32") is None
    assert main(["generate", "full", "--run", "emoji32"]) == 2
    assert "shipped: blobs, skyline" in one_line(capsys)
    Path("blobs").mkdir()  # an existing path always wins over a shipped name
    with pytest.raises(CheckpointError, match="no checkpoints under blobs"):
        resolve_checkpoint("blobs")


def test_a_card_without_a_field_is_a_one_line_error(fixture_dir: Path, tmp_path: Path) -> None:
    shutil.copy(fixture_dir / "skyline-v1.safetensors", tmp_path / "sky-v3.safetensors")
    card = json.loads((fixture_dir / "skyline-v1.json").read_text())
    del card["command"]
    (tmp_path / "sky-v3.json").write_text(json.dumps({**card, "name": "sky", "version": 3}))
    assert shipped.models(tmp_path) == []  # listed nowhere; its name says why
    with pytest.raises(shipped.ShippedError, match=r"lacks or mistypes: command$"):
        shipped.find("sky", tmp_path).verified()
    (tmp_path / "sky-v3.json").write_text(json.dumps({**card, "command": "x"}))
    with pytest.raises(shipped.ShippedError, match="the file says sky v3"):
        shipped.find("sky-v3", tmp_path).verified()
    assert shipped.models(tmp_path / "empty") == []


@pytest.fixture
def own_registry(fixture_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A copy of the fixture registry that a test may break; the current folder is tmp_path."""
    folder = tmp_path / "registry"
    shutil.copytree(fixture_dir, folder)
    monkeypatch.setenv(shipped.DIR_ENV, str(folder))
    monkeypatch.chdir(tmp_path)
    return folder


def test_one_broken_card_leaves_the_other_names_usable(
        own_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27.11: a broken card once made every shipped name fail."""
    (own_registry / "blobs-v2.json").write_text("{not json")
    assert resolve_checkpoint("skyline") == own_registry / "skyline-v1.safetensors"
    assert main(["models"]) == 0
    captured = capsys.readouterr()
    assert captured.out.splitlines()[0] == "skyline"
    assert "blobs-v2.safetensors has no readable card" in captured.err
    assert main(["generate", "full", "--run", "blobs", "--seeds", "0", "--device", "cpu"]) == 2
    assert "has no readable card blobs-v2.json" in one_line(capsys)
    assert main(["generate", "full", "--run", "blobs-v1", "--seeds", "0", "--device", "cpu"]) == 0


def test_a_swapped_weights_file_is_refused_before_loading(
        own_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27.11: the file is checked against the SHA-256 its card holds."""
    card = json.loads((own_registry / "skyline-v1.json").read_text())
    assert card["weights_sha256"] == hashlib.sha256(
        (own_registry / "skyline-v1.safetensors").read_bytes()).hexdigest()
    shutil.copy(own_registry / "blobs-v1.safetensors", own_registry / "skyline-v1.safetensors")
    assert main(["generate", "full", "--run", "skyline", "--seeds", "0", "--device", "cpu"]) == 2
    assert "not the file its card describes (SHA-256 differs)" in one_line(capsys)
    assert not Path("generated").exists()


def test_a_local_folder_named_like_a_shipped_model_is_used_and_named(
        registry: Path, trained_runs: dict[str, Path], capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 27.11: ./skyline shadowed the shipped skyline without a word."""
    from cocogan import checkpoint

    monkeypatch.setattr(checkpoint, "_ANNOUNCED", set())
    shutil.copytree(trained_runs["tiny-inspired"], "skyline")
    file = resolve_checkpoint("skyline")
    assert file.parent == Path("skyline/checkpoints")
    resolve_checkpoint("skyline")
    notes = capsys.readouterr().err.strip().splitlines()
    assert len(notes) == 1 and "using the local folder" in notes[0]
    assert "not the shipped model skyline" in notes[0]


def test_card_text_is_bounded_and_without_escapes(
        own_registry: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 27.13: a card's text was echoed whole (900 KB lines) with raw ANSI escapes."""
    card = json.loads((own_registry / "skyline-v1.json").read_text())
    card["description"] = "\x1b[2J\x1b]0;owned\x07sky" + "x" * 900_000
    card["figures"] = {"\x1b[31mswd": 1.0}
    (own_registry / "skyline-v1.json").write_text(json.dumps(card))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "sky" in out
    assert max(map(len, out.splitlines())) < 1100
    assert main(["models", "--json"]) == 0
    assert "\\u001b" not in capsys.readouterr().out


def test_fingerprint_is_that_of_generate_full_and_sees_a_changed_weight(
        registry: Path, tmp_path: Path) -> None:
    """The card's sha256 is that of the PNGs `cocogan generate full --run NAME` writes (default
    seeds 0-7) into ./generated/NAME/full, and a weight changed by 1% changes the mean."""
    model = shipped.find("skyline")
    assert main(["generate", "full", "--run", "skyline", "--device", "cpu"]) == 0
    pngs = sorted((tmp_path / "generated" / "skyline" / "full").glob("seed*.png"))
    assert [p.name for p in pngs] == [f"seed{s:04d}.png" for s in range(8)]
    pixels = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    assert hashlib.sha256(pixels.tobytes()).hexdigest() == model.card["fingerprint"]["sha256"]
    assert model.card["fingerprint"]["mean"] == pytest.approx(
        float((pixels.astype(np.float64) / 127.5 - 1.0).mean()), abs=1 / 255)
    check_fingerprint(model)
    tensors = load_file(str(model.path))
    key = next(k for k in tensors if k.endswith("tail_conv.bias"))
    tensors[key] = tensors[key] + 0.05
    changed = tmp_path / "changed.safetensors"
    save_file(tensors, str(changed), metadata=read_metadata(model.path))
    other = fingerprint(changed)
    assert other["sha256"] != model.card["fingerprint"]["sha256"]
    assert abs(other["mean"] - model.card["fingerprint"]["mean"]) > 100 * MEAN_TOLERANCE


@pytest.mark.parametrize("name", ["blobs", "skyline"])
def test_fixture_models_run_their_applications(registry: Path, tmp_path: Path,
                                               name: str) -> None:
    model = shipped.find(name)
    expected = ["full", "viewport", "interpolate", "beyond", "huge"]
    if name == "skyline":  # cylindrical, the EMA generator alone
        expected.insert(2, "panorama")
    else:  # exported with D: patch-inspired generation too
        expected.insert(3, "inspire")
    assert model.card["applications"] == expected  # what --fingerprint --write suggested
    check_applications(name, model.card["applications"], tmp_path)
    assert (tmp_path / "generated" / name / "huge" / "huge-seed0000-64x64.tif").is_file()


def test_models_command_lists_names_then_details(registry: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[:3] == ["blobs", "skyline", ""]
    text = "\n".join(lines[3:])
    assert "blobs (v2): the second blobs" in text and "skyline (v1): skyline-v1 fixture" in text
    assert "3 steps" in text and "swd 89.25, seams 1.02" in text and "3.1 MB" in text
    assert main(["models", "--json"]) == 0
    cards = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["version"]) for c in cards] == [("blobs", 2), ("skyline", 1)]
    assert cards[1]["path"] == str(registry / "skyline-v1.safetensors")
    assert cards[1]["size"] == (registry / "skyline-v1.safetensors").stat().st_size
    assert cards[1]["steps"] == 3 and cards[1]["fingerprint"]["count"] == 8


def test_no_models_shipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(shipped.DIR_ENV, str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1 and out[0].startswith("no trained models are shipped")
    assert main(["models", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []
    assert main(["serve", "--port", "0"]) == 2
    assert "pass --run" in one_line(capsys)


def test_eval_export_and_init_from_take_a_shipped_name(
        registry: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = sorted(registry.iterdir())
    assert main(["eval", "--run", "skyline", "--real", "builtin:skyline", "--metrics", "swd",
                 "--n", "8", "--batch", "8", "--no-cache", "--device", "cpu"]) == 0
    record = json.loads((tmp_path / "generated" / "skyline" / "eval.json").read_text())
    assert record["checkpoint"] == str(registry / "skyline-v1.safetensors")
    assert main(["export", "--run", "blobs-v1", "--output", "blobs.safetensors"]) == 0
    assert fingerprint("blobs.safetensors") == shipped.find("blobs-v1").card[
        "fingerprint"]
    capsys.readouterr()
    for name, told in (("blobs", False), ("skyline", True)):
        assert main(["train", "--init-from", name, "--data", f"builtin:{name}", "--steps", "1",
                     "--out", f"ft-{name}", "--device", "cpu",
                     "--set", "data.num_workers=0"]) == 0
        assert ("holds no discriminator" in capsys.readouterr().err) == told
    assert sorted(registry.iterdir()) == before


def test_serve_loads_shipped_names(registry: Path) -> None:
    pytest.importorskip("starlette", reason="cocogan serve needs the serve extra")
    from cocogan.serve.app import load_runs

    runs = load_runs(["blobs", "skyline-v1"], cache_bytes=1 << 20)
    try:
        assert [run.name for run in runs] == ["blobs", "skyline-v1"]
        assert [run.describe(i)["name"] for i, run in enumerate(runs)] == ["blobs", "skyline-v1"]
    finally:
        for run in runs:
            run.renderer.close()


def test_serve_without_run_serves_every_shipped_model(registry: Path) -> None:
    pytest.importorskip("uvicorn", reason="cocogan serve needs the serve extra")
    env = {**os.environ, "OMP_NUM_THREADS": "1", shipped.DIR_ENV: str(registry)}
    command = "import sys; from cocogan.cli import main; sys.exit(main())"
    process = subprocess.Popen([sys.executable, "-c", command, "serve", "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, env=env)
    try:
        line = process.stdout.readline()
        assert line.startswith("cocogan serve: 2 run(s) at http://127.0.0.1:"), (
            line, process.stderr.read() if process.poll() is not None else "")
        url = line.split(" at ")[1].split()[0]
        with urllib.request.urlopen(url + "api/runs", timeout=30) as response:
            names = [run["name"] for run in json.loads(response.read())]
        assert names == ["blobs", "skyline"]
        with urllib.request.urlopen(url + "api/runs/1/tile?y=0&x=5&seed=1", timeout=30) as r:
            assert r.headers["Content-Type"] == "image/png"
    finally:
        process.terminate()
        process.wait(timeout=30)
