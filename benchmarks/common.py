"""Shared benchmark helpers: the machine's own dense matmul FLOP/s, FLOP counting, timing.

Every figure a benchmark reports is a ratio measured in the same run (achieved FLOP/s over this
machine's matmul FLOP/s; ours over the simple way), so numbers from different machines compare.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
from torch.utils.flop_counter import FlopCounterMode


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_second(device: torch.device, size: int = 2048, repeats: int = 10,
                            dtype: torch.dtype = torch.float32) -> float:
    """Measured dense float32 matmul throughput of this device (the roofline we compare to)."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    synchronize(device)
    return 2 * size**3 * repeats / (time.perf_counter() - start)


class _GlobalOnly:
    """Stand-in for FlopCounterMode's module tracker, which installs autograd hooks that fail
    inside the gradient penalty's autograd.grad(create_graph=True) (torch 2.13); the benchmark
    needs only the global total, which the tracker's single "Global" parent gives."""

    parents = frozenset({"Global"})

    def __enter__(self) -> _GlobalOnly:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def count_flops(fn: Callable[[], object]) -> int:
    """FLOPs of one call of ``fn`` (forward, backward and the penalty's double backward)."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _GlobalOnly()
    with counter:
        fn()
    return counter.get_total_flops()


def time_call(fn: Callable[[], object], device: torch.device, *, warmup: int = 2,
              repeats: int = 5) -> float:
    """Median wall seconds of one call of ``fn``."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return sorted(times)[len(times) // 2]


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
