"""The generation backends (cocogan.apps.backend): torch (the inference rewrite) and onnxruntime
draw what the plain generator draws, to 1e-4, in every application, for fresh and shipped
models, Cartesian and cylindrical (z_phase included); the graph is cached by the weights' hash;
without onnxruntime nothing breaks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from cocogan import CocoGAN, get_preset
from cocogan.apps import (
    Extension,
    beyond,
    cartesian_box,
    cylindrical_box,
    full_images,
    full_interpolation,
    latents,
    micro_interpolation,
    panoramas,
    spatial_interpolation,
    viewport,
)
from cocogan.apps.backend import CACHE_ENV, OnnxGenerator, cache_dir, use_backend, weights_key
from cocogan.apps.huge import iter_tiles, plan_huge
from cocogan.checkpoint import load_model, resolve_checkpoint, save_model
from cocogan.cli import main
from cocogan.evaluation.sampling import cocogan_sampler
from cocogan.nn.fused import FusedGenerator
from cocogan.render import pick_generator

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")
TOLERANCE = 1e-4


@pytest.fixture(autouse=True)
def graph_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
                ) -> Path:
    """One cache for the module (each model exports once), never the user's."""
    folder = tmp_path_factory.getbasetemp() / "backend-cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


def fresh(preset: str, **model_fields: object) -> CocoGAN:
    torch.manual_seed(1)
    config = get_preset(preset)
    for key, value in model_fields.items():
        setattr(config.model, key, value)
    config.validate()
    model = CocoGAN(config.model)
    model.recalibrate_ema(8, batches=2)
    return model


@pytest.fixture(scope="module")
def models() -> dict[str, CocoGAN]:
    """Fresh Cartesian, cylindrical and z_phase models, and both shipped ones."""
    shipped = {name: load_model(resolve_checkpoint(name), "cpu")[1]
               for name in ("emoji32", "skyline")}
    return {"tiny": fresh("tiny"), "panorama": fresh("tiny-panorama"),
            "phase": fresh("tiny-panorama", z_phase=True), **shipped}


