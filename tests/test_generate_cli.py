"""End-to-end tests of `cocogan generate <app>` on saved tiny checkpoints (in-process CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch
from PIL import Image

from cocogan import CocoGAN, generate_macro, get_preset
from cocogan.checkpoint import save_model
from cocogan.cli import main


def save_run(root: Path, preset: str) -> Path:
    """A run directory holding one checkpoint of an untrained model with warmed BN statistics."""
    torch.manual_seed(3)
    config = get_preset(preset)
    model = CocoGAN(config.model)
    with torch.no_grad():
        for _ in range(4):
            rows, cols = model.coords.sample_macro(16)
            generate_macro(model.generator, model.coords, model.sample_z(16), rows, cols)
    model.generator_ema.load_state_dict(model.generator.state_dict())
    run = root / preset
    save_model(run / "checkpoints" / "step-00000007.safetensors", config, model, 7)
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {name: save_run(root, name) for name in ("tiny", "tiny-panorama")}


def generate(*argv: str) -> int:
    return main(["generate", *argv])


def png(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB")).astype(int)


def test_full_writes_images_grid_and_sidecars(runs: dict[str, Path], tmp_path: Path) -> None:
    assert generate("full", "--run", str(runs["tiny"]), "--seeds", "0-2,5", "--grid",
                    "--out", str(tmp_path), "--chunk", "20") == 0
    names = sorted(p.name for p in tmp_path.iterdir() if p.name != ".cocogan")  # the marker
    assert names == ["grid.json", "grid.png", "seed0000.json", "seed0000.png", "seed0001.json",
                     "seed0001.png", "seed0002.json", "seed0002.png", "seed0005.json",
                     "seed0005.png"]
    sidecar = json.loads((tmp_path / "seed0005.json").read_text())
    assert sidecar["seed"] == 5 and sidecar["step"] == 7 and sidecar["generator"] == "ema"
    assert sidecar["checkpoint"].endswith("step-00000007.safetensors")
    assert sidecar["coordinates"]["x"] == pytest.approx([-1, -1 / 3, 1 / 3, 1], abs=1e-6)
    assert png(tmp_path / "seed0000.png").shape == (32, 32, 3)
    # Default output folder: RUN/generated/<app>; --raw is recorded.
    assert generate("full", "--run", str(runs["tiny"]), "--seeds", "1", "--raw") == 0
    raw = json.loads((runs["tiny"] / "generated" / "full" / "seed0001.json").read_text())
    assert raw["generator"] == "raw"


def test_viewport_png_equals_crop_of_full_png(runs: dict[str, Path], tmp_path: Path) -> None:
    run = str(runs["tiny"])
    assert generate("full", "--run", run, "--seeds", "4", "--out", str(tmp_path)) == 0
    assert generate("viewport", "--run", run, "--seeds", "4", "--box", "6,10,17,20",
                    "--out", str(tmp_path)) == 0
    view, full = png(tmp_path / "viewport-seed0004.png"), png(tmp_path / "seed0004.png")
    assert np.abs(view - full[6:23, 10:30]).max() <= 1
    sidecar = json.loads((tmp_path / "viewport-seed0004.json").read_text())
    assert sidecar["patches_computed"] == 9 and sidecar["patches_full_image"] == 16


def test_panorama_viewport_and_twice(runs: dict[str, Path], tmp_path: Path) -> None:
    run = str(runs["tiny-panorama"])
    assert generate("panorama", "--run", run, "--seeds", "2", "--out", str(tmp_path)) == 0
    full = png(tmp_path / "panorama-seed0002.png")
    twice = png(tmp_path / "panorama-seed0002-720deg.png")
    assert full.shape == (32, 96, 3) and np.array_equal(twice, np.concatenate([full, full], 1))
    assert generate("viewport", "--run", run, "--seeds", "2", "--angles", "300,60", "--rows",
                    "8,32", "--out", str(tmp_path)) == 0
    view = png(tmp_path / "viewport-seed0002.png")
    assert np.abs(view - twice[8:32, 80:112]).max() <= 1


@pytest.mark.parametrize("mode,frames,shape", [("micro", 5, (10, 46)), ("spatial", 4, (10, 37)),
                                               ("full", 3, (34, 100))])
def test_interpolate_strip_and_gif(runs: dict[str, Path], tmp_path: Path, mode: str,
                                   frames: int, shape: tuple[int, int]) -> None:
    seeds = "3" if mode == "spatial" else "3,4"
    assert generate("interpolate", mode, "--run", str(runs["tiny"]), "--seeds", seeds,
                    "--frames", str(frames), "--out", str(tmp_path)) == 0
    stem = f"interpolate-{mode}-" + "-".join(f"{int(s):04d}" for s in seeds.split(","))
    assert png(tmp_path / f"{stem}.png").shape[:2] == shape  # 1-pixel gaps between frames
    with Image.open(tmp_path / f"{stem}.gif") as gif:
        assert gif.n_frames == frames
    assert json.loads((tmp_path / f"{stem}.json").read_text())["frames"] == frames


def test_inspire_from_image_box_and_from_patch(runs: dict[str, Path], tmp_path: Path,
                                               capsys: pytest.CaptureFixture) -> None:
    run = str(runs["tiny"])
    assert generate("full", "--run", run, "--seeds", "9", "--out", str(tmp_path)) == 0
    assert generate("inspire", "--run", run, "--image", str(tmp_path / "seed0009.png"),
                    "--box", "8,16", "--out", str(tmp_path)) == 0
    assert "loss.w_content=0" in capsys.readouterr().err  # the run was not patch-inspired
    for part, size in (("input", (16, 16)), ("macro", (16, 16)), ("position", (32, 32)),
                       ("full", (32, 32)), ("real", (32, 32))):
        assert png(tmp_path / f"inspire-seed0009-{part}.png").shape[:2] == size
    sidecar = json.loads((tmp_path / "inspire-seed0009.json").read_text())
    assert set(sidecar["estimated_position"]) == {"row", "col"}
    assert len(sidecar["estimated_z"]) == 32
    assert generate("inspire", "--run", run, "--patch",
                    str(tmp_path / "inspire-seed0009-input.png"), "--out", str(tmp_path)) == 0


def test_beyond_and_huge(runs: dict[str, Path], tmp_path: Path) -> None:
    run = str(runs["tiny"])
    assert generate("beyond", "--run", run, "--seeds", "1", "--extend", "1,2,0,1",
                    "--out", str(tmp_path)) == 0
    assert png(tmp_path / "beyond-seed0001.png").shape == (56, 40, 3)
    assert generate("huge", "--run", run, "--seed", "1", "--size", "48,64", "--tile", "16",
                    "--no-progress", "--out", str(tmp_path)) == 0
    image = tifffile.imread(tmp_path / "huge-seed0001-48x64.tif")
    assert image.shape == (48, 64, 3)
    sidecar = json.loads((tmp_path / "huge-seed0001-48x64.json").read_text())
    assert sidecar["origin"] == [-1, -2] and sidecar["size"] == [48, 64]
    out = tmp_path / "h.png"
    assert generate("huge", "--run", run, "--seed", "1", "--size", "48,64", "--output", str(out),
                    "--no-progress") == 0
    assert np.abs(png(out) - image.astype(int)).max() <= 1


@pytest.mark.parametrize("argv,message", [
    (["viewport", "--box", "20,20,16,16"], "leaves the 32x32 image"),
    (["viewport", "--angles", "0,90"], "takes --box"),
    (["viewport", "--box", "1,2,3"], "expects 4 comma-separated values"),
    (["inspire", "--image", "{img}", "--box", "24,0"], "leaves the 32x32 image"),
    (["inspire", "--image", "{big}", "--box", "0,0"], "must be 32x32"),
    (["inspire", "--patch", "{img}"], "16x16"),
    (["inspire"], "--image FILE --box"),
    (["huge", "--size", "100"], "multiple of the 8-pixel micro patch"),
    (["huge", "--size", "64", "--tile", "24"], "--tile"),
    (["full", "--seeds", "5-2"], "--seeds"),
    (["full", "--chunk", "0"], "--chunk"),
    (["panorama"], "needs a cylindrical run"),
    (["beyond", "--extend", "-1"], "--extend"),
    (["interpolate", "full", "--seeds", "1"], "takes 2 seed(s)"),
    (["interpolate", "micro", "--frames", "1"], "--frames"),
])
def test_bad_input_is_one_clear_line(runs: dict[str, Path], tmp_path: Path,
                                     capsys: pytest.CaptureFixture, argv: list[str],
                                     message: str) -> None:
    Image.new("RGB", (32, 32)).save(tmp_path / "img.png")
    Image.new("RGB", (64, 48)).save(tmp_path / "big.png")
    argv = [a.format(img=tmp_path / "img.png", big=tmp_path / "big.png") for a in argv]
    code = generate(argv[0], "--run", str(runs["tiny"]), "--out", str(tmp_path / "out"),
                    *argv[1:])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err


def test_missing_run_and_cylindrical_box_errors(runs: dict[str, Path], tmp_path: Path,
                                                capsys: pytest.CaptureFixture) -> None:
    assert generate("full", "--run", str(tmp_path / "nowhere")) == 2
    assert "does not exist" in capsys.readouterr().err
    assert generate("viewport", "--run", str(runs["tiny-panorama"]), "--box", "0,0,8,8") == 2
    assert "--angles" in capsys.readouterr().err
    assert generate("beyond", "--run", str(runs["tiny-panorama"]), "--extend", "1") == 2
    assert "no left or right border" in capsys.readouterr().err
