"""`cocogan export`: the ONNX graph against the PyTorch generator, the model card's coordinate
recipe against the package's coordinates, the inference-only safetensors file in every --run
command, the documented outside-Python example, and one-line errors.

The ONNX tests need the optional extra (pip install 'cocogan[export]'; scripts/setup.sh
installs it) and skip with a message without it.
"""

from __future__ import annotations

import ast
import asyncio
import errno
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors import safe_open
from safetensors.torch import load_file
from safetensors.torch import save_file as save_safetensors

from cocogan.apps import full_images, latents, wrap_view
from cocogan.apps.fingerprint import supported_applications
from cocogan.apps.io import to_uint8
from cocogan.checkpoint import EMA_PREFIX, load_model, resolve_checkpoint
from cocogan.cli import main
from cocogan.export import (
    INPUTS,
    OUTPUT,
    coordinate_recipe,
    export_run,
)
from cocogan.nn.fused import NARROW, TARGETS, fuse_for_inference
from cocogan.nn.generator import Generator

ROOT = Path(__file__).resolve().parents[1]
TOLERANCE = 1e-4  # the bar for onnxruntime against PyTorch
_MISSING = [name for name in ("onnx", "onnxscript", "onnxruntime")
            if importlib.util.find_spec(name) is None]
needs_onnx = pytest.mark.skipif(
    bool(_MISSING), reason=f"the export extra is not installed (missing {', '.join(_MISSING)}):"
    " pip install 'cocogan[export]'")


def one_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single error line of a failed command (no traceback)."""
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if "error:" in line]
    assert len(errors) == 1 and "Traceback" not in "\n".join(err), err
    return errors[0]


@pytest.fixture(scope="module")
def runs(trained_runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
         ) -> dict[str, Path]:
    """`tiny` trained 3 steps here and the shared 3-step `tiny-panorama` run."""
    root = tmp_path_factory.mktemp("export-runs")
    assert main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--steps", "3",
                 "--out", str(root / "tiny"), "--device", "cpu"]) == 0
    return {"tiny": root / "tiny", "tiny-panorama": trained_runs["tiny-panorama"]}


@pytest.fixture(scope="module")
def exported(runs: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
             ) -> dict[str, Path]:
    """Each run exported to ONNX by the CLI (once per module: an export takes ~10 s)."""
    if _MISSING:
        pytest.skip(f"the export extra is not installed (missing {', '.join(_MISSING)})")
    root = tmp_path_factory.mktemp("onnx")
    files = {}
    for preset, run in runs.items():
        files[preset] = root / preset / "g.onnx"
        assert main(["export", "--run", str(run), "--output", str(files[preset])]) == 0
    return files


def session(path: Path):  # -> onnxruntime.InferenceSession (an optional package)
    import onnxruntime

    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def ort_patches(path: Path, z: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    out = session(path).run(None, {"z": z.numpy(), "coords": coords.float().numpy()})[0]
    return torch.from_numpy(out)


# ---- ONNX against PyTorch -------------------------------------------------------------------
@needs_onnx
@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
def test_onnx_matches_the_eval_mode_generator(exported: dict, runs: dict, preset: str) -> None:
    _, model, _ = load_model(runs[preset])
    coords = model.coords
    rng = torch.Generator().manual_seed(1)
    count = 97
    rows = torch.rand(count, generator=rng) * (coords.grid_h + 2) - 1  # fractional and beyond
    cols = torch.rand(count, generator=rng) * (coords.grid_w + 2) - 1
    rows[::3], cols[::3] = rows[::3].round(), cols[::3].round()
    c = coords.micro_coords(rows, cols)
    z = torch.rand(count, model.config.z_dim, generator=rng) * 2 - 1
    with torch.no_grad():
        expected = model.generator_ema.eval()(z, c)
    got = ort_patches(exported[preset], z, c)
    assert got.shape == (count, 3, coords.micro, coords.micro)
    diff = float((got - expected).abs().max())
    print(f"{preset}: onnxruntime vs PyTorch eval-mode EMA G, max |diff| {diff:.2g}")
    assert diff <= TOLERANCE
    one = ort_patches(exported[preset], z[:1], c[:1])  # batch 1: the batch really is dynamic
    assert float((one - expected[:1]).abs().max()) <= TOLERANCE
    assert float(expected.abs().max()) > 0.01  # not a degenerate all-zero comparison


@needs_onnx
@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
def test_onnx_full_image_is_generate_full(exported: dict, runs: dict, preset: str,
                                          tmp_path: Path) -> None:
    """Patches from onnxruntime tiled as T(m->M) give `cocogan generate full`'s image."""
    _, model, _ = load_model(runs[preset])
    seeds = [0, 3]
    z = latents(seeds, model.config.z_dim)
    rows, cols = model.coords.micro_grid()
    c = model.coords.micro_coords(rows, cols)  # (P, D)
    images = []
    for index in range(len(seeds)):
        patches = ort_patches(exported[preset], z[index].expand(len(rows), -1), c)
        micro = model.coords.micro
        grid = patches.view(model.coords.grid_h, model.coords.grid_w, 3, micro, micro)
        images.append(grid.permute(2, 0, 3, 1, 4).reshape(3, model.config.full_height,
                                                          model.config.full_width))
    onnx_images = torch.stack(images)
    reference = full_images(model, z)
    diff = float((onnx_images - reference).abs().max())
    print(f"{preset}: full image from onnxruntime patches vs full_images, max |diff| {diff:.2g}")
    assert diff <= TOLERANCE
    assert main(["generate", "full", "--run", str(runs[preset]), "--seeds", "0,3", "--out",
                 str(tmp_path), "--device", "cpu"]) == 0
    for seed, image in zip(seeds, onnx_images, strict=True):
        png = np.asarray(Image.open(tmp_path / f"seed{seed:04d}.png").convert("RGB"))
        assert np.abs(to_uint8(image).astype(int) - png).max() <= 1  # 8-bit rounding only


