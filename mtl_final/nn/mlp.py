"""MLPBlock: Linear → BatchNorm → activation → dropout, repeated."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtl_final.nn.activations import build_activation
from mtl_final.nn.dropout import Dropout


class MLPBlock(nn.Module):
    """Plain deep block. Shapes: [batch, in_dim] → [batch, hidden_units[-1]] (in_dim if empty)."""

    def __init__(
        self,
        in_dim: int,
        hidden_units: Sequence[int],
        activation: str = "relu",
        dropout: float = 0.0,
        batch_norm: bool = True,
        bias: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        dim = in_dim
        for units in hidden_units:
            layers.append(nn.Linear(dim, units, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(units))
            layers.append(build_activation(activation))
            if dropout > 0:
                layers.append(Dropout(dropout))
            dim = units
        self.layers = nn.Sequential(*layers)
        self.output_dim = dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
