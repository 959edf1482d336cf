"""FINAL: the factorized interaction layer (Zhu et al., SIGIR 2023, eq. 1) and its block."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtl_final.nn import fast_paths
from mtl_final.nn.activations import build_activation
from mtl_final.nn.mlp import dense_stack


class FactorizedInteraction(nn.Module):
    """One FINAL layer: N multiplicative steps replacing a Linear.

        z_i = W_i x + b_i                           i = 1..N  (computed by one matmul)
        h_1 = z_1,   h_i = h_{i-1} ⊙ σ(z_i)         i = 2..N
        "sum":    out = Σ_i h_i                      each h_i has width out_dim
        "concat": out = [h_1, ..., h_N]              each h_i has width out_dim / N

    With identity σ and no bias, h_i is a homogeneous polynomial of degree i in x.
    N = 2 with "concat" is the public FinalNet layer [h2, h1 ⊙ h2] (there h2 := z_1).
    `plain_forward` computes exactly this; `forward` runs it, or where nn/fast_paths.py has one (N = 1;
    "concat" with identity σ) a faster implementation of the same values.
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

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Eq. 1 step by step: [batch, in_dim] → [batch, out_dim]."""
        z = self.linear(x).split(self.step_dim, dim=-1)  # z_1, ..., z_N: [batch, step_dim] each
        h = [z[0]]  # h_1 = z_1
        for z_i in z[1:]:
            h.append(h[-1] * self.sigma(z_i))  # h_i = h_{i-1} ⊙ σ(z_i)
        if self.aggregation == "concat":
            return torch.cat(h, dim=-1)  # [h_1, ..., h_N]
        return torch.stack(h, dim=0).sum(dim=0)  # Σ_i h_i

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = fast_paths.fast_forward(self, x)
        return self.plain_forward(x) if fast is None else fast(x)


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