@needs_onnx
def test_onnx_graph_is_inference_only(exported: dict, runs: dict) -> None:
    """Spectral norm is baked into the weights (the eval-mode W / sigma, not the stored W) and
    batch norm folded into affines (the running statistics: no BatchNormalization node left);
    the upsampled 3x3 convs from 3x3 inputs on are transposed 4x4 convs (cocogan.nn.fused)."""
    import onnx
    from onnx import numpy_helper

    proto = onnx.load(str(exported["tiny"]))
    _, model, _ = load_model(runs["tiny"])
    stem = model.generator_ema.stem
    with torch.no_grad():
        normalised = stem.weight.numpy()
    original = stem.parametrizations.weight.original.detach().numpy()
    weights = [numpy_helper.to_array(t) for t in proto.graph.initializer]
    matches = [w for w in weights if w.size == normalised.size]
    assert any(np.allclose(w.reshape(-1), normalised.reshape(-1), atol=1e-7) or
               np.allclose(w.T.reshape(-1), normalised.reshape(-1), atol=1e-7) for w in matches)
    assert not any(np.allclose(w.reshape(-1), original.reshape(-1)) for w in matches)
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "ConvTranspose" in ops
    assert {i.name for i in proto.graph.input} == set(INPUTS)
    assert [o.name for o in proto.graph.output] == [OUTPUT]
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim]
            for i in [*proto.graph.input, *proto.graph.output]}
    assert dims["z"][1:] == [32] and dims["coords"][1:] == [2] and dims[OUTPUT][1:] == [3, 8, 8]
    assert all(isinstance(d[0], str) and d[0] for d in dims.values())  # symbolic batch


