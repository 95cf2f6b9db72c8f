"""Up-front budgets for outputs that grow with a user-given size (``huge --size``,
``beyond --extend``, many seeds or frames): memory, disk and time are estimated before any work,
printed, and checked against what the machine has.

A command refuses (unless ``--force``) when the estimated peak memory exceeds the memory
available now or the output would not fit in the free space of its disk; the message carries
the estimate. Estimates are upper bounds of the arrays the command holds and the bytes it writes
(PNG/deflate output is usually much smaller than its raw pixels).
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

TIFF_INDEX_BYTES = 64  # tifffile keeps each tile's offset and byte count in Python lists
FLOAT_BYTES = 4


class BudgetError(ValueError):
    """The estimated memory or disk of a command exceeds what the machine has."""


@dataclass(frozen=True)
class Budget:
    """Estimated peak memory and output bytes of a command, and its time when measured."""

    what: str  # e.g. "huge 16384x16384"
    memory: int  # peak bytes held at once (arrays on the CPU side)
    disk: int  # bytes written (upper bound)
    seconds: float | None = None  # estimated run time, None when not measured

    def describe(self) -> str:
        time = f", ~{format_seconds(self.seconds)}" if self.seconds is not None else ""
        return (f"{self.what}: needs ~{format_bytes(self.memory)} of memory and up to "
                f"~{format_bytes(self.disk)} on disk{time}")


def image_bytes(count: int, height: int, width: int) -> int:
    """Raw 8-bit RGB bytes of ``count`` images: the upper bound of their PNG files."""
    return count * height * width * 3


def render_bytes(count: int, height: int, width: int) -> int:
    """Peak bytes to render ``count`` images at once: the float patches, the assembled float
    images and their 8-bit copy."""
    return count * height * width * 3 * (2 * FLOAT_BYTES + 1)


def available_memory() -> int:
    """Bytes of memory available to a new allocation now (MemAvailable on Linux)."""
    try:
        with open("/proc/meminfo") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 2**62  # unknown: do not refuse on memory


def free_disk(path: Path) -> int:
    """Free bytes on the file system that will hold ``path`` (its nearest existing folder)."""
    folder = Path(path).absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return shutil.disk_usage(folder if folder.is_dir() else folder.parent).free


def check_budget(budget: Budget, destination: Path) -> str:
    """Raise BudgetError when ``budget`` does not fit; else return its description.

    Args:
        destination: the output file or folder (its disk is checked).
    """
    problems = []
    memory, disk = available_memory(), free_disk(destination)
    if budget.memory > memory:
        problems.append(f"only {format_bytes(memory)} of memory is available")
    if budget.disk > disk:
        problems.append(f"only {format_bytes(disk)} is free on the disk of {destination}")
    if problems:
        raise BudgetError(f"{budget.describe()}, but {' and '.join(problems)}: choose a smaller "
                          "size (or pass --force to try anyway)")
    return budget.describe()


def format_bytes(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB", "PB"):
        if count < 1000 or unit == "PB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1000
    raise AssertionError("unreachable")


def format_seconds(seconds: float) -> str:
    if seconds < 1:
        return "<1 s"
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.0f} h"
