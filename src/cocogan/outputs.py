"""The write rule (docs/design.md): cocogan never overwrites what a user owns, and never
leaves a partial file. It writes only into folders it created or claimed (a ``.cocogan``
marker), empty folders and runs; a file named on the command line only when it is new, in such
a folder or cocogan's own, never over a run's own files. :func:`claim_folder` and
:func:`claim_file` check before anything is computed; :func:`atomic_write` renames a complete
temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

MARKER = ".cocogan"  # in every output folder and run the CLI created or claimed
MARKER_TEXT = "This folder holds outputs of cocogan; cocogan may write here again.\n"
RUN_MARKER_TEXT = "This folder holds a cocogan training run; cocogan may write here again.\n"
RUN_FILES = ("config.yaml", "run.yaml")  # with a cocogan checkpoint: a run from before markers
RUN_OWN = (*RUN_FILES, MARKER, "metrics.jsonl", "eval.json")  # never replaced by an --output
RUN_OWN_DIRS = ("checkpoints", "samples", "tensorboard")  # nor anything in these
MAX_HEADER = 1 << 24  # bytes of a safetensors header read to recognise a checkpoint
SIDECAR_KEY = "cocogan_version"  # every JSON sidecar written by `cocogan generate` has it
_SHOW = 3  # names listed when refusing a folder
NEARLY_FULL = 1 << 20  # bytes: less free space than this after a failed write means "disk full"


class OutputError(ValueError):
    """An output location cocogan refuses to write to (it holds the user's own files)."""


def first_line(error: BaseException) -> str:
    """An error's first line for a one-line message (its type's name when it has no text)."""
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _marker(folder: Path) -> str | None:
    """The text of ``folder``'s marker when cocogan wrote it, else None."""
    try:
        with open(Path(folder) / MARKER, "rb") as handle:
            text = handle.read(len(RUN_MARKER_TEXT) + 1).decode()
    except (OSError, UnicodeDecodeError):
        return None
    return text if text in (MARKER_TEXT, RUN_MARKER_TEXT) else None


def is_run_dir(folder: Path) -> bool:
    """A cocogan run: its run marker, or (a run from before markers) config.yaml and run.yaml
    beside a checkpoint whose safetensors header carries cocogan's metadata."""
    folder, marker = Path(folder), _marker(folder)
    if marker is not None or not all((folder / name).is_file() for name in RUN_FILES):
        return marker == RUN_MARKER_TEXT
    for weights in sorted((folder / "checkpoints").glob("step-*.safetensors")):
        with contextlib.suppress(OSError, ValueError, LookupError, TypeError, AttributeError,
                                 RecursionError), open(weights, "rb") as handle:
            size = int.from_bytes(handle.read(8), "little")
            metadata = json.loads(handle.read(size))["__metadata__"] if size < MAX_HEADER else {}
            if metadata.get("format") == "cocogan" and "config" in metadata:
                return True
    return False


def is_ours(folder: Path) -> bool:
    """A folder cocogan created or claimed (its marker), or a run."""
    return _marker(folder) is not None or is_run_dir(folder)


def run_own_file(path: Path) -> Path | None:
    """The run whose own file (:data:`RUN_OWN`, :data:`RUN_OWN_DIRS`) ``path`` is, else None."""
    path = Path(path).resolve()
    if path.name in RUN_OWN and is_run_dir(path.parent):
        return path.parent
    return next((f.parent for f in path.parents if f.name in RUN_OWN_DIRS
                 and is_run_dir(f.parent)), None)


def read_json_object(path: Path, limit: int = 1 << 20) -> dict | None:
    """A small JSON file's object, or None (absent, unreadable, too big or deep, not an object)."""
    with contextlib.suppress(OSError, ValueError, RecursionError):
        value = json.loads(path.read_text()) if path.stat().st_size <= limit else None
        return value if isinstance(value, dict) else None
    return None


def check_folder(folder: Path, flag: str) -> Path:
    """Raise OutputError unless cocogan may write into ``folder``; nothing is created."""
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputError(f"{flag} {folder} is a file, not a folder: choose a new folder")
    if folder.is_dir() and not is_ours(folder):
        foreign = sorted(p.name for p in folder.iterdir())
        if foreign:
            shown = ", ".join(foreign[:_SHOW]) + (", ..." if len(foreign) > _SHOW else "")
            raise OutputError(
                f"{flag} {folder} already holds files cocogan did not write ({shown}); cocogan "
                f"writes only into new or empty folders, its own output folders and run "
                f"folders, so nothing of yours is overwritten: choose a new {flag} folder")
    return folder


def claim_folder(folder: Path, flag: str, run: bool = False) -> Path:
    """:func:`check_folder`, then create ``folder`` and mark it as cocogan's (a run if ``run``)."""
    folder = check_folder(folder, flag)
    folder.mkdir(parents=True, exist_ok=True)
    marker = _marker(folder)
    if marker != RUN_MARKER_TEXT and (run or (marker is None and not is_run_dir(folder))):
        text = RUN_MARKER_TEXT if run else MARKER_TEXT  # a legacy run stays a run
        atomic_write(folder / MARKER, lambda tmp: tmp.write_text(text))
    return folder


def claim_file(path: Path, flag: str, sidecar: Path | None = None) -> Path:
    """Raise OutputError unless cocogan may write ``path`` (and its ``sidecar``)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{flag} {path} is a folder: name a file inside it")
    for target in (p for p in (path, sidecar) if p is not None):
        run = run_own_file(target)
        if run is not None:
            raise OutputError(f"{flag} {path}: {target} is one of the files of the cocogan run "
                              f"{run} (its checkpoints, config, metrics or eval.json), which it "
                              "needs to resume and load: choose another name")
    parent = path.parent
    if parent.exists() and not parent.is_dir():
        raise OutputError(f"{flag} {path}: {parent} is a file, not a folder")
    if parent.is_dir() and is_ours(parent):
        return path
    for existing in (p for p in (path, sidecar) if p is not None and p.exists()):
        if sidecar is None or SIDECAR_KEY not in (read_json_object(sidecar) or {}):
            raise OutputError(f"{flag} {path}: {existing} already exists and cocogan did not "
                              "write it; choose another name (nothing was overwritten)")
    return path


CACHE_ENV = "COCOGAN_CACHE"  # overrides the user cache folder (tests point it at tmp)


def cache_folder(kind: str) -> Path:
    """``$COCOGAN_CACHE/KIND``, else ``$XDG_CACHE_HOME`` (or ~/.cache) ``/cocogan/KIND``: where
    cocogan keeps what it can recompute (FID statistics, exported ONNX graphs)."""
    root = os.environ.get(CACHE_ENV)
    if root:
        return Path(root).expanduser() / kind
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "cocogan" / kind


def atomic_write(path: Path, write: Callable[[Path], object]) -> Path:
    """Call ``write(tmp_path)``, then rename the complete file onto ``path``; on any failure
    the temporary file is removed, and an OSError names ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        with open(tmp, "rb") as handle:
            os.fsync(handle.fileno())
        mask = os.umask(0o022)  # read the umask: the mode open(path, "w") gives a new file
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except OSError as error:
        # Some writers (numpy's tofile, used by tifffile) report a short write without an
        # errno; a file system left with no free space is then the cause.
        code = error.errno or (errno.ENOSPC if _nearly_full(path.parent) else errno.EIO)
        tmp.unlink(missing_ok=True)
        raise OSError(code, error.strerror or os.strerror(code), str(path)) from error
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _nearly_full(folder: Path) -> bool:
    try:
        return shutil.disk_usage(folder).free < NEARLY_FULL
    except OSError:
        return False


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (serialise first, so a write error is an OSError)."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))
