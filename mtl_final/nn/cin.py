"""CompressedInteraction: xDeepFM's Compressed Interaction Network (Lian et al., KDD 2018).

With X^0 = the field embeddings [m = F fields, D] and X^k of H_k rows,
    X^k_{h,*} = Σ_{i=1..H_{k-1}} Σ_{j=1..m} W^{k,h}_{ij} (X^{k-1}_{i,*} ⊙ X^0_{j,*})      (eq. 6)
computed as the outer product Z^k = X^{k-1} ⊗ X^0 over the field axes ([H_{k-1}·m, D]) followed
by a 1x1 convolution over those H_{k-1}·m channels, i.e. a bias-free Linear applied per
embedding dimension. Each feature map is sum-pooled over D, p^k_h = Σ_d X^k_{h,d}, and the
pooled vectors of all layers are concatenated: p+ = [p^1, ..., p^K] (no activation, no split-half).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class CompressedInteraction(nn.Module):
    """CIN.  [batch, fields, dim] → [batch, Σ hidden_units].

    Layer k holds W^k as nn.Linear(H_{k-1}·F, H_k, bias=False) whose weight viewed as
    [H_k, H_{k-1}, F] is W^{k,h}_{ij}; it gets the model's Xavier init.
    """

    def __init__(self, num_fields: int, hidden_units: Sequence[int]) -> None:
        super().__init__()
        hidden_units = [int(h) for h in hidden_units]
        if not hidden_units:
            raise ValueError("cin_hidden_units must name at least one CIN layer")
        if any(h < 1 for h in hidden_units):
            raise ValueError(f"cin_hidden_units must all be >= 1, got {hidden_units}")
        self.num_fields = num_fields
        self.hidden_units = hidden_units
        prev = num_fields
        layers = []
        for units in hidden_units:
            layers.append(nn.Linear(prev * num_fields, units, bias=False))
            prev = units
        self.layers = nn.ModuleList(layers)
        self.output_dim = sum(hidden_units)

    def feature_maps(self, x0: torch.Tensor) -> list[torch.Tensor]:
        """X^1..X^K, each [batch, H_k, dim], from x0 [batch, fields, dim]."""
        maps = []
        xk = x0
        for layer in self.layers:
            z = torch.einsum("bhd,bmd->bhmd", xk, x0).flatten(1, 2)  # [batch, H_{k-1}·F, dim]
            xk = layer(z.transpose(1, 2)).transpose(1, 2)  # [batch, H_k, dim]
            maps.append(xk)
        return maps

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return torch.cat([xk.sum(dim=-1) for xk in self.feature_maps(x0)], dim=1)
