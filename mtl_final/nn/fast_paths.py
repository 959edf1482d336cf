"""Faster implementations of the dense layers, and the one function that picks them.

nn/final.py and nn/mlp.py write their layers as the paper does (`plain_forward`); their `forward` runs
what `fast_forward(module, x)` returns instead, where it returns something:

- FactorizedInteraction with N = 1: its Linear alone (eq. 1 with one step is z_1; no split view and no
  copy, so an in-place activation may follow). Same values.
- FactorizedInteraction, "concat" with identity σ: under autograd `_ConcatSteps` (a hand-written
  backward), without it the steps in place in the Linear's output. Same values; gradients up to
  float rounding.
- DenseStack whose every width is a fusable (layer, BatchNorm1d, ReLU/ReLUDropout) triple: each width
  as one fused op (`dense_tail`, nn/dense_tail.py) for a 2-D float32 CPU input where the kernels may run
  (`kernels.can_run`: train.kernels=native, no autocast, not under torch.export), in training (at least
  two rows) and in evaluation without autograd. Same mathematics; float sums in another order, and
  dropout masks of its own. Not while a forward hook watches one of the stack's modules, whose calls it
  skips, nor while a BatchNorm or activation is in another train/eval mode than the stack.

tests/test_nn_final.py and tests/test_dense_tail.py compare each with the plain forward.
"""
from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Callable

import torch
from torch import nn

from mtl_final import kernels
from mtl_final.nn.dense_tail import FusedUnit, dense_tail
from mtl_final.nn.dropout import ReLUDropout

if TYPE_CHECKING:
    from mtl_final.nn.final import FactorizedInteraction
    from mtl_final.nn.mlp import DenseStack

Forward = Callable[[torch.Tensor], torch.Tensor]


def fast_forward(module: nn.Module, x: torch.Tensor) -> Forward | None:
    """What to run a FactorizedInteraction or a DenseStack on `x` [batch, in_dim] with instead of its
    `plain_forward`, or None where the plain forward must run."""
    from mtl_final.nn.final import FactorizedInteraction  # imported here: both modules import this one
    from mtl_final.nn.mlp import DenseStack

    if isinstance(module, DenseStack):
        units = _fusable_units(module, x)
        return None if units is None else partial(fused_widths, units)
    if isinstance(module, FactorizedInteraction):
        if module.num_steps == 1:
            return module.linear
        if module.aggregation == "concat" and isinstance(module.sigma, nn.Identity):
            return partial(concat_steps if _records_graph(module.linear, x) else concat_steps_in_place, module)
        return None
    raise TypeError(f"fast_forward takes a FactorizedInteraction or a DenseStack, not {type(module).__name__}")


def watched_by_forward_hooks(module: nn.Module) -> bool:
    """Whether a forward (pre-)hook would see one of `module`'s submodules run: one registered on a
    submodule, or a global one (`nn.modules.module.register_module_forward_hook` / `_pre_hook`), which
    sees every module. A fast path that skips the submodules' calls must not run then.

    torch offers no public way to ask; this reads its private hook dicts (per module, and the
    module-level ones of the global hooks), here and nowhere else."""
    registry = nn.modules.module
    if registry._global_forward_hooks or registry._global_forward_pre_hooks:
        return True
    return any(m._forward_hooks or m._forward_pre_hooks for m in module.modules() if m is not module)


# --- FINAL, "concat" with identity σ: [h_1, ..., h_N], h_1 = z_1, h_i = h_{i-1} ⊙ z_i ----------------

class _ConcatSteps(torch.autograd.Function):
    """[h_1, ..., h_N] for z = [z_1 | ... | z_N], written straight into one output buffer.

    Autograd would store every h_i, concatenate them, and in backward split, multiply, add and
    concatenate again; here forward writes each h_i once and backward writes each z-gradient
    slice once (h_i recomputed from z for N > 2). Shapes: [batch, N·step] → [batch, N·step]."""

    @staticmethod
    def forward(ctx, z: torch.Tensor, num_steps: int) -> torch.Tensor:
        zs = z.chunk(num_steps, dim=-1)
        out = torch.empty_like(z)
        hs = out.chunk(num_steps, dim=-1)
        hs[0].copy_(zs[0])
        for i in range(1, num_steps):
            torch.mul(hs[i - 1], zs[i], out=hs[i])
        ctx.save_for_backward(z)
        ctx.num_steps = num_steps
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (z,) = ctx.saved_tensors
        n = ctx.num_steps
        zs, gs = z.chunk(n, dim=-1), grad.chunk(n, dim=-1)
        hs = [zs[0]]
        for i in range(1, n - 1):
            hs.append(hs[-1] * zs[i])
        grad_z = torch.empty_like(z)
        grad_zs = grad_z.chunk(n, dim=-1)
        running = gs[n - 1]  # dL/dh_i in total, from h_i's own slot and from h_{i+1}
        for i in range(n - 1, 0, -1):
            torch.mul(running, hs[i - 1], out=grad_zs[i])
            running = torch.addcmul(gs[i - 1], running, zs[i], out=grad_zs[0] if i == 1 else None)
        return grad_z, None