def test_fused_generator_is_the_eval_forward_and_leaves_the_source_intact(runs: dict) -> None:
    """The inference rewrite equals the eval-mode forward to 1e-5, margin canvases (border
    pixels, where the zero padding acts) included, in training or eval mode; the source keeps its
    parametrizations, weights and mode."""
    _, model, _ = load_model(runs["tiny-panorama"])
    z = latents([0, 1, 2], model.config.z_dim)
    c = model.coords.micro_coords(torch.tensor([0.0, 1.5, 3.0]), torch.tensor([0.0, 5.0, 11.0]))
    source = model.generator_ema.train()
    with torch.no_grad():
        for target in TARGETS:
            fused = fuse_for_inference(source, target)
            assert source.training and not fused.training
            assert fused.channels_last == (target == "torch")  # a narrow generator
            before = source.eval()(z, c, keep_margin=True)
            assert (fused(z, c, keep_margin=True) - before).abs().max() < 1e-5
            assert (fused(z, c) - source(z, c)).abs().max() < 1e-5
            assert torch.equal(source(z, c, keep_margin=True), before)
            source.train()
    assert hasattr(source.stem, "parametrizations")


def test_fused_wide_generator_keeps_nchw_and_matches() -> None:
    """A wide generator (stem over NARROW channels, celeba64's) stays NCHW for torch, and both
    targets equal its eval forward."""
    torch.manual_seed(0)
    source = Generator(z_dim=8, coord_dim=2, micro=16, ngf=48).eval()
    assert source.stem_channels > NARROW
    z, c = torch.rand(4, 8) * 2 - 1, torch.rand(4, 2) * 2 - 1
    with torch.no_grad():
        expected = source(z, c)
        for target in TARGETS:
            fused = fuse_for_inference(source, target)
            assert not fused.channels_last
            assert (fused(z, c) - expected).abs().max() < 1e-5