def plain(model: CocoGAN, draw: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``draw()`` by the generator module itself (no stand-in installed)."""
    model.__dict__.pop("backend", None)
    assert pick_generator(model) is model.generator_ema
    return draw()


def both(model: CocoGAN, draw: Callable[[], torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """``draw()`` with torch, then with onnxruntime (the backend left as torch after)."""
    assert use_backend(model, "torch") == "torch"
    assert isinstance(pick_generator(model), FusedGenerator)
    expected = draw()
    assert use_backend(model, "onnxruntime") == "onnxruntime"
    assert isinstance(pick_generator(model), OnnxGenerator)
    try:
        got = draw()
    finally:
        use_backend(model, "torch")
    return expected, got


def applications(model: CocoGAN) -> dict:
    """Every application's tensor output for two seeds (huge: its uint8 tiles)."""
    z = latents([3, 4], model.config.z_dim)
    coords = model.coords
    box = (cylindrical_box(coords, 300, 60, 2, 20) if coords.cyclic
           else cartesian_box(coords, 3, 5, 20, 17))
    extension = Extension.of([1, 2, 0, 0] if coords.cyclic else [1, 0, 2, 1])
    plan = plan_huge(coords, 48, 64, tile=16)
    apps = {
        "full": lambda: full_images(model, z, chunk=7),
        "viewport": lambda: viewport(model, z, box),
        "beyond": lambda: beyond(model, z, extension),
        "micro": lambda: micro_interpolation(model, z[0], z[1], 1.5, 2, 5),
        "spatial": lambda: spatial_interpolation(model, z[0], (-1, -1), (1, 1), 5),
        "interpolate full": lambda: full_interpolation(model, z[0], z[1], 3),
        "eval": lambda: cocogan_sampler(model)(3, torch.Generator().manual_seed(0)),
        "huge": lambda: torch.from_numpy(np.concatenate(
            [t.reshape(-1) for t in iter_tiles(model, z[:1], plan)]).astype(np.int16)),
    }
    if coords.cyclic:
        apps["panorama"] = lambda: panoramas(model, z)
    return apps


@pytest.mark.parametrize("name", ["tiny", "panorama", "phase", "emoji32", "skyline"])
def test_every_application_matches_torch(models: dict[str, CocoGAN], name: str) -> None:
    model = models[name]
    for app, draw in applications(model).items():
        module = plain(model, draw)
        for got in both(model, draw):
            assert got.shape == module.shape, app
            tolerance = 1 if app == "huge" else TOLERANCE  # uint8 tiles: one grey level at most
            assert (got.float() - module.float()).abs().max() <= tolerance, app
            assert (got.float() - module.float()).abs().mean() < 1e-2, app


def test_raw_generator_has_its_own_graph(models: dict[str, CocoGAN]) -> None:
    model = models["tiny"]
    z = latents([0], model.config.z_dim)
    assert weights_key(model, raw=True) != weights_key(model)
    use_backend(model, "onnxruntime", raw=True)
    try:
        assert pick_generator(model) is model.generator_ema  # the EMA one stays the module
        got = full_images(model, z, raw=True)
    finally:
        use_backend(model, "torch")
    assert (got - full_images(model, z, raw=True)).abs().max() <= TOLERANCE


def test_graph_is_cached_by_the_weights_hash(graph_cache: Path, monkeypatch: pytest.MonkeyPatch
                                             ) -> None:
    model = fresh("tiny")
    assert use_backend(model, "onnxruntime") == "onnxruntime"
    files = sorted(cache_dir().glob("*.onnx"))
    assert cache_dir() == graph_cache / "onnx"
    assert (graph_cache / "onnx" / f"{weights_key(model)}.onnx") in files

    def no_export(*args: object, **kwargs: object) -> None:
        raise AssertionError("exported again")

    monkeypatch.setattr("cocogan.export.onnx_model", no_export)
    assert use_backend(model, "onnxruntime") == "onnxruntime"  # from the cache
    with torch.no_grad():
        model.generator_ema.tail_conv.bias.add_(0.1)  # changed weights: a new key, a new graph
    monkeypatch.undo()
    monkeypatch.setenv(CACHE_ENV, str(graph_cache))
    z = latents([0], model.config.z_dim)
    expected, got = both(model, lambda: full_images(model, z))
    assert (got - expected).abs().max() <= TOLERANCE
    assert len(sorted(cache_dir().glob("*.onnx"))) == len(files) + 1


def test_without_onnxruntime_auto_is_torch_and_onnxruntime_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    tiny = fresh("tiny")
    assert use_backend(tiny, "auto") == "torch"  # narrow: torch measured faster
    model = fresh("tiny", ngf=40)  # a wide stem (640 channels): onnxruntime measured faster
    assert use_backend(model, "auto") == "onnxruntime"
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # hidden: import fails
    assert use_backend(model, "auto") == "torch"
    assert isinstance(pick_generator(model), FusedGenerator)
    with pytest.raises(ValueError, match=r"needs the optional package\(s\) onnxruntime: pip "
                                         r"install 'cocogan\[export\]'"):
        use_backend(model, "onnxruntime")
    run = tmp_path / "run"
    save_model(run / "checkpoints" / "step-00000001.safetensors", get_preset("tiny"), tiny, 1)
    assert main(["generate", "full", "--run", str(run), "--seeds", "0", "--backend",
                 "onnxruntime"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pip install 'cocogan[export]'" in err[0], err


def test_model_the_exporter_cannot_take_falls_back_in_one_line(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    model = fresh("tiny", ngf=36)  # wide (auto tries the graph), weights no other test exported

    def refuse(*args: object, **kwargs: object) -> None:
        raise RuntimeError("unsupported operator\nmore detail")

    monkeypatch.setattr("cocogan.export.onnx_model", refuse)
    assert use_backend(model, "onnxruntime") == "torch"
    assert use_backend(model, "auto") == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "cannot take this model (RuntimeError: unsupported operator); " \
        "generating with --backend torch" in err[0], err
    assert isinstance(pick_generator(model), FusedGenerator)


def test_auto_is_torch_off_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    model = fresh("tiny", ngf=40)
    monkeypatch.setattr(CocoGAN, "device", property(lambda self: torch.device("cuda")))
    assert use_backend(model, "auto") == "torch"


def test_cli_apps_with_onnxruntime(tmp_path: Path) -> None:
    """Every `generate` app runs with --backend onnxruntime; the files equal torch's to one
    grey level (PNG/TIFF are 8-bit)."""
    from PIL import Image

    run = tmp_path / "run"
    save_model(run / "checkpoints" / "step-00000001.safetensors", get_preset("tiny"),
               fresh("tiny"), 1)
    commands = [["full", "--seeds", "0-1"], ["viewport", "--box", "0,4,16,20"],
                ["beyond", "--seeds", "1"], ["interpolate", "micro", "--frames", "3"],
                ["huge", "--size", "48,64", "--tile", "16", "--no-progress"]]
    for backend in ("torch", "onnxruntime", "auto"):
        for argv in commands:
            assert main(["generate", argv[0], "--run", str(run), "--backend", backend,
                         "--out", str(tmp_path / backend / argv[0]), *argv[1:]]) == 0
    for argv in commands:
        for path in sorted((tmp_path / "torch" / argv[0]).glob("*.[pt][ni][gf]")):
            read = tifffile.imread if path.suffix == ".tif" else (
                lambda p: np.asarray(Image.open(p).convert("RGB")))
            for backend in ("onnxruntime", "auto"):
                other = tmp_path / backend / argv[0] / path.name
                assert np.abs(read(path).astype(int) - read(other).astype(int)).max() <= 1, other


def test_serve_renders_tiles_through_the_backend() -> None:
    """`cocogan serve --backend onnxruntime`: the renderer's G is the graph; a tile's pixels
    equal torch's to one grey level."""
    import asyncio
    import io

    from PIL import Image

    pytest.importorskip("starlette")
    from cocogan.serve.app import load_runs
    from cocogan.serve.tiles import seed_latent, tile_box

    def tile(backend: str) -> np.ndarray:
        run = load_runs(["skyline"], backend=backend)[0]
        latent = seed_latent(run.config.model.z_dim, 5)
        box = tile_box(run.model.coords, 0, 1, 32)
        data = asyncio.run(run.renderer.tile(latent, box))
        run.renderer.close()
        assert isinstance(run.renderer.generator, OnnxGenerator) == (backend == "onnxruntime")
        return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)

    assert np.abs(tile("torch") - tile("onnxruntime")).max() <= 1


def test_a_stand_in_gives_way_when_the_weights_change() -> None:
    """Training after `use_backend` (the eval callback's sampler): the applications sample the
    module again, not the stale snapshot; a stand-in adds nothing to the checkpoint's state."""
    model = fresh("tiny")
    keys = set(model.state_dict())
    for backend in ("torch", "onnxruntime"):
        use_backend(model, backend)
        assert pick_generator(model) is not model.generator_ema
        assert set(model.state_dict()) == keys
        with torch.no_grad():
            model.generator_ema.tail_conv.bias.add_(0.1)
        assert pick_generator(model) is model.generator_ema
    use_backend(model, "torch", raw=True)
    model.generator.train()(torch.zeros(2, model.config.z_dim), torch.zeros(2, 2))  # SN's step
    assert pick_generator(model, raw=True) is model.generator
