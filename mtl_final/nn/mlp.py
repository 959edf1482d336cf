"""MLPBlock: Linear → BatchNorm → activation → dropout, repeated."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from mtl_final.nn.activations import build_activation
from mtl_final.nn.dropout import Dropout, ReLUDropout


def dense_stack(
    in_dim: int,
    hidden_units: Sequence[int],
    make_layer: Callable[[int, int], nn.Module],
    activation: str,
    dropout: float,
    batch_norm: bool,
) -> tuple[nn.Sequential, int]:
    """[make_layer(d_in, d_out) → BatchNorm → activation → dropout] per width; returns (stack, out dim).
    ReLU + dropout is one fused in-place module (ReLUDropout)."""
    layers: list[nn.Module] = []
    dim = in_dim
    for units in hidden_units:
        layers.append(make_layer(dim, units))
        if batch_norm:
            layers.append(nn.BatchNorm1d(units))
        if activation.lower() == "relu" and dropout > 0:
            layers.append(ReLUDropout(dropout))
        else:
            layers.append(build_activation(activation, inplace=True))
            if dropout > 0:
                layers.append(Dropout(dropout))
        dim = units
    return nn.Sequential(*layers), dim


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
        self.layers, self.output_dim = dense_stack(
            in_dim, hidden_units, lambda d_in, d_out: nn.Linear(d_in, d_out, bias=bias),
            activation, dropout, batch_norm,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)
