"""Generation backends: what evaluates G(z, c) -> micro patches for every application.

- ``torch``: the generator module itself (the default: the images that seeds and the shipped
  models' fingerprints name, bit for bit);
- ``onnxruntime``: the generator's ONNX graph (:mod:`cocogan.export`) run by onnxruntime's CPU
  provider, about twice the patches per second on a CPU and equal to torch's to ~1e-5 (a grey
  level at a few pixels); see docs/applications.md, "Backends";
- ``auto``: onnxruntime on a CPU where it is installed and the model exports, torch otherwise.

:func:`use_backend` installs the choice on a model and :func:`cocogan.render.pick_generator`
hands it to the applications, which stay backend-agnostic. The graph is exported once per set of
weights and cached as ``<sha256>.onnx`` under ``$COCOGAN_CACHE/onnx`` (else ``$XDG_CACHE_HOME``
or ``~/.cache``, then ``cocogan/onnx``): the key hashes the weights and the model config, so
changed weights get a new graph.

Shapes: B patches, Z latent dims, D coordinate dims, m micro patch side.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from cocogan.model import CocoGAN
from cocogan.outputs import CACHE_ENV as CACHE_ENV  # re-exported: the variable to set
from cocogan.outputs import cache_folder

BACKENDS = ("torch", "onnxruntime", "auto")
DEFAULT_BACKEND = "torch"
PACKAGES = ("onnxruntime", "onnx", "onnxscript")  # the runtime and what the exporter imports
INSTALL = "pip install 'cocogan[export]'"


class OnnxGenerator:
    """A generator's ONNX graph, called as the generator is: (z (B, Z), c (B, D)) ->
    (B, 3, m, m) on z's device. Inference only, so always in eval mode."""

    training = False

    def __init__(self, graph: bytes, raw: bool, threads: int | None = None) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()  # as torch's pool
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(graph, options,
                                                    providers=["CPUExecutionProvider"])
        self.raw = raw  # which of the model's generators this graph is

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
    """Sample ``model``'s EMA (or ``raw``) generator through backend ``name``; returns the one
    in use ("torch" or "onnxruntime").

    Raises:
        ValueError: an unknown name, or ``onnxruntime`` without its packages (one line naming
            the install command). A model the exporter cannot take falls back to torch, with
            one line to ``note`` (default stderr) saying so.
    """
    if name not in BACKENDS:
        raise ValueError(f"--backend {name!r}: choose one of {', '.join(BACKENDS)}")
    missing = [p for p in PACKAGES if importlib.util.find_spec(p) is None]
    if name == "onnxruntime" and missing:
        raise ValueError(f"--backend onnxruntime needs the optional package(s) "
                         f"{', '.join(missing)}: {INSTALL}")
    model.backend = None  # type: ignore[assignment]  # torch unless the graph is ready
    if name == "torch" or (name == "auto" and (missing or model.device.type != "cpu")):
        return "torch"
    try:
        model.backend = OnnxGenerator(cached_graph(model, raw), raw)  # type: ignore[assignment]
    except Exception as error:  # the exporter fails in many ways
        reason = (str(error).strip().splitlines() or [""])[0][:200]
        (note or _stderr)(f"the ONNX exporter cannot take this model ({type(error).__name__}: "
                          f"{reason}); generating with --backend torch")
        return "torch"
    return "onnxruntime"


def cache_dir() -> Path:
    """Where exported graphs are kept (``$COCOGAN_CACHE/onnx``, else the user cache)."""
    return cache_folder("onnx")
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cocogan" / "onnx"


def weights_key(model: CocoGAN, raw: bool = False) -> str:
    """SHA-256 of the generator's weights (every tensor of its state), its config and the
    exporter's version: the graph's cache key."""
    generator = model.generator if raw else model.generator_ema
    digest = hashlib.sha256(f"{model.config!r} torch {torch.__version__}".encode())
    for key, tensor in sorted(generator.state_dict().items()):
        digest.update(key.encode())
        digest.update(tensor.detach().cpu().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def cached_graph(model: CocoGAN, raw: bool = False) -> bytes:
    """The serialised ONNX graph of the generator, exported on the first call for its weights."""
    from cocogan.export import onnx_model, plain_generator
    from cocogan.outputs import atomic_write_bytes

    path = cache_dir() / f"{weights_key(model, raw)}.onnx"
    if path.is_file():
        return path.read_bytes()
    card = {"preset": "generation backend", "step": 0}
    data = onnx_model(plain_generator(model, raw=raw), card).SerializeToString()
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)
    return data


def _stderr(message: str) -> None:
    print(f"cocogan: {message}", file=sys.stderr)
