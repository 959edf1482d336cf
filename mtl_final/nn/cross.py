"""Explicit cross networks: DCN's CrossNet (Wang et al., ADKDD 2017) and DCN-V2's full-rank
CrossNetV2 (Wang et al., WWW 2021).

Both map x_0 = the flattened field embeddings [batch, d] to [batch, d] (same width), keeping x_0
for every layer. Weights are nn.Linear (so the model's net L2 and its Xavier-normal init cover
them); each module also initialises itself in `reset_parameters` (Xavier-normal weights, zero
biases) so that it is usable on its own.
"""
from __future__ import annotations

import torch
from torch import nn


class CrossNet(nn.Module):
    """DCN cross network, `num_layers` layers of

        x_{l+1} = x_0 · (x_lᵀ w_l) + b_l + x_l,      w_l, b_l ∈ R^d,

    i.e. each layer adds a rank-one feature cross of x_0 and x_l. Shapes: [batch, d] → [batch, d].
    Per layer: d weights + d biases.
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"CrossNet needs at least one layer, got num_layers={num_layers}")
        self.input_dim = self.output_dim = int(input_dim)
        self.num_layers = int(num_layers)
        # w_l as Linear(d, 1) without bias: x_l w_l is one matrix-vector product per layer.
        self.weights = nn.ModuleList(nn.Linear(input_dim, 1, bias=False) for _ in range(num_layers))
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for w in self.weights:
            nn.init.xavier_normal_(w.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [batch, d] → x_L [batch, d]."""
        x = x0
        for layer in range(self.num_layers):
            x = x0 * self.weights[layer](x) + self.bias[layer] + x  # [B, d] · [B, 1]
        return x


class CrossNetV2(nn.Module):
    """DCN-V2 full-rank cross network, `num_layers` layers of

        x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l,      W_l ∈ R^{d×d}, b_l ∈ R^d.

    Shapes: [batch, d] → [batch, d]. Per layer: d² weights + d biases.
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"CrossNetV2 needs at least one layer, got num_layers={num_layers}")
        self.input_dim = self.output_dim = int(input_dim)
        self.num_layers = int(num_layers)
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in self.layers:
            nn.init.xavier_normal_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        """x0 [batch, d] → x_L [batch, d]."""
        x = x0
        for layer in self.layers:
            x = x0 * layer(x) + x
        return x
