"""Where training runs: device choice and the CPU thread count.

CUDA is used when available (``--device auto``); a CPU run uses the cores this process may run
on that other processes leave idle, unless the user chose a count with ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import os

import torch

from cocogan.config import ConfigError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_cores() -> int:
    """Cores this process may use (respects CPU pinning by containers and schedulers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def select_device(name: str) -> torch.device:
    """The torch device for ``--device`` auto | cpu | cuda[:N]; a missing GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was requested but CUDA is not available: "
                              "use --device cpu or auto")
        return torch.device(name)
    raise ConfigError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")


def configure_threads(device: torch.device) -> int:
    """Set torch's intra-op threads for a CPU run; returns the count in use.

    One thread per usable core, minus the cores other processes keep busy (the 1-minute load
    average): oversubscribed OpenMP threads spin against each other and made small
    convolutions 15-30x slower on a shared 2-core machine. ``OMP_NUM_THREADS`` wins if set.
    """
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        cores = available_cores()
        try:
            busy = int(os.getloadavg()[0] + 0.5)
        except (AttributeError, OSError):  # Windows has no load average
            busy = 0
        torch.set_num_threads(max(1, cores - busy))
    return torch.get_num_threads()