# ---- the model card -------------------------------------------------------------------------
def card_coordinates(card: dict, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """The card's recipe, written from its text alone (not from cocogan.coords)."""
    recipe = card["coordinates"]
    y = recipe["y"]["offset"] + recipe["y"]["step"] * rows
    if card["coordinate_system"] == "cylindrical":
        theta = recipe["theta"]["offset"] + recipe["theta"]["step"] * np.mod(
            cols, recipe["theta"]["period_cols"])
        return np.stack([y, np.cos(np.pi * theta), np.sin(np.pi * theta)], 1)
    return np.stack([y, recipe["x"]["offset"] + recipe["x"]["step"] * cols], 1)


@needs_onnx
@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
def test_card_recipe_gives_the_models_coordinates(exported: dict, runs: dict,
                                                  preset: str) -> None:
    import onnx

    card = json.loads(exported[preset].with_suffix(".json").read_text())
    metadata = {p.key: p.value for p in onnx.load(str(exported[preset])).metadata_props}
    assert json.loads(metadata["cocogan"]) == card
    config, model, step = load_model(runs[preset])
    coords = model.coords
    assert card["grid"] == {"rows": coords.grid_h, "cols": coords.grid_w}
    assert card["geometry"]["micro"] * card["grid"]["cols"] == config.model.full_width
    assert card["coordinate_system"] == config.model.coords and card["step"] == step
    assert card["latent"]["dim"] == config.model.z_dim
    rows, cols = coords.micro_grid()  # every trained position, then fractional and beyond
    rows = torch.cat([rows.float(), torch.tensor([-1.0, 0.5, 2.25, 4.0])])
    cols = torch.cat([cols.float(), torch.tensor([-1.0, 0.5, 7.75, 4.0])])
    expected = coords.micro_coords(rows, cols).numpy()
    got = card_coordinates(card, rows.numpy().astype(np.float64),
                           cols.numpy().astype(np.float64))
    assert np.abs(got - expected).max() <= 1e-6


def test_recipe_of_a_single_row_grid() -> None:
    """One position on an axis maps to 0, as CoordinateSystem does (no division by zero)."""
    from cocogan.coords import CoordinateSystem

    coords = CoordinateSystem(grid_h=1, grid_w=4, macro_h=1, macro_w=2, micro=8)
    recipe = coordinate_recipe(coords)
    assert recipe["y"] == {"offset": 0.0, "step": 0.0}
    rows, cols = coords.micro_grid()
    got = card_coordinates({"coordinates": recipe, "coordinate_system": "cartesian"},
                           rows.numpy(), cols.numpy())
    assert np.abs(got - coords.micro_coords(rows, cols).numpy()).max() <= 1e-6


# ---- the example of docs/applications.md ----------------------------------------------------
def docs_example() -> str:
    """The python block of docs/applications.md's "Outside Python" section."""
    text = (ROOT / "docs" / "applications.md").read_text()
    section = text.split("## Outside Python", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 1, "the section should hold exactly one python example"
    return blocks[0]


def test_docs_example_uses_numpy_and_onnxruntime_only() -> None:
    tree = ast.parse(docs_example())
    modules = {alias.name.split(".")[0] for node in ast.walk(tree)
               if isinstance(node, ast.Import | ast.ImportFrom)
               for alias in (node.names if isinstance(node, ast.Import) else [node])
               } | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    modules.discard(None)
    assert modules <= {"json", "sys", "numpy", "onnxruntime"}, modules
    assert len(docs_example().strip().splitlines()) <= 45


def read_ppm(path: Path) -> np.ndarray:
    data = path.read_bytes()
    magic, width, height, _, pixels = data.split(maxsplit=4)
    assert magic == b"P6"
    return np.frombuffer(pixels, np.uint8).reshape(int(height), int(width), 3).astype(int)


@needs_onnx
@pytest.mark.parametrize("preset", ["tiny", "tiny-panorama"])
def test_docs_example_tiles_the_full_image_and_the_panorama(exported: dict, runs: dict,
                                                            preset: str,
                                                            tmp_path: Path) -> None:
    """The documented code, run as written, makes the images PyTorch makes for its z."""
    script = tmp_path / "example.py"
    script.write_text(docs_example())
    subprocess.run([sys.executable, str(script), str(exported[preset])], cwd=tmp_path,
                   check=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    _, model, _ = load_model(runs[preset])
    z = np.random.default_rng(0).uniform(-1, 1, model.config.z_dim).astype(np.float32)
    reference = full_images(model, torch.from_numpy(z)[None])
    full = read_ppm(tmp_path / "full.ppm")
    assert np.abs(full - to_uint8(reference[0])).max() <= 1
    if model.coords.cyclic:
        wide = read_ppm(tmp_path / "panorama-720.ppm")
        assert wide.shape[1] == 2 * full.shape[1]
        assert np.abs(wide - to_uint8(wrap_view(reference, 0, 720)[0])).max() <= 1
    else:
        assert not (tmp_path / "panorama-720.ppm").exists()


# ---- safetensors: the inference-only file ---------------------------------------------------
@pytest.fixture(scope="module")
def inference_file(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inference") / "g.safetensors"
    assert main(["export", "--run", str(runs["tiny"]), "--format", "safetensors",
                 "--no-discriminator", "--output", str(path)]) == 0
    return path


@pytest.fixture(scope="module")
def file_with_d(runs: dict, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inference") / "gd.safetensors"
    assert main(["export", "--run", str(runs["tiny"]), "--output", str(path)]) == 0
    return path


def test_inference_file_holds_the_ema_generator_only(inference_file: Path, runs: dict) -> None:
    checkpoint = resolve_checkpoint(runs["tiny"])
    tensors, full = load_file(str(inference_file)), load_file(str(checkpoint))
    assert tensors and all(k.startswith(EMA_PREFIX) for k in tensors)
    assert set(tensors) == {k for k in full if k.startswith(EMA_PREFIX)}
    assert all(torch.equal(v, full[k]) for k, v in tensors.items())
    with safe_open(str(inference_file), framework="pt") as handle:
        metadata = handle.metadata()
    assert metadata["format"] == "cocogan" and metadata["contents"] == "generator_ema"
    assert inference_file.stat().st_size < 0.5 * checkpoint.stat().st_size
    card = json.loads(inference_file.with_suffix(".json").read_text())
    assert card["file_format"] == "safetensors" and card["grid"] == {"rows": 4, "cols": 4}


def test_the_default_file_adds_d_and_its_heads(file_with_d: Path, inference_file: Path,
                                               runs: dict) -> None:
    full = load_file(str(resolve_checkpoint(runs["tiny"])))
    tensors = load_file(str(file_with_d))
    wanted = {k for k in full if k.startswith((EMA_PREFIX, "discriminator."))}
    assert set(tensors) == wanted and any(".content_head." in k or "content" in k for k in wanted)
    assert all(torch.equal(v, full[k]) for k, v in tensors.items())
    with safe_open(str(file_with_d), framework="pt") as handle:
        assert handle.metadata()["contents"] == "generator_ema+discriminator"
    assert inference_file.stat().st_size < file_with_d.stat().st_size
    assert file_with_d.stat().st_size < resolve_checkpoint(runs["tiny"]).stat().st_size
    assert "inspire" in supported_applications(file_with_d)
    assert "inspire" not in supported_applications(inference_file)


def test_inspire_and_spatial_run_on_the_file_with_d(file_with_d: Path, runs: dict,
                                                     tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    """Patch-inspired generation from the exported file equals the run's, byte for byte."""
    patch = tmp_path / "patch.png"
    Image.new("RGB", (16, 16), (90, 120, 200)).save(patch)
    for name, run in (("run", runs["tiny"]), ("file", file_with_d)):
        assert main(["generate", "inspire", "--patch", str(patch),
                     "--run", str(run), "--out", str(tmp_path / name), "--device", "cpu"]) == 0
    images = sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix == ".png")
    assert images
    for image in images:
        assert (tmp_path / "run" / image).read_bytes() == (tmp_path / "file" / image).read_bytes()
    assert main(["generate", "full", "--raw", "--run", str(file_with_d),
                 "--out", str(tmp_path / "o")]) == 2
    assert "without the raw generator" in one_line(capsys)
    assert main(["eval", "--run", str(file_with_d), "--real", "builtin:blobs", "--metrics",
                 "spatial", "--n", "4", "--batch", "4", "--no-cache", "--device", "cpu"]) == 0


@pytest.mark.parametrize("argv", [
    ["full", "--seeds", "0-1"],
    ["viewport", "--seeds", "0", "--box", "8,8,16,16"],
    ["interpolate", "full", "--frames", "2"],
    ["beyond", "--seeds", "0"],
    ["huge", "--size", "48", "--no-progress"],
])
def test_every_generate_app_loads_the_inference_file(inference_file: Path, runs: dict,
                                                     tmp_path: Path, argv: list[str]) -> None:
    """Same files as from the training run (the PNG/GIF/TIFF bytes are equal)."""
    for name, run in (("run", runs["tiny"]), ("file", inference_file)):
        assert main(["generate", *argv, "--run", str(run), "--out", str(tmp_path / name),
                     "--device", "cpu"]) == 0
    images = sorted(p.name for p in (tmp_path / "run").iterdir() if p.suffix != ".json")
    assert images and images == sorted(p.name for p in (tmp_path / "file").iterdir()
                                       if p.suffix != ".json")
    for name in images:
        assert (tmp_path / "run" / name).read_bytes() == (tmp_path / "file" / name).read_bytes()


def test_panorama_eval_and_serve_load_an_inference_file(runs: dict, tmp_path: Path) -> None:
    path = tmp_path / "pano.safetensors"
    assert main(["export", "--run", str(runs["tiny-panorama"]), "--output", str(path)]) == 0
    for name, run in (("run", runs["tiny-panorama"]), ("file", path)):
        assert main(["generate", "panorama", "--run", str(run), "--seeds", "1",
                     "--out", str(tmp_path / name), "--device", "cpu"]) == 0
    for png in (tmp_path / "run").glob("*.png"):
        assert png.read_bytes() == (tmp_path / "file" / png.name).read_bytes()
    assert main(["eval", "--run", str(path), "--real", "builtin:skyline", "--metrics", "swd",
                 "--n", "8", "--batch", "8", "--no-cache", "--device", "cpu"]) == 0
    pytest.importorskip("starlette", reason="serve needs the serve extra")
    from cocogan.serve.app import load_runs
    from cocogan.serve.tiles import seed_latent, tile_box

    served = [load_runs([p], cache_bytes=1 << 20)[0] for p in (runs["tiny-panorama"], path)]
    try:
        tiles = [asyncio.run(s.renderer.tile(seed_latent(32, 2),
                                             tile_box(s.model.coords, 0, 0, 32)))
                 for s in served]
    finally:
        for s in served:
            s.renderer.close()
    assert tiles[0] == tiles[1]


def test_inspire_raw_and_spatial_need_the_training_checkpoint(
        inference_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    patch = tmp_path / "patch.png"
    Image.new("RGB", (16, 16), (90, 120, 200)).save(patch)
    for argv, words in (
            (["generate", "inspire", "--patch", str(patch)], "without the discriminator"),
            (["generate", "full", "--raw"], "without the raw generator (--raw)")):
        assert main([*argv, "--run", str(inference_file), "--out", str(tmp_path / "o")]) == 2
        line = one_line(capsys)
        assert words in line and str(inference_file) in line and "training run" in line
    assert main(["eval", "--run", str(inference_file), "--real", "builtin:blobs", "--metrics",
                 "spatial", "--n", "4", "--batch", "4", "--no-cache", "--device", "cpu"]) == 2
    assert "without the discriminator" in one_line(capsys)


@needs_onnx
def test_onnx_from_the_inference_file_equals_onnx_from_the_run(
        exported: dict, inference_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The inference file exports to the same graph; without onnxruntime the export still
    works and says it was not checked."""
    with monkeypatch.context() as patch:
        patch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
        assert main(["export", "--run", str(inference_file), "--output",
                     str(tmp_path / "again.onnx")]) == 0
    assert "not checked (onnxruntime is not installed)" in capsys.readouterr().out
    z = latents([4, 5], 32)
    c = torch.tensor([[-1.0, 1 / 3], [1.0, -1.0]])
    again = ort_patches(tmp_path / "again.onnx", z, c)
    assert torch.equal(again, ort_patches(exported["tiny"], z, c))
    card = json.loads((tmp_path / "again.json").read_text())
    assert card["checkpoint"] == str(inference_file.resolve()) and card["file_format"] == "onnx"


# ---- bad input: one line each ----------------------------------------------------------------
def test_unsupported_format_and_suffix_are_one_line(runs: dict, tmp_path: Path,
                                                    capsys: pytest.CaptureFixture) -> None:
    cases = [(["--format", "tflite", "--output", str(tmp_path / "g.tflite")],
              "--format tflite is not supported: choose onnx"),
             (["--output", str(tmp_path / "g.bin")], "name a file ending in .onnx or "
                                                     ".safetensors"),
             (["--format", "onnx", "--output", str(tmp_path / "g.safetensors")],
              "a onnx file must end in .onnx")]
    for argv, words in cases:
        assert main(["export", "--run", str(runs["tiny"]), *argv]) == 2
        assert words in one_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_run_without_checkpoint_or_ema_is_one_line(runs: dict, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["export", "--run", str(empty), "--output", str(tmp_path / "g.safetensors")]) \
        == 2
    assert "no checkpoints under" in one_line(capsys)
    checkpoint = resolve_checkpoint(runs["tiny"])
    with safe_open(str(checkpoint), framework="pt") as handle:
        metadata = handle.metadata()
    tensors = {k: v for k, v in load_file(str(checkpoint)).items()
               if not k.startswith(EMA_PREFIX)}
    no_ema = tmp_path / "no-ema.safetensors"
    save_safetensors(tensors, str(no_ema), metadata=metadata)
    assert main(["export", "--run", str(no_ema), "--output", str(tmp_path / "g.safetensors")]) \
        == 2
    line = one_line(capsys)
    assert "holds no EMA generator" in line and str(no_ema) in line
    assert not (tmp_path / "g.safetensors").exists()


def test_outputs_follow_the_write_rule(runs: dict, tmp_path: Path,
                                       capsys: pytest.CaptureFixture,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "g.json").write_text('{"my": "notes"}')  # the user's file where the card would go
    assert main(["export", "--run", str(runs["tiny"]), "--output",
                 str(mine / "g.safetensors")]) == 2
    assert "cocogan did not write it" in one_line(capsys)
    assert (mine / "g.json").read_text() == '{"my": "notes"}' and not (mine / "g.safetensors"
                                                                        ).exists()
    afile = tmp_path / "afile"
    afile.write_text("x")
    assert main(["export", "--run", str(runs["tiny"]), "--output",
                 str(afile / "g.safetensors")]) == 2
    assert "is a file, not a folder" in one_line(capsys)
    out = tmp_path / "out" / "g.safetensors"  # a second export over cocogan's own files: fine
    for _ in range(2):
        assert main(["export", "--run", str(runs["tiny"]), "--output", str(out)]) == 0
    capsys.readouterr()

    def refuse(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EACCES, os.strerror(errno.EACCES))

    denied = tmp_path / "denied"
    denied.mkdir()
    monkeypatch.setattr(os, "replace", refuse)  # the atomic rename onto the final name
    assert main(["export", "--run", str(runs["tiny"]), "--output",
                 str(denied / "g.safetensors")]) == 2
    line = one_line(capsys)
    assert "permission denied" in line and str(denied / "g.safetensors") in line
    assert list(denied.iterdir()) == []  # no temporary file left behind


@pytest.mark.parametrize("package", ["onnx", "onnxscript"])
def test_missing_onnx_packages_are_one_line(runs: dict, tmp_path: Path, package: str,
                                            capsys: pytest.CaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, package, None)  # import fails as if not installed
    assert main(["export", "--run", str(runs["tiny"]), "--output", str(tmp_path / "g.onnx")]) \
        == 2
    line = one_line(capsys)
    assert package in line and "pip install 'cocogan[export]'" in line
    assert list(tmp_path.iterdir()) == []


def test_old_torch_is_one_line(runs: dict, tmp_path: Path, capsys: pytest.CaptureFixture,
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch, "__version__", "2.4.1")
    assert main(["export", "--run", str(runs["tiny"]), "--output", str(tmp_path / "g.onnx")]) \
        == 2
    assert "needs torch >= 2.5" in one_line(capsys)


# ---- the options beyond the paper ------------------------------------------------------------
@needs_onnx
@pytest.mark.slow
@pytest.mark.parametrize("options", [
    {"coords": "cylindrical", "full_width": 96, "macro_width": 48, "g_margin": True},
    {"g_margin": False},
])
def test_generator_options_export(options: dict, tmp_path: Path) -> None:
    """The generator with and without the margin option, Cartesian and cylindrical, exports
    and matches PyTorch too (freshly initialised, EMA recalibrated)."""
    from cocogan import CocoGAN, get_preset
    from cocogan.checkpoint import save_model

    config = get_preset("tiny")
    for key, value in options.items():
        setattr(config.model, key, value)
    config.validate()
    model = CocoGAN(config.model)
    model.recalibrate_ema(8, batches=2)
    save_model(tmp_path / "ckpt.safetensors", config, model, step=0)
    result = export_run(tmp_path / "ckpt.safetensors", tmp_path / "g.onnx")
    assert result.max_diff is not None and result.max_diff <= TOLERANCE
