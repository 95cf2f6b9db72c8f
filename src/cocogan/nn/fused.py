"""The generator rewritten for inference: the same function as G in eval mode, fewer FLOPs.

A snapshot of the eval-mode weights (spectral norm applied, batch norm on running statistics)
in three exact rewrites, for every application's sampling and the exported ONNX graph; training
keeps the paper's module (:mod:`cocogan.nn.generator`):

- conv3x3(nearest_up2(a)) is one stride-2 transposed 4x4 conv of ``a``: per axis the 4 taps are
  [w(+1), w(0) + w(+1), w(-1) + w(0), w(-1)] of the 3x3 kernel (no upsampled copy, 16 instead
  of 36 multiply-adds per low-res pixel; the zero padding agrees at the borders);
- conv1x1(nearest_up2(x)) is nearest_up2(conv1x1(x)) (4x fewer FLOPs);
- each CBN is x * gamma'(c) + beta'(c) with its running statistics folded into its linears, all
  of them one matmul of the condition.

torch runs the narrow generators channels-last, as measured (docs/applications.md, "Backends").
Shapes: B batch, Z latent dims, D coordinate dims, C channels.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from cocogan.nn.generator import Generator
from cocogan.variants.heading import HeadingGenerator, turn_angle
from cocogan.variants.seamless import SeamlessGenerator, crop_margin

# Rows: the 4 transposed-conv taps; columns: the 3x3 kernel's taps w(-1), w(0), w(+1).
UP_TAPS = torch.tensor([[0, 0, 1], [0, 1, 1], [1, 1, 0], [1, 0, 0]], dtype=torch.float64)
SMALLEST = 3  # input side from which transposed convs are faster (benchmarks/backend_speed.py)
NARROW = 512  # widest stem that torch runs faster channels-last (docs/applications.md)
TARGETS = ("torch", "onnx")  # who runs the rewrite: torch itself, or the exported graph


def _cbn(norm: nn.Module) -> tuple[Tensor, Tensor]:
    """(W (2C, cond), b (2C,)) of [gamma'; beta'] = [gamma / s; beta - mean gamma / s]."""
    scale = (norm.norm.running_var.double() + norm.norm.eps).rsqrt()
    shift = norm.norm.running_mean.double() * scale
    wg, bg = norm.gamma.weight.double(), norm.gamma.bias.double()
    wb, bb = norm.beta.weight.double(), norm.beta.bias.double()
    return (torch.cat([wg * scale[:, None], wb - wg * shift[:, None]]),
            torch.cat([bg * scale, bb - bg * shift]))


class FusedBlock(nn.Module):
    """:class:`~cocogan.nn.generator.GeneratorBlock` given its CBN's gamma' and beta'."""

    def __init__(self, block: nn.Module, side: int) -> None:
        super().__init__()
        self.upsample = block.upsample
        self.transposed = self.upsample and side >= SMALLEST
        w1 = block.conv1.weight.double()
        if self.transposed:  # (C_in, C_out, 4, 4), the layout of conv_transpose2d
            w1 = torch.einsum("ay,oiyx,bx->ioab", UP_TAPS, w1, UP_TAPS)
        for name, value in (("w1", w1), ("b1", block.conv1.bias), ("w2", block.conv2.weight),
                            ("b2", block.conv2.bias), ("ws", block.shortcut.weight),
                            ("bs", block.shortcut.bias)):
            self.register_buffer(name, value.detach().float().clone())

    def forward(self, x: Tensor, g1: Tensor, a1: Tensor, g2: Tensor, a2: Tensor) -> Tensor:
        h = torch.addcmul(a1, x, g1).relu_()
        if self.transposed:
            h = F.conv_transpose2d(h, self.w1, self.b1, stride=2, padding=1)
        else:
            h = F.interpolate(h, scale_factor=2, mode="nearest") if self.upsample else h
            h = F.conv2d(h, self.w1, self.b1, padding=1)
        h = F.conv2d(torch.addcmul(a2, h, g2).relu_(), self.w2, self.b2, padding=1)
        s = F.conv2d(x, self.ws, self.bs)  # (B, C, H, W) at the input's resolution
        # in place: fewer large allocations; a broadcast over a (B, C, H, 2, W, 2) view is slower
        return h.add_(F.interpolate(s, scale_factor=2, mode="nearest") if self.upsample else s)


class FusedGenerator(nn.Module):
    """G(z | c) of a (seamless, heading) generator's eval-mode snapshot; inference only."""

    def __init__(self, source: Generator, target: str = "torch") -> None:
        super().__init__()
        assert target in TARGETS, f"target {target!r}: choose one of {TARGETS}"
        self.channels_last = target == "torch" and source.stem_channels <= NARROW
        self.layout = torch.channels_last if self.channels_last else torch.contiguous_format
        self.z_dim, self.coord_dim, self.micro = source.z_dim, source.coord_dim, source.micro
        self.margin = source.margin if isinstance(source, SeamlessGenerator) else 0
        self.turns = isinstance(source, HeadingGenerator)
        self.stem_shape = (source.stem_channels, source.stem_size, source.stem_size)
        sides = [source.stem_size << sum(b.upsample for b in source.blocks[:i])
                 for i in range(len(source.blocks))]  # each block's input side
        self.blocks = nn.ModuleList(map(FusedBlock, source.blocks, sides))
        norms = [_cbn(n) for b in source.blocks for n in (b.norm1, b.norm2)]
        self.splits = [len(b) // 2 for _, b in norms for _ in range(2)]  # gamma', beta' each
        tail = source.tail_norm
        scale = (tail.running_var.double() + tail.eps).rsqrt() * tail.weight.double()
        for name, value in (
                ("stem_w", source.stem.weight), ("stem_b", source.stem.bias),
                ("cbn_w", torch.cat([w for w, _ in norms])),
                ("cbn_b", torch.cat([b for _, b in norms])),
                ("tail_scale", scale[:, None, None]),
                ("tail_shift", (tail.bias - tail.running_mean * scale)[:, None, None]),
                ("tail_w", source.tail_conv.weight), ("tail_b", source.tail_conv.bias)):
            self.register_buffer(name, value.detach().float().clone())
        self.to(memory_format=self.layout)  # the 4-D weights in the activations' layout

    def forward(self, z: Tensor, coords: Tensor, *, keep_margin: bool = False) -> Tensor:
        coords = coords.to(z.dtype)
        if self.turns:
            coords = turn_angle(coords, math.pi * z[:, 0])
        cond = torch.cat([z, coords], dim=1)  # (B, Z + D)
        x = F.linear(cond, self.stem_w, self.stem_b).unflatten(1, self.stem_shape)
        x = x.contiguous(memory_format=self.layout)
        affine = F.linear(cond, self.cbn_w, self.cbn_b)[:, :, None, None].split(self.splits, 1)
        for index, block in enumerate(self.blocks):
            x = block(x, *affine[4 * index:4 * index + 4])
        x = torch.addcmul(self.tail_shift, x, self.tail_scale).relu_()
        canvas = F.conv2d(x, self.tail_w, self.tail_b, padding=1).tanh_().contiguous()
        return canvas if keep_margin else crop_margin(canvas, self.margin)


@torch.no_grad()
def fuse_for_inference(generator: Generator, target: str = "torch") -> FusedGenerator:
    """The inference rewrite of ``generator``'s eval-mode weights (spectral norm W / sigma with
    the stored vectors: no power iteration), on its device, for ``target`` (one of TARGETS)."""
    mode = generator.training
    try:
        return FusedGenerator(generator.eval(), target).eval()
    finally:
        generator.train(mode)