def _records_graph(linear: nn.Linear, x: torch.Tensor) -> bool:
    """Whether autograd will record linear(x), so that the steps after it need a backward."""
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in linear.parameters()))


def concat_steps(layer: FactorizedInteraction, x: torch.Tensor) -> torch.Tensor:
    """[batch, in_dim] → [batch, out_dim] through `_ConcatSteps`, for autograd."""
    return _ConcatSteps.apply(layer.linear(x), layer.num_steps)


def concat_steps_in_place(layer: FactorizedInteraction, x: torch.Tensor) -> torch.Tensor:
    """[batch, in_dim] → [batch, out_dim] without autograd: h_i = h_{i-1} ⊙ z_i over z_i in the Linear's
    output (no backward needs the z_i)."""
    z = layer.linear(x)
    zs = z.chunk(layer.num_steps, dim=-1)
    for i in range(1, layer.num_steps):
        zs[i].mul_(zs[i - 1])
    return z


# --- DenseStack: each width as one fused op ------------------------------------------------------

def fused_units(stack: DenseStack) -> list[FusedUnit] | None:
    """Each width of `stack` as a FusedUnit, or None where one cannot fuse. Read from the current
    modules, so that a module swapped in later (e.g. CrossRankBatchNorm1d under DDP) is seen."""
    units = [_fused_unit(stack[a], stack[b], stack[c]) for a, b, c in stack.slots]
    return units if units and all(units) else None


def _fused_unit(layer: nn.Module, bn: nn.Module, act: nn.Module) -> FusedUnit | None:
    """The FusedUnit of a (layer, norm, activation) triple: a Linear, or FINAL with N = 1 or N = 2
    "concat" and identity σ (the steps the kernels implement); BatchNorm1d with affine parameters and
    running statistics; ReLU or ReLUDropout. None otherwise."""
    from mtl_final.nn.final import FactorizedInteraction  # imported here: that module imports this one

    if type(layer) is nn.Linear:
        linear, steps = layer, 1
    elif isinstance(layer, FactorizedInteraction) and (
            layer.num_steps == 1
            or (layer.num_steps == 2 and layer.aggregation == "concat" and isinstance(layer.sigma, nn.Identity))):
        linear, steps = layer.linear, layer.num_steps
    else:
        return None
    if type(bn) is not nn.BatchNorm1d or not (bn.affine and bn.track_running_stats):
        return None
    if not (isinstance(act, ReLUDropout) or type(act) is nn.ReLU):
        return None
    return FusedUnit(linear, steps, bn, act)


def _fusable_units(stack: DenseStack, x: torch.Tensor) -> list[FusedUnit] | None:
    """The fused units to run `x` through, or None where the modules must run."""
    units = fused_units(stack)
    # a 2-D CPU float32 input, no autocast, not while torch.export traces (a ctypes call cannot be traced)
    if units is None or not (x.dim() == 2 and kernels.can_run(x)) or watched_by_forward_hooks(stack):
        return None
    if any(u.bn.training != stack.training or u.act.training != stack.training for u in units):
        return None  # e.g. BatchNorm frozen in eval mode while the rest trains: the modules do that
    # training: BatchNorm needs two rows (its own error otherwise); evaluation: no backward
    fits = x.shape[0] > 1 if stack.training else not torch.is_grad_enabled()
    return units if fits else None


def fused_widths(units: list[FusedUnit], x: torch.Tensor) -> torch.Tensor:
    """[batch, in_dim] → [batch, out_dim]: each width's fused op in turn."""
    for unit in units:
        x = dense_tail(unit, x)
    return x
