"""FINAL: the factorized interaction layer (Zhu et al., SIGIR 2023, eq. 1) and its block."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtl_final.nn.activations import build_activation
from mtl_final.nn.mlp import dense_stack


class _ConcatSteps(torch.autograd.Function):
    """[h_1, ..., h_N] with h_1 = z_1, h_i = h_{i-1} ⊙ z_i, for z = [z_1 | ... | z_N]: the
    "concat" aggregation with identity σ, written straight into one output buffer.

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


class FactorizedInteraction(nn.Module):
    """One FINAL layer: N multiplicative steps replacing a Linear.

        z_i = W_i x + b_i                           i = 1..N  (computed by one matmul)
        h_1 = z_1,   h_i = h_{i-1} ⊙ σ(z_i)         i = 2..N
        "sum":    out = Σ_i h_i                      each h_i has width out_dim
        "concat": out = [h_1, ..., h_N]              each h_i has width out_dim / N

    With identity σ and no bias, h_i is a homogeneous polynomial of degree i in x.
    N = 2 with "concat" is the public FinalNet layer [h2, h1 ⊙ h2] (there h2 := z_1).
    Shapes: [batch, in_dim] → [batch, out_dim].
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_steps: int = 2,
        aggregation: str = "concat",
        sigma: str = "identity",
        bias: bool = True,
    ) -> None:
        super().__init__()
        if num_steps < 1:
            raise ValueError(f"num_steps must be >= 1, got {num_steps}")
        if aggregation not in ("sum", "concat"):
            raise ValueError(f"aggregation must be 'sum' or 'concat', got {aggregation!r}")
        if aggregation == "concat" and out_dim % num_steps:
            raise ValueError(
                f"aggregation 'concat' splits out_dim={out_dim} into num_steps={num_steps} equal parts; "
                f"use a multiple of {num_steps} or aggregation='sum'"
            )
        self.num_steps = num_steps
        self.aggregation = aggregation
        self.step_dim = out_dim // num_steps if aggregation == "concat" else out_dim
        self.out_dim = out_dim
        self.linear = nn.Linear(in_dim, self.step_dim * num_steps, bias=bias)
        self.sigma = build_activation(sigma)

    @property
    def fused_steps(self) -> int | None:
        """N where the fused dense-layer kernels implement this layer (N = 1, or N = 2 "concat" with
        identity σ), else None."""
        if self.num_steps == 1 or (self.num_steps == 2 and self.aggregation == "concat"
                                   and isinstance(self.sigma, nn.Identity)):
            return self.num_steps
        return None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.num_steps == 1:  # a plain Linear; not a split view, so in-place activations may follow
            return self.linear(x)
        if self.aggregation == "concat" and isinstance(self.sigma, nn.Identity):
            z = self.linear(x)
            if z.requires_grad:
                return _ConcatSteps.apply(z, self.num_steps)
            zs = z.chunk(self.num_steps, dim=-1)  # no backward to feed: h_i = h_{i-1} ⊙ z_i in place
            for i in range(1, self.num_steps):
                zs[i].mul_(zs[i - 1])
            return z
        z = self.linear(x).split(self.step_dim, dim=-1)
        h = z[0]
        steps = [h]
        for z_i in z[1:]:
            h = h * self.sigma(z_i)
            steps.append(h)
        if self.aggregation == "concat":
            return torch.cat(steps, dim=-1)
        return torch.stack(steps, dim=0).sum(dim=0)


class FinalBlock(nn.Module):
    """K FINAL layers, each followed by BatchNorm → activation → dropout.

    Shapes: [batch, in_dim] → [batch, hidden_units[-1]].
    """

    def __init__(
        self,
        in_dim: int,
        hidden_units: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        num_steps: int = 2,
        aggregation: str = "concat",
        sigma: str = "identity",
        bias: bool = True,
    ) -> None:
        super().__init__()
        self.layers, self.output_dim = dense_stack(
            in_dim, hidden_units,
            lambda d_in, d_out: FactorizedInteraction(d_in, d_out, num_steps, aggregation, sigma, bias=bias),
            activation, dropout, batch_norm,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
