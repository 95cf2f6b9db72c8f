"""Batch norm with statistics over the global batch of a multi-process run, on any backend.

CUDA runs ``torch.nn.SyncBatchNorm``'s kernels; on CPU (gloo, where torch's class raises)
:class:`_GlobalNorm` all-gathers each rank's (count, mean, M2) from two passes and merges them
as Chan et al. do, exact in float32 even when |mean| >> std; backward all-reduces
[sum dy, sum dy*x_hat]. State-dict names are unchanged; single backwards only.

Shapes: N batch, C channels, R ranks, then any spatial dims; statistics are per channel.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx

from cocogan.training.distributed import World, all_gather, collective


def merge_moments(counts: Tensor, means: Tensor, m2s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Chan et al.'s merge: (R, 1) counts, (R, C) means and M2s -> count, mean, variance."""
    total = counts.sum(0)  # (1,)
    mean = (counts * means).sum(0) / total  # (C,)
    m2 = m2s.sum(0) + (counts * (means - mean) ** 2).sum(0)
    return total, mean, m2 / total


class _GlobalNorm(torch.autograd.Function):
    """x_hat = (x - mean) / sqrt(var + eps) with mean and (biased) var over every rank's x."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: Tensor, eps: float, world: World
                ) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        dims = [0, *range(2, x.dim())]
        channels = x.shape[1]
        shape = [1, channels] + [1] * (x.dim() - 2)
        xf = x.to(torch.promote_types(x.dtype, torch.float32))  # float32 under bf16 autocast
        local_mean = xf.mean(dims)  # (C,)
        local_m2 = (xf - local_mean.view(shape)).square().sum(dims)  # two passes: no cancellation
        count = torch.tensor([x.numel() / channels], dtype=xf.dtype, device=x.device)
        local = torch.cat([count, local_mean, local_m2])  # (2C + 1,)
        stats = all_gather(world, local, "the synchronised batch-norm forward")  # (R, 2C + 1)
        total, mean, var = merge_moments(stats[:, :1], stats[:, 1:channels + 1],
                                         stats[:, channels + 1:])
        inv_std = torch.rsqrt(var + eps)
        x_hat = ((xf - mean.view(shape)) * inv_std.view(shape)).to(x.dtype)
        ctx.save_for_backward(x_hat, inv_std, total)
        ctx.world = world
        ctx.mark_non_differentiable(mean, var, total)
        return x_hat, mean, var, total

    @staticmethod
    def backward(ctx: FunctionCtx, grad: Tensor, *unused: Tensor
                 ) -> tuple[Tensor, None, None]:
        x_hat, inv_std, total = ctx.saved_tensors
        dims = [0, *range(2, grad.dim())]
        channels = grad.shape[1]
        grad_f, x_hat_f = grad.to(inv_std.dtype), x_hat.to(inv_std.dtype)
        sums = torch.cat([grad_f.sum(dims), (grad_f * x_hat_f).sum(dims)])  # (2C,)
        with collective(ctx.world, "the synchronised batch-norm backward"):
            dist.all_reduce(sums)
        shape = [1, channels] + [1] * (grad.dim() - 2)
        mean_grad = (sums[:channels] / total).view(shape)
        mean_grad_x_hat = (sums[channels:] / total).view(shape)
        grad_x = (grad_f - mean_grad - x_hat_f * mean_grad_x_hat) * inv_std.view(shape)
        return grad_x.to(grad.dtype), None, None


class SyncBatchNorm(nn.SyncBatchNorm):
    """Batch norm with training statistics over all ranks (same parameters and buffers)."""

    def __init__(self, layer: nn.modules.batchnorm._BatchNorm, world: World) -> None:
        super().__init__(layer.num_features, layer.eps, layer.momentum, layer.affine,
                         layer.track_running_stats)
        self.load_state_dict(layer.state_dict())
        self.to(next(iter(layer.state_dict().values())).device)
        self.world = world
        self.synchronise = True  # False while one rank works alone (see paused)

    def forward(self, x: Tensor) -> Tensor:
        if not (self.training and self.world.enabled and self.synchronise):
            return nn.modules.batchnorm._BatchNorm.forward(self, x)  # local statistics
        if x.device.type == "cuda":
            return super().forward(x)
        assert x.dim() >= 2, f"batch norm expects (N, C, ...), got {tuple(x.shape)}"
        x_hat, mean, var, total = _GlobalNorm.apply(x, self.eps, self.world)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                momentum = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                            else self.momentum)
                unbiased = var * total / (total - 1).clamp(min=1)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), momentum)
                self.running_var.lerp_(unbiased.to(self.running_var.dtype), momentum)
        if not self.affine:
            return x_hat
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x_hat * self.weight.view(shape) + self.bias.view(shape)


def synchronise_batch_norm(module: nn.Module, world: World) -> int:
    """Replace ``module``'s batch norms in place by SyncBatchNorm; returns how many."""
    if not world.enabled:
        return 0
    replaced = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.modules.batchnorm._BatchNorm) and \
                    not isinstance(child, SyncBatchNorm):
                setattr(parent, name, SyncBatchNorm(child, world))
                replaced += 1
    return replaced


@contextlib.contextmanager
def paused(module: nn.Module) -> Iterator[None]:
    """Local statistics while one rank works alone (rank 0's hooks): a collective there would
    wait for ranks that are not calling it."""
    layers = [m for m in module.modules() if isinstance(m, SyncBatchNorm)]
    for layer in layers:
        layer.synchronise = False
    try:
        yield
    finally:
        for layer in layers:
            layer.synchronise = True
