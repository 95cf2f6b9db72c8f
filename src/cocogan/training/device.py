"""Where and how training runs: the device, the CPU thread count, the determinism switch and
the options that make a step faster without changing what it computes (docs/training.md).
"""

from __future__ import annotations

import os
import time

import torch

from cocogan.config import Config, ConfigError
from cocogan.model import GAN

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def available_cores() -> int:
    """Cores this process may use (respects CPU pinning by containers and schedulers)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def select_device(name: str) -> torch.device:
    """``--device`` auto | cpu | cuda[:N] of every command; a missing GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        try:
            device = torch.device(name)
        except RuntimeError:
            raise ConfigError(f"--device {name!r} is not a device: use auto, cpu, cuda or "
                              "cuda:N") from None
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {name} was requested but CUDA is not available: "
                              "use --device cpu or auto")
        return device
    raise ConfigError(f"--device must be one of {', '.join(DEVICE_CHOICES)}, got {name!r}")


def busy_cores(seconds: float = 0.3) -> float:
    """Usable cores other processes keep busy now (/proc/stat over ``seconds``; else loadavg)."""
    try:
        cpus = os.sched_getaffinity(0)
        before = _cpu_times(cpus)
        time.sleep(seconds)
        after = _cpu_times(cpus)
    except (AttributeError, OSError, ValueError):
        try:
            return min(float(available_cores()), os.getloadavg()[0])
        except (AttributeError, OSError):  # Windows
            return 0.0
    busy = 0.0
    for cpu, (idle, total) in after.items():
        if cpu in before and total > before[cpu][1]:
            busy += 1.0 - (idle - before[cpu][0]) / (total - before[cpu][1])
    return busy


def _cpu_times(cpus: set[int]) -> dict[int, tuple[int, int]]:
    """(idle + iowait, total) jiffies of each of ``cpus``."""
    times = {}
    with open("/proc/stat") as handle:
        for line in handle:
            name, *values = line.split()
            if name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in cpus:
                counts = [int(v) for v in values[:8]]
                times[int(name[3:])] = (counts[3] + counts[4], sum(counts))
    return times


def configure_threads(device: torch.device, threads: int | None = None) -> int:
    """Set torch's intra-op threads for a CPU run and return the count: ``threads`` (a resumed
    run's own: results differ bitwise between counts), else one per usable core others leave
    idle (oversubscribed OpenMP threads spin, 12-30x slower); ``OMP_NUM_THREADS`` wins."""
    if device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        if threads is None:
            threads = max(1, available_cores() - int(busy_cores() + 0.5))
        torch.set_num_threads(threads)
    return torch.get_num_threads()


# cuBLAS picks its reduction order per call unless its workspace is fixed (CUDA >= 10.2); read
# when cuBLAS starts, i.e. before the first matrix product on the GPU.
CUBLAS_WORKSPACE = ("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def use_determinism(deterministic: bool) -> None:
    """``run.deterministic``: deterministic cuDNN and torch kernels (an op without one raises),
    autotuner off, so two GPU runs agree; off: the autotuner's fastest kernels (CPU: no matter)."""
    if deterministic:
        os.environ.setdefault(*CUBLAS_WORKSPACE)
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic)


# A torch.compile backend replacing run.compile's mode; tests set "aot_eager" (no codegen: fast).
_BACKEND: str | None = None


def prepare_model(model: GAN, train: Config) -> GAN:
    """Apply ``run.deterministic``, ``run.channels_last`` and ``run.compile`` to ``model`` in
    place before the optimisers are built; returns it. Compiling G and D's trunk keeps parameter
    names; the gradient penalty calls the eager trunk (graphs cannot be differentiated twice)."""
    use_determinism(train.run.deterministic)  # else the autotuner: fixed shapes, fastest kernels
    if train.run.channels_last:
        model.to(memory_format=torch.channels_last)
    if train.run.compile != "off":
        options = {"backend": _BACKEND} if _BACKEND else {"mode": train.run.compile}
        model.generator.compile(**options)
        model.discriminator.blocks.compile(**options)
    return model
