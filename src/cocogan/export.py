"""A trained generator as one portable file: ONNX for any runtime, or inference-only safetensors.

G draws one patch from (z, micro coordinate) (paper Section 2), which is what a viewer, a game
engine or a browser wants: it can tile full images, viewports and panoramas itself. The *model
card* travels with the weights (the ONNX metadata key ``cocogan`` and a JSON file beside it):
the geometry, the coordinate system and the recipe from a patch's grid position to the
coordinate G expects, so no cocogan code is needed. The ONNX graph is the EMA generator's
inference rewrite (:mod:`cocogan.nn.fused`: eval-mode batch norm, spectral norm applied),
exported by ``torch.onnx.export(dynamo=True)`` at opset 18 (docs/applications.md, "Outside
Python"). Shapes: B batch, Z latent dims, D coordinate dims, m micro patch side.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import logging
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save as safetensors_bytes

from cocogan.budget import FLOAT_BYTES, Budget, check_budget, describe_model, model_size
from cocogan.checkpoint import (
    D_PREFIX,
    EMA_PREFIX,
    INFERENCE_CONTENTS,
    WITH_D_CONTENTS,
    CheckpointError,
    MissingNetwork,
)
from cocogan.config import Config
from cocogan.coords import CoordinateSystem
from cocogan.model import CocoGAN
from cocogan.nn.fused import FusedGenerator, fuse_for_inference
from cocogan.outputs import atomic_write, atomic_write_bytes
from cocogan.render import evaluating
from cocogan.version import __version__

# format -> (file suffix, what it is for); the keys are the CLI's --format choices.
FORMATS: dict[str, tuple[str, str]] = {
    "onnx": (".onnx", "the EMA generator as an ONNX graph, for any ONNX runtime"),
    "safetensors": (".safetensors", "inference-only weights (EMA generator, D + config) for every "
                                    "cocogan --run command"),
}
OPSET = 18  # ai.onnx opset: the oldest the dynamo exporter targets; ONNX Runtime >= 1.14 runs it
MIN_TORCH = (2, 5)  # torch.onnx.export(dynamo=True) appeared in torch 2.5
ONNX_PACKAGES = ("onnx", "onnxscript")  # what torch.onnx's dynamo exporter imports
INPUTS, OUTPUT = ("z", "coords"), "patches"  # ONNX input and output names
CHECK_TOLERANCE = 1e-3  # export fails if onnxruntime and PyTorch differ by more (typical: 1e-5)
CARD_FORMAT = "cocogan-generator"
# Copies of G's weights held at once besides the loaded model: ONNX (fused copy, exported
# program, ModelProto, its bytes, the onnxruntime session; measured: a 2.08 GB G peaked at
# 15.9 GB RSS), safetensors (the state and its bytes).
EXPORT_COPIES = {"onnx": 7, "safetensors": 2}


class ExportError(ValueError):
    """An export the CLI refuses (missing optional package, unsupported format, bad file)."""


# ---- the model card --------------------------------------------------------------------------
def coordinate_recipe(coords: CoordinateSystem) -> dict[str, Any]:
    """How a micro patch's grid position (row, col) becomes the coordinate G expects.

    Mirrors :meth:`CoordinateSystem.micro_coords` as offsets and steps per axis, so a user can
    compute it with two multiplications (tests check it against the package's coordinates).
    """
    step_y, step_x = coords.micro_step
    recipe: dict[str, Any] = {"y": {"offset": -1.0 if coords.grid_h > 1 else 0.0, "step": step_y}}
    if coords.cyclic:
        recipe["layout"] = ["y", "cos(pi*theta)", "sin(pi*theta)"]
        recipe["theta"] = {"offset": -1.0, "step": step_x, "period_cols": coords.grid_w}
        recipe["formula"] = ("y = y.offset + y.step * row; theta = theta.offset + theta.step * "
                             "(col mod period_cols); coords = (y, cos(pi theta), sin(pi theta))")
    else:
        recipe["layout"] = ["y", "x"]
        recipe["x"] = {"offset": -1.0 if coords.grid_w > 1 else 0.0, "step": step_x}
        recipe["formula"] = "y = y.offset + y.step * row; x = x.offset + x.step * col"
    return recipe


def model_card(config: Config, coords: CoordinateSystem, step: int, source: Path,
               file_format: str) -> dict[str, Any]:
    """What a user outside Python needs to tile images from the exported generator."""
    m = config.model
    card: dict[str, Any] = {
        "format": CARD_FORMAT, "file_format": file_format, "cocogan_version": __version__,
        "preset": config.name, "step": step, "checkpoint": str(source),
        "inputs": {"z": ["batch", m.z_dim], "coords": ["batch", coords.coord_dim]},
        "output": {"patches": ["batch", 3, coords.micro, coords.micro], "range": [-1.0, 1.0],
                   "layout": "NCHW, RGB"},
        "latent": {"dim": m.z_dim, "distribution": "uniform", "low": -1.0, "high": 1.0,
                   "note": "one z per image, shared by all its patches"},
        "geometry": {"full_height": m.full_height, "full_width": m.full_width,
                     "micro": coords.micro, "macro_height": m.macro, "macro_width": m.macro_w},
        "grid": {"rows": coords.grid_h, "cols": coords.grid_w},
        "coordinate_system": m.coords,
        "coordinates": coordinate_recipe(coords),
        "patch_position": ("patch (row, col) covers pixels [row*micro, (row+1)*micro) x "
                           "[col*micro, (col+1)*micro) of the full image; rows 0..grid.rows-1 "
                           "and cols 0..grid.cols-1 tile it. Fractional and out-of-grid "
                           "positions are allowed (continuous and beyond-boundary generation)"
                           + ("; columns wrap round the 360-degree seam" if coords.cyclic
                              else "")),
        "inference": ("eval mode: batch norm on running statistics, so a patch depends only on "
                      "its own (z, coords), in any batch; spectral norm applied to the weights"),
    }
    if file_format == "onnx":
        card["exporter"] = {"torch": torch.__version__, "opset": OPSET,
                            "method": "torch.onnx.export(dynamo=True)"}
    return card


# ---- ONNX ------------------------------------------------------------------------------------
def require_onnx() -> None:
    """Raise ExportError (one line) unless torch and the packages the ONNX exporter needs are
    there."""
    version = tuple(int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
    if version < MIN_TORCH:
        raise ExportError(f"--format onnx needs torch >= {MIN_TORCH[0]}.{MIN_TORCH[1]} (its "
                          f"torch.export-based ONNX exporter); this is torch {torch.__version__}")
    missing = [name for name in ONNX_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise ExportError(f"--format onnx needs the optional package(s) {', '.join(missing)}: "
                          "pip install 'cocogan[export]' (onnx, onnxscript, onnxruntime)")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Hide the exporter's notes (deprecations inside torch, 'torchvision is not installed')."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def onnx_model(generator: FusedGenerator, card: dict[str, Any]) -> Any:
    """The ONNX ModelProto of ``generator`` (B dynamic), with ``card`` in its metadata."""
    import onnx

    require_onnx()
    batch = torch.export.Dim("batch")
    example = (torch.zeros(2, generator.z_dim), torch.zeros(2, generator.coord_dim))
    with _quiet_exporter(), torch.no_grad():
        program = torch.onnx.export(
            generator, example, dynamo=True, opset_version=OPSET, input_names=list(INPUTS),
            output_names=[OUTPUT], dynamic_shapes={"z": {0: batch}, "coords": {0: batch}},
            verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {"cocogan": json.dumps(card)})
    proto.doc_string = (f"COCO-GAN generator ({card['preset']}, step {card['step']}): "
                        "patches (B, 3, m, m) in [-1, 1] from z (B, Z) and coords (B, D); the "
                        "metadata key 'cocogan' holds the geometry and coordinate recipe")
    proto.model_version = int(card["step"])
    onnx.checker.check_model(proto)
    return proto


def check_with_onnxruntime(data: bytes, model: CocoGAN, count: int = 64, seed: int = 0
                           ) -> float | None:
    """Max |onnxruntime - PyTorch eval-mode EMA G| over ``count`` patches at grid positions
    (half of them fractional or past the border); None when onnxruntime is not installed."""
    try:
        import onnxruntime
    except ImportError:
        return None
    rng = torch.Generator().manual_seed(seed)
    coords = model.coords
    rows = torch.rand(count, generator=rng) * (coords.grid_h + 1) - 0.5
    cols = torch.rand(count, generator=rng) * (coords.grid_w + 1) - 0.5
    rows[::2], cols[::2] = rows[::2].round(), cols[::2].round()
    c = coords.micro_coords(rows, cols)  # (B, D)
    z = torch.rand(count, model.config.z_dim, generator=rng) * 2.0 - 1.0
    with evaluating(model.generator_ema), torch.no_grad():
        expected = model.generator_ema(z.to(model.device), c.to(model.device)).cpu().numpy()
    session = onnxruntime.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = session.run(None, {"z": z.numpy(), "coords": c.numpy()})[0]
    return float(abs(got - expected).max())


# ---- safetensors (inference only) ------------------------------------------------------------
def inference_bytes(config: Config, model: CocoGAN, step: int, source: Path,
                    discriminator: bool = True) -> bytes:
    """The EMA generator's state (spectral-norm vectors included, so loading it rebuilds the
    same module) and the config, under the checkpoint's tensor names; D with its heads too
    when ``discriminator`` and the source has it (patch-inspired generation needs Q and the
    spatial head); never the raw G or optimisers."""
    parts = {EMA_PREFIX: model.generator_ema}
    if discriminator and not isinstance(model.discriminator, MissingNetwork):
        parts[D_PREFIX] = model.discriminator
    tensors = {f"{prefix}{k}": v.detach().contiguous().cpu()
               for prefix, module in parts.items() for k, v in module.state_dict().items()}
    contents = WITH_D_CONTENTS if D_PREFIX in parts else INFERENCE_CONTENTS
    metadata = {"format": "cocogan", "contents": contents, "version": __version__,
                "step": str(step), "config": json.dumps(config.to_dict()), "source": str(source)}
    return safetensors_bytes(tensors, metadata=metadata)


# ---- the command -----------------------------------------------------------------------------
@dataclass(frozen=True)
class ExportResult:
    """What `cocogan export` wrote and how well the ONNX file matched PyTorch."""

    path: Path
    card: Path
    max_diff: float | None  # onnxruntime vs PyTorch (None: not checked)


def output_format(output: Path, file_format: str | None) -> str:
    """The format named by ``--format`` or implied by the ``--output`` suffix (they must agree)."""
    by_suffix = {suffix: name for name, (suffix, _) in FORMATS.items()}
    if file_format is not None and file_format not in FORMATS:
        choices = "; ".join(f"{name} ({help_line})" for name, (_, help_line) in FORMATS.items())
        raise ExportError(f"--format {file_format} is not supported: choose {choices}")
    implied = by_suffix.get(output.suffix.lower())
    wanted = file_format or implied
    if wanted is None:
        raise ExportError(f"--output {output.name}: name a file ending in "
                          f"{' or '.join(by_suffix)} (or pass --format)")
    suffix = FORMATS[wanted][0]
    if output.suffix.lower() != suffix:
        raise ExportError(f"--output {output.name}: a {wanted} file must end in {suffix}")
    return wanted


def require_ema(file: Path) -> None:
    """One line for a weights file that holds no EMA generator (nothing to export)."""
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as handle:
        if not any(key.startswith(EMA_PREFIX) for key in handle.keys()):  # noqa: SIM118
            raise CheckpointError(f"{file} holds no EMA generator ({EMA_PREFIX}* tensors): "
                                  "export a checkpoint written by cocogan train (or by cocogan "
                                  "export --format safetensors)")


def export_budget(config: Config, file_format: str) -> Budget:
    """Memory of exporting a loaded model (copies of G's weights; loading was budgeted by
    :func:`cocogan.checkpoint.load_model`) and the output's size."""
    size = model_size(config.model, 1)  # the safetensors file may hold D too: budget it
    weights = (size.g_params + (size.d_params if file_format == "safetensors" else 0)) * FLOAT_BYTES
    return Budget(what=f"exporting {describe_model(config.model, size)} as {file_format}",
                  memory=EXPORT_COPIES[file_format] * weights, disk=weights)


