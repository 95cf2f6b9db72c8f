"""Generation backends: what evaluates G(z, c) -> micro patches for every application.
``torch`` (default) runs the rewrite :mod:`cocogan.nn.fused` (what seeds and fingerprints name);
``onnxruntime`` its ONNX graph, cached as ``$COCOGAN_CACHE/onnx/<sha256>.onnx`` (equal to
~1e-5); ``auto`` the faster as measured (docs/applications.md "Backends"): onnxruntime on a CPU
for a wide generator, else torch. :func:`cocogan.render.pick_generator` hands out the choice of
:func:`use_backend` while the weights are those it was made of.
Shapes: B patches, Z latent dims, D coordinate dims, m micro patch side.
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cocogan.model import CocoGAN
from cocogan.nn.fused import NARROW, fuse_for_inference
from cocogan.outputs import CACHE_ENV as CACHE_ENV  # re-exported: the variable to set
from cocogan.outputs import cache_folder
from cocogan.render import weights_version

BACKENDS = ("torch", "onnxruntime", "auto")
DEFAULT_BACKEND = "torch"
PACKAGES = ("onnxruntime", "onnx", "onnxscript")  # the runtime and what the exporter imports
INSTALL = "pip install 'cocogan[export]'"


class OnnxGenerator:
    """A generator's ONNX graph, called as it is: (z (B, Z), c (B, D)) -> (B, 3, m, m)."""

    training = False  # inference only: always in eval mode

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as torch's pool
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(graph, options,
                                                    providers=["CPUExecutionProvider"])

    def __call__(self, z: Tensor, coords: Tensor, *, keep_margin: bool = False) -> Tensor:
        assert not keep_margin, "the ONNX graph draws micro patches, not margin canvases"
        feeds = {name: np.ascontiguousarray(t.detach().float().cpu().numpy())
                 for name, t in (("z", z), ("coords", coords))}
        return torch.from_numpy(self.session.run(None, feeds)[0]).to(z.device)

    def eval(self) -> OnnxGenerator:  # what `cocogan.render.evaluating` calls
        return self

    def train(self, mode: bool = True) -> OnnxGenerator:
        return self


def use_backend(model: CocoGAN, name: str = DEFAULT_BACKEND, *, raw: bool = False,
                note: Callable[[str], None] | None = None) -> str:
    """Sample ``model``'s EMA (or ``raw``) generator through backend ``name``; returns the one in
    use. A model the exporter cannot take falls back to torch, with a line to ``note``."""
    if name not in BACKENDS:
        raise ValueError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if name == "onnxruntime" and missing:
        raise ValueError(f"--backend onnxruntime needs the optional package(s) "
                         f"{', '.join(missing)}: {INSTALL}")
    source = model.generator if raw else model.generator_ema
    model.__dict__.pop("backend", None)  # torch's module while the stand-in is being made
    stand_in, used = None, "torch"
    if name == "onnxruntime" or (name == "auto" and not missing and model.device.type == "cpu"
                                 and source.stem_channels > NARROW):
        try:
            stand_in, used = OnnxGenerator(cached_graph(model, raw)), "onnxruntime"
        except Exception as error:  # the exporter fails in many ways
            reason = (str(error).strip().splitlines() or [""])[0][:200]
            (note or _stderr)(f"the ONNX exporter cannot take this model ({type(error).__name__}"
                              f": {reason}); generating with --backend torch")
    stand_in = stand_in or fuse_for_inference(source)
    stand_in.raw, stand_in.version = raw, weights_version(source)
    model.__dict__["backend"] = stand_in  # not a submodule: no state_dict keys, no .to()
    return used


def cache_dir() -> Path:
    """Where exported graphs are kept (``$COCOGAN_CACHE/onnx``, else the user cache)."""
    return cache_folder("onnx")


def weights_key(model: CocoGAN, raw: bool = False) -> str:
    """The graph's cache key: SHA-256 of the generator's state, its config and torch's version."""
    generator = model.generator if raw else model.generator_ema
    digest = hashlib.sha256(f"{model.config!r} torch {torch.__version__} fused-resize".encode())
    for key, tensor in sorted(generator.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_graph(model: CocoGAN, raw: bool = False) -> bytes:
    """The serialised ONNX graph of the generator, exported on the first call for its weights."""
    from cocogan.export import onnx_model
    from cocogan.outputs import atomic_write_bytes

    path = cache_dir() / f"{weights_key(model, raw)}.onnx"
    if path.is_file():
        return path.read_bytes()
    card = {"preset": "generation backend", "step": 0}
    source = model.generator if raw else model.generator_ema
    data = onnx_model(fuse_for_inference(source, "onnx").cpu(), card).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return data


def _stderr(message: str) -> None:
    print(f"cocogan: {message}", file=sys.stderr)
