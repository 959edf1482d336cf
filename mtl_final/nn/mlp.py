"""The dense stack — per width Linear → BatchNorm → activation → dropout — and MLPBlock."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from mtl_final.nn import fast_paths
from mtl_final.nn.activations import build_activation
from mtl_final.nn.dense_tail import FusedUnit
from mtl_final.nn.dropout import Dropout, ReLUDropout


class DenseStack(nn.Sequential):
    """The modules of a dense block, [layer, BatchNorm, activation(, dropout)] per width.

    `plain_forward` runs them in turn; `forward` runs that, or where nn/fast_paths.py finds one (every
    width fusable, a float32 CPU input, ...) each width as one fused op.
    Shapes: [batch, in_dim] → [batch, out_dim]."""

    def __init__(self, layers: Sequence[nn.Module], slots: Sequence[tuple[int, int, int]]) -> None:
        super().__init__(*layers)
        self.slots = list(slots)  # (layer, BatchNorm, activation) positions of each width

    def plain_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Each module in turn: [batch, in_dim] → [batch, out_dim]."""
        for module in self:
            x = module(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fast = fast_paths.fast_forward(self, x)
        return self.plain_forward(x) if fast is None else fast(x)

    @property
    def fused_units(self) -> list[FusedUnit] | None:
        """Each width as a FusedUnit, or None where one cannot fuse (nn/fast_paths.py)."""
        return fast_paths.fused_units(self)


def dense_stack(
    in_dim: int,
    hidden_units: Sequence[int],
    make_layer: Callable[[int, int], nn.Module],
    activation: str,
    dropout: float,
    batch_norm: bool,
) -> tuple[DenseStack, int]:
    """[make_layer(d_in, d_out) → BatchNorm → activation → dropout] per width; returns (stack, out dim).
    ReLU + dropout is one in-place module (ReLUDropout). The stack's `slots` hold each width's
    (layer, BatchNorm, activation) positions where every width has all three: what nn/fast_paths.py
    may fuse."""
    layers: list[nn.Module] = []
    slots: list[tuple[int, int, int]] = []
    dim = in_dim
    for units in hidden_units:
        width = [make_layer(dim, units)]
        if batch_norm:
            width.append(nn.BatchNorm1d(units))
        if activation.lower() == "relu" and dropout > 0:
            width.append(ReLUDropout(dropout))
        else:
            width.append(build_activation(activation, inplace=True))
            if dropout > 0:
                width.append(Dropout(dropout))
        if len(width) == 3:
            slots.append((len(layers), len(layers) + 1, len(layers) + 2))
        layers.extend(width)
        dim = units
    return DenseStack(layers, slots if len(slots) == len(hidden_units) else []), dim


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
