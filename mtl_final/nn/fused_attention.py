"""The core of AutoInt's interacting layer — per head softmax(scale · Q Kᵀ) V, + residual, ReLU — as
one fused CPU op (field_attention_* in mtl_final/kernels/cpu_kernels.c).

The four projections stay nn.Linear; the op replaces the head transposes, the two batched matmuls of
[F, d'] matrices, the softmax, the residual add and the ReLU, forward and backward. Same mathematics
as the PyTorch path of nn/self_attention.py; float sums in another order, independent of the thread
count.
"""
from __future__ import annotations

import torch
from torch.autograd.function import once_differentiable

from mtl_final import kernels
from mtl_final.kernels import ptr


def can_fuse(q: torch.Tensor) -> bool:
    """Whether projections [batch, F, H·d'] may take the fused path here and now (never under CPU
    autocast, nor while torch.export traces: a ctypes call cannot be traced)."""
    return q.dim() == 3 and kernels.can_run(q)


class _FieldAttention(torch.autograd.Function):
    """(q, k, v [B, F, H·d'], residual [B, F, H·d'] or None) → (out [B, F, H·d'], attention [B, H, F, F])."""

    @staticmethod
    def forward(ctx, q, k, v, residual, num_heads: int, scale: float):
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        residual = residual.contiguous() if residual is not None else None
        rows, fields, width = q.shape
        out = torch.empty_like(q)
        attention = q.new_empty(rows, num_heads, fields, fields)
        if kernels.library().field_attention_forward(
            ptr(q), ptr(k), ptr(v), ptr(residual) if residual is not None else None, rows, fields,
            num_heads, width // num_heads, scale, ptr(out), ptr(attention), torch.get_num_threads(),
        ):
            raise MemoryError("field_attention_forward: out of memory for per-thread scratch")
        ctx.save_for_backward(q, k, v, out, attention)
        ctx.mark_non_differentiable(attention)
        ctx.num_heads, ctx.scale, ctx.has_residual = num_heads, scale, residual is not None
        return out, attention

    @staticmethod
    @once_differentiable
    def backward(ctx, grad, _grad_attention):
        q, k, v, out, attention = ctx.saved_tensors
        grad = grad.contiguous()
        rows, fields, width = q.shape
        dq, dk, dv = torch.empty_like(q), torch.empty_like(q), torch.empty_like(q)
        dres = torch.empty_like(q) if ctx.has_residual else None
        if kernels.library().field_attention_backward(
            ptr(grad), ptr(out), ptr(attention), ptr(q), ptr(k), ptr(v), rows, fields, ctx.num_heads,
            width // ctx.num_heads, ctx.scale, ptr(dq), ptr(dk), ptr(dv),
            ptr(dres) if dres is not None else None, torch.get_num_threads(),
        ):
            raise MemoryError("field_attention_backward: out of memory for per-thread scratch")
        return dq, dk, dv, dres, None, None


def field_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, residual: torch.Tensor | None, num_heads: int, scale: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Projections q, k, v (and residual, or None) [B, F, H·d'], heads side by side in the last axis →
    (ReLU(heads' softmax(scale · Q Kᵀ) V concatenated + residual) [B, F, H·d'], attention [B, H, F, F]).
    For inputs that pass `can_fuse`."""
    return _FieldAttention.apply(q, k, v, residual, num_heads, scale)