def export_run(run: str | Path, output: Path, file_format: str | None = None, *,
               check: bool = True, force: bool = False, discriminator: bool = True,
               report: Callable[[str], None] | None = None) -> ExportResult:
    """Write the EMA generator of ``run`` (a run directory or weights file) to ``output`` and
    its model card to ``output`` with suffix .json; the write rule of cocogan.outputs applies.
    Before any work its memory estimate (:func:`export_budget`) is checked (``force`` skips
    that) and told to ``report``.
    """
    from cocogan.checkpoint import load_model, read_metadata, resolve_checkpoint
    from cocogan.outputs import claim_file

    output = Path(output)
    file_format = output_format(output, file_format)
    if file_format == "onnx":
        require_onnx()  # before any work
    card_path = output.with_suffix(".json")
    claim_file(output, "--output", sidecar=card_path)
    file = resolve_checkpoint(run)
    read_metadata(file)
    require_ema(file)
    config, model, step = load_model(file, "cpu")
    estimate = export_budget(config, file_format)
    line = estimate.describe() if force else check_budget(
        estimate, output, fix="export on a machine with more memory")
    if report is not None:
        report(line)
    card = model_card(config, model.coords, step, file.resolve(), file_format)
    max_diff = None
    if file_format == "onnx":
        data = onnx_model(fuse_for_inference(model.generator_ema, "onnx"), card).SerializeToString()
        max_diff = check_with_onnxruntime(data, model) if check else None
        if max_diff is not None and not max_diff <= CHECK_TOLERANCE:
            raise ExportError(f"the ONNX graph differs from the PyTorch generator by {max_diff:.3g}"
                              f" (> {CHECK_TOLERANCE:g}); please report it (--no-check skips "
                              "this test)")
    else:
        data = inference_bytes(config, model, step, file.resolve(), discriminator)
    atomic_write_bytes(output, data)
    text = json.dumps(card, indent=2) + "\n"
    atomic_write(card_path, lambda tmp: tmp.write_text(text))
    return ExportResult(output, card_path, max_diff)
