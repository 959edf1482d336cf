"""The gated sum of a mixture of experts: out[b] = Σ_e gate[b, e] · experts[b, e] (MMoE, PLE).

`gated_sum` computes what ``torch.einsum("be,beh->bh", gate, experts)`` computes, bit for bit, with
a cheaper backward. The einsum is a batched matmul [B, 1, E]·[B, E, H]; its backward is two more:
the gate's gradient [B, 1, H]·[B, H, E] (a sum over H), and the experts' gradient
[B, E, 1]·[B, 1, H], whose inner dimension is 1: each element is the one product gate · grad. Here
the forward and the gate's gradient are the same batched matmuls, and the experts' gradient is that
product taken elementwise — the same float32 values without a matmul of B tiny matrices. It is
written expert-major ([E, B, H] memory, returned as its [B, E, H] view), so that each expert's
share of it (what ``torch.stack(outputs, dim=1)`` hands back to an expert) is a contiguous [B, H]
block, which the fused dense kernels take without a copy.

That product equals the matmul's only where the matmul multiplies the float32 inputs as they are:
on CPU, in float32, without autocast, at matmul precision "highest" or at "medium" where this CPU
does not round to bfloat16 (nn/cpu_matmul.py). Elsewhere (autocast, TF32 or bfloat16-rounding
matmuls, other devices), and without a backward to save, `gated_sum` is the einsum itself.
"""
from __future__ import annotations

import torch

from mtl_final.nn import cpu_matmul


class _GatedSum(torch.autograd.Function):
    """gate [B, E], experts [B, E, H] → [B, H]."""

    @staticmethod
    def forward(ctx, gate: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(gate, experts)
        return torch.bmm(gate.unsqueeze(1), experts).squeeze(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        gate, experts = ctx.saved_tensors
        grad_gate = grad_experts = None
        if ctx.needs_input_grad[0]:  # the einsum's own backward matmul
            grad_gate = torch.bmm(grad.unsqueeze(1), experts.transpose(1, 2)).squeeze(1)
        if ctx.needs_input_grad[1]:  # [E, B, H] = gate[b, e] · grad[b, h], as its [B, E, H] view
            batch, num, width = experts.shape
            expert_major = grad.new_empty(num, batch, width)
            torch.mul(gate.t().unsqueeze(2), grad.unsqueeze(0), out=expert_major)
            grad_experts = expert_major.transpose(0, 1)
        return grad_gate, grad_experts


def _products_exact(gate: torch.Tensor, experts: torch.Tensor) -> bool:
    """Whether a batched matmul here multiplies float32 inputs unrounded (see the module docstring)."""
    if experts.device.type != "cpu" or experts.dtype != torch.float32 or gate.dtype != torch.float32:
        return False
    if torch.is_autocast_enabled("cpu") or torch.compiler.is_exporting():
        return False
    precision = torch.get_float32_matmul_precision()
    return precision == "highest" or (precision == "medium" and not cpu_matmul.medium_matmul_rounds())


def gated_sum(gate: torch.Tensor, experts: torch.Tensor) -> torch.Tensor:
    """gate [B, E] (softmax rows), experts [B, E, H] → Σ_e gate[:, e] · experts[:, e] [B, H]."""
    backward = torch.is_grad_enabled() and (gate.requires_grad or experts.requires_grad)
    if backward and _products_exact(gate, experts):
        return _GatedSum.apply(gate, experts)
    return torch.einsum("be,beh->bh", gate, experts)
