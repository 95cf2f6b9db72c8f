"""Data-parallel training over processes started by ``torchrun`` (docs/multi-gpu.md).

Every rank holds the whole model and a 1/R slice of ``optim.batch``; each optimiser averages its
gradients across ranks before stepping. An explicit all-reduce, not DDP: the penalty's double
backward and the three optimisers of one step do not fit DDP's one backward per forward. Every
collective goes through :func:`collective`, which turns a failure into :class:`PeerLost`.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor, nn

from cocogan.config import ConfigError
from cocogan.outputs import first_line

BACKENDS = ("auto", "nccl", "gloo")
DEFAULT_TIMEOUT_S = 1800.0  # a collective waits this long for a slow peer (e.g. rank 0's eval)
BUCKET_BYTES = 32 * 2**20  # gradients are all-reduced in flat buckets of at most this size
_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")
_FINAL_BARRIERS: list[dist.Work] = []  # kept to the end of the process: see shutdown()


class PeerLost(RuntimeError):
    """A collective failed: another rank died, the network failed or a timeout passed."""


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (a single process: rank 0 of 1)."""

    rank: int = 0  # global rank; rank 0 alone writes files and prints
    size: int = 1  # number of processes (WORLD_SIZE)
    local_rank: int = 0  # rank on this node: picks the GPU
    timeout_s: float = DEFAULT_TIMEOUT_S  # how long a collective waits before PeerLost
    sync_norm: bool = True  # batch-norm statistics over the global batch (False: per rank)

    @property
    def enabled(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def place(self, device: torch.device) -> torch.device:
        """``cuda`` becomes ``cuda:LOCAL_RANK`` when distributed."""
        if self.enabled and device.type == "cuda" and device.index is None:
            return torch.device("cuda", self.local_rank)
        return device

    def local_batch(self, batch: int) -> int:
        """Images per rank and step; ``optim.batch`` must split evenly."""
        if batch % self.size:
            raise ConfigError(f"optim.batch {batch} does not split evenly across {self.size} "
                              f"processes: use a multiple of {self.size}, e.g. --batch "
                              f"{(batch // self.size + 1) * self.size}")
        return batch // self.size


SINGLE = World()


def world_from_env(timeout_s: float = DEFAULT_TIMEOUT_S, sync_norm: bool = True) -> World:
    """The World that RANK / WORLD_SIZE / LOCAL_RANK describe (one process when unset)."""
    if "WORLD_SIZE" not in os.environ:
        return World(timeout_s=timeout_s, sync_norm=sync_norm)
    try:
        rank, size, local = (int(os.environ.get(name, "0")) for name in _ENV)
    except ValueError:
        raise ConfigError(f"RANK, WORLD_SIZE and LOCAL_RANK must be integers, got "
                          f"{[os.environ.get(n) for n in _ENV]}: launch with torchrun") from None
    if size < 1 or not 0 <= rank < size or local < 0:
        raise ConfigError(f"invalid process placement RANK={rank} WORLD_SIZE={size} "
                          f"LOCAL_RANK={local}: launch with torchrun")
    return World(rank=rank, size=size, local_rank=local, timeout_s=timeout_s, sync_norm=sync_norm)


def pick_backend(backend: str, device: torch.device) -> str:
    """``auto``: NCCL when this rank trains on a GPU, gloo on CPU."""
    if backend not in BACKENDS:
        raise ConfigError(f"--dist-backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise ConfigError("--dist-backend nccl needs GPUs: use gloo (or auto) with --device cpu")
    return backend


def init(device: torch.device, backend: str = "auto", timeout_s: float = DEFAULT_TIMEOUT_S,
         sync_norm: bool = True) -> World:
    """Join the process group torchrun's environment describes (without it: a World of 1)."""
    if timeout_s <= 0:
        raise ConfigError(f"--dist-timeout must be positive seconds, got {timeout_s}")
    world = world_from_env(timeout_s, sync_norm)
    if not world.enabled or dist.is_initialized():
        return world
    device = world.place(device)
    name = pick_backend(backend, device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    try:
        dist.init_process_group(name, timeout=datetime.timedelta(seconds=timeout_s))
    except (RuntimeError, ValueError) as error:
        raise PeerLost(f"could not join the process group ({name}, MASTER_ADDR="
                       f"{os.environ.get('MASTER_ADDR')}, MASTER_PORT="
                       f"{os.environ.get('MASTER_PORT')}): {_first_line(error)}") from None
    return world


def shutdown(together: bool = False) -> None:
    """Leave the process group; ``together`` (a normal end): after a barrier, so no rank
    tears down its connections while a peer still finishes a collective with it."""
    if not dist.is_initialized():
        return
    if together:
        with contextlib.suppress(RuntimeError):
            last = dist.barrier(async_op=True)
            last.wait()
            # Gloo's worker thread may drop its share of the barrier after wait() returns; if
            # that drop were the last, it would run in that thread during interpreter exit and
            # abort the process ("terminate called without an active exception", seen on a
            # loaded core). Holding the barrier here makes the main thread free it instead.
            _FINAL_BARRIERS.append(last)
    dist.destroy_process_group()


def stop_notice(world: World, signal_name: str, step: int) -> str:
    """What rank 0 says on a stop signal. A multi-process checkpoint needs every process, and
    under torchrun a SIGTERM usually means one has died, so there it promises none."""
    then = f"then, if all {world.size} processes are still running," if world.enabled else "then"
    return (f"received {signal_name}: finishing step {step}, {then} writing a checkpoint (send "
            "it again to quit without saving)")


def _first_line(error: BaseException) -> str:
    """The error's first sentence, without gloo's leading [source:line] tag."""
    return re.sub(r"^\[[^\]]*\]\s*", "", first_line(error)).split(". ")[0].rstrip(".")


@contextlib.contextmanager
def collective(world: World, what: str) -> Iterator[None]:
    """Turns a failed collective into PeerLost with the reason in one line."""
    try:
        yield
    except RuntimeError as error:  # DistBackendError, DistNetworkError and gloo's errors
        raise PeerLost(f"rank {world.rank} of {world.size} lost the other training processes "
                       f"during {what} (one died, was killed, or did not answer within "
                       f"{world.timeout_s:g} s): {_first_line(error)}") from None


def all_gather(world: World, local: Tensor, what: str) -> Tensor:
    """Every rank's ``local``, stacked in rank order: (R, *local.shape)."""
    parts = [torch.empty_like(local) for _ in range(dist.get_world_size())]  # the group's R
    with collective(world, what):
        dist.all_gather(parts, local)
    return torch.stack(parts)


def _buckets(tensors: list[Tensor], limit: int) -> Iterator[list[Tensor]]:
    """Consecutive groups of one dtype and device, each at most ``limit`` bytes (or one)."""
    bucket: list[Tensor] = []
    size = 0
    for tensor in tensors:
        nbytes = tensor.numel() * tensor.element_size()
        if bucket and (size + nbytes > limit or tensor.dtype != bucket[0].dtype
                       or tensor.device != bucket[0].device):
            yield bucket
            bucket, size = [], 0
        bucket.append(tensor)
        size += nbytes
    if bucket:
        yield bucket


def average_gradients_before_step(optimizers: Iterable[torch.optim.Optimizer],
                                  world: World) -> None:
    """A pre-step hook on each optimiser averages its gradients inside ``optimizer.step()``,
    after the (double) backward (every rank runs the same graph: the same grads are None)."""
    def hook(optimizer: torch.optim.Optimizer, args: object, kwargs: object) -> None:
        grads = [p.grad for group in optimizer.param_groups for p in group["params"]
                 if p.grad is not None]
        with collective(world, "the gradient all-reduce"):
            for bucket in _buckets(grads, BUCKET_BYTES):
                flat = torch.cat([t.reshape(-1) for t in bucket])  # (sum of numel,)
                dist.all_reduce(flat)
                flat.div_(world.size)
                offset = 0
                for grad in bucket:
                    grad.copy_(flat[offset:offset + grad.numel()].view_as(grad))
                    offset += grad.numel()

    for optimizer in optimizers:
        optimizer.register_step_pre_hook(hook)


def tracked_norms(module: nn.Module) -> list[nn.modules.batchnorm._NormBase]:
    """The batch-norm layers of ``module`` with running statistics."""
    return [layer for layer in module.modules()
            if isinstance(layer, nn.modules.batchnorm._NormBase)
            and layer.track_running_stats and layer.running_mean is not None]


def pooled_running_statistics(means: Tensor, variances: Tensor, momentum: float
                              ) -> tuple[Tensor, Tensor]:
    """The global batch's running (mean, variance) from R ranks' (R, C) running statistics,
    equal before this step, each moved by ``momentum`` towards its own shard's: the variance
    is mean_r(var_r) + mean_r((mean_r - mean)^2) / momentum (exact up to each shard's n - 1)."""
    mean = means.mean(0)  # (C,)
    spread = (means - mean).square().mean(0) / momentum
    return mean, variances.mean(0) + spread


def average_norm_statistics(world: World, module: nn.Module) -> None:
    """Per-rank batch norm (``sync_norm`` off): after every step, give every rank the global
    batch's running statistics (:func:`pooled_running_statistics`)."""
    if not world.enabled or world.sync_norm:
        return
    layers = tracked_norms(module)
    if not layers:
        return
    local = torch.cat([t.reshape(-1) for layer in layers
                       for t in (layer.running_mean, layer.running_var)])  # (2 sum C,)
    stats = all_gather(world, local, "the batch-norm statistics gather")  # (R, 2 sum C)
    offset = 0
    for layer in layers:
        channels = layer.running_mean.numel()
        means = stats[:, offset:offset + channels]
        variances = stats[:, offset + channels:offset + 2 * channels]
        offset += 2 * channels
        momentum = (layer.momentum if layer.momentum is not None
                    else 1.0 / max(1.0, float(layer.num_batches_tracked)))
        mean, var = pooled_running_statistics(means, variances, momentum)
        layer.running_mean.copy_(mean)
        layer.running_var.copy_(var)


def broadcast_module(world: World, module: nn.Module) -> None:
    """Copy rank 0's parameters and buffers to every rank (a safety net at start-up)."""
    if not world.enabled:
        return
    with collective(world, "the start-up weight broadcast"), torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)


def mean_losses(world: World, losses: dict[str, Tensor], device: torch.device,
                maximum: Callable[[str], bool] = lambda name: False) -> dict[str, Tensor]:
    """The 0-dim losses averaged (a NaN anywhere is one everywhere), or maxed if ``maximum``."""
    if not world.enabled:
        return losses
    names = list(losses)
    total = torch.stack([torch.as_tensor(losses[n], device=device).double() for n in names])
    top = total.clone()
    with collective(world, "the loss all-reduce"):
        dist.all_reduce(total)
        dist.all_reduce(top, op=dist.ReduceOp.MAX)
    is_max = torch.tensor([maximum(n) for n in names], device=device)
    reduced = torch.where(is_max, top, total / world.size).float()
    return {name: reduced[index] for index, name in enumerate(names)}


def any_rank(world: World, flag: bool, device: torch.device, what: str) -> bool:
    """True when ``flag`` is true on any rank (e.g. a stop signal reached one of them)."""
    if not world.enabled:
        return flag
    value = torch.tensor([float(flag)], device=device)
    with collective(world, what):
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item() > 0)


def agree_or_raise(world: World, error: Exception | None, device: torch.device, what: str) -> None:
    """Raise on every rank when ``what`` failed on any (its own error where it failed); also
    a barrier: no rank goes past before all have finished ``what``."""
    failed_somewhere = any_rank(world, error is not None, device, what)
    if error is not None:
        raise error
    if failed_somewhere:
        raise ConfigError(f"rank {world.rank}: another rank failed {what} (rank 0 prints why)")


def gather_rng_states(world: World, rng: torch.Generator, device: torch.device
                      ) -> list[Tensor]:
    """Every rank's step-RNG state, in rank order (for rank 0's checkpoint)."""
    state = rng.get_state()
    if not world.enabled:
        return [state]
    gathered = all_gather(world, state.to(device), "the RNG-state gather of a checkpoint")
    return [part.cpu().clone() for part in gathered]  # one storage each, as saved before


def barrier(world: World, device: torch.device, what: str) -> None:
    """Wait for every rank (an all-reduce, which works alike on NCCL and gloo)."""
    any_rank(world, False, device, what)
