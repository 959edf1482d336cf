"""One dense layer — Linear (+ FINAL's N=2 concat step) → BatchNorm → ReLU → dropout — as one fused
CPU op, with the same parameters and running statistics as the modules it stands for.

`dense_tail(unit, x)` runs a FusedUnit; nn/fast_paths.py decides which layers form one and when it
runs. The matmuls stay in PyTorch (MKL, or oneDNN inside nn/cpu_matmul.py's scope); the elementwise
work runs in mtl_final/kernels/cpu_kernels.c (2 passes forward, 2 backward, instead of ~10 and ~12).
Same mathematics as the unfused modules; float sums in another order, and dropout masks drawn by a
counter-based hash keyed from PyTorch's generator (so torch.manual_seed still fixes them).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from mtl_final import kernels
from mtl_final.kernels import ptr
from mtl_final.nn.dropout import ReLUDropout

_THRESHOLD_LEVELS = 1 << 24


@dataclass(frozen=True)
class FusedUnit:
    """A fusable layer: its Linear, N (1 or 2 concat steps), its BatchNorm1d and its ReLU or ReLUDropout."""

    linear: nn.Linear
    steps: int
    bn: nn.BatchNorm1d
    act: nn.Module

    @property
    def p(self) -> float:
        """Dropout probability, read at call time (a schedule may change it)."""
        return self.act.p if isinstance(self.act, ReLUDropout) else 0.0


def _bias(linear: nn.Linear) -> torch.Tensor:
    return linear.bias if linear.bias is not None else linear.weight.new_zeros(linear.out_features)


class _DenseTail(torch.autograd.Function):
    """x [B, in] → o [B, D] in training mode (batch statistics, dropout); updates running stats."""

    @staticmethod
    def forward(ctx, x, weight, bias, gamma, beta, unit: FusedUnit):
        lib = kernels.library()
        x = x.contiguous()
        z = torch.mm(x, weight.t())
        rows, width = z.shape
        o = torch.empty_like(z)
        passed = torch.empty(z.shape, dtype=torch.uint8)  # 1 where o > 0: all backward needs of o
        mean, var, invstd = (torch.empty(width) for _ in range(3))
        threshold = round(unit.p * _THRESHOLD_LEVELS)
        scale = 1.0 / (1.0 - threshold / _THRESHOLD_LEVELS)
        key = int(torch.empty((), dtype=torch.int64).random_())
        bn = unit.bn
        if lib.dense_tail_forward_train(
            ptr(z), ptr(bias), ptr(gamma), ptr(beta), rows, width, unit.steps, bn.eps, threshold, scale,
            key, ptr(o), ptr(passed), ptr(mean), ptr(var), ptr(invstd), torch.get_num_threads(),
        ):
            raise MemoryError("dense_tail_forward_train: out of memory for per-thread sums")
        bn.num_batches_tracked.add_(1)
        factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        bn.running_mean.mul_(1 - factor).add_(mean, alpha=factor)
        bn.running_var.mul_(1 - factor).add_(var, alpha=factor * rows / (rows - 1))
        ctx.save_for_backward(x, weight, bias, gamma, z, passed, mean, invstd)
        ctx.steps, ctx.scale = unit.steps, scale
        return o

    @staticmethod
    def backward(ctx, grad):
        x, weight, bias, gamma, z, passed, mean, invstd = ctx.saved_tensors
        grad = grad.contiguous()
        rows, width = z.shape
        dz = torch.empty_like(z)
        dgamma, dbeta, dbias = (torch.empty(width) for _ in range(3))
        if kernels.library().dense_tail_backward(
            ptr(grad), ptr(passed), ptr(z), ptr(bias), ptr(gamma), ptr(mean), ptr(invstd), rows, width,
            ctx.steps, ctx.scale, ptr(dz), ptr(dgamma), ptr(dbeta), ptr(dbias), torch.get_num_threads(),
        ):
            raise MemoryError("dense_tail_backward: out of memory for per-thread sums")
        dx = torch.mm(dz, weight) if ctx.needs_input_grad[0] else None
        dweight = torch.mm(dz.t(), x) if ctx.needs_input_grad[1] else None
        return dx, dweight, dbias, dgamma, dbeta, None


def _eval_tail(unit: FusedUnit, x: torch.Tensor) -> torch.Tensor:
    """Evaluation (running statistics, no dropout, no autograd): one pass, in place in the matmul output."""
    bn = unit.bn
    z = torch.mm(x.contiguous(), unit.linear.weight.t())
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale
    bias = _bias(unit.linear)  # held: the kernel reads it through a raw pointer
    kernels.library().dense_tail_forward_eval(
        ptr(z), ptr(bias), ptr(scale), ptr(shift), z.shape[0], z.shape[1], unit.steps,
        ptr(z), torch.get_num_threads(),
    )
    return z


def dense_tail(unit: FusedUnit, x: torch.Tensor) -> torch.Tensor:
    """[B, in] → [B, D]: the unit's layer, BatchNorm, ReLU and dropout (training) in fused kernels.

    For a 2-D CPU float32 input with at least two rows in training; evaluation runs without autograd
    (nn/fast_paths.py checks both and runs the modules otherwise)."""
    if unit.bn.training:
        return _DenseTail.apply(x, unit.linear.weight, _bias(unit.linear), unit.bn.weight, unit.bn.bias, unit)
    with torch.no_grad():
        return _eval_tail(unit, x)
