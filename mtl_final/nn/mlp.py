"""MLPBlock: Linear → BatchNorm → activation → dropout, repeated."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import nn

from mtl_final.nn.activations import build_activation
from mtl_final.nn.dense_tail import FusedUnit, can_fuse, dense_tail, fused_unit
from mtl_final.nn.dropout import Dropout, ReLUDropout


class DenseStack(nn.Sequential):
    """The layers of a dense block, [layer, BatchNorm, activation(, dropout)] per width.

    Where every width is a fusable (layer, BatchNorm1d, ReLU/ReLUDropout) triple, a float32 CPU
    input runs each width as one fused op (`dense_tail`): in training, and in evaluation without
    autograd. Otherwise (other devices or dtypes, autocast, forward hooks on a layer) it runs the
    modules in turn.
    Shapes: [batch, in_dim] → [batch, out_dim]."""

    def __init__(self, layers: Sequence[nn.Module], units: Sequence[FusedUnit] | None) -> None:
        super().__init__(*layers)
        self.fused_units = list(units) if units else None

    def _hooked(self) -> bool:
        """Whether a forward hook watches a layer (the fused path would bypass it; torch keeps the
        global hooks in these module-level dicts)."""
        module = nn.modules.module
        return bool(module._global_forward_hooks or module._global_forward_pre_hooks) or any(
            m._forward_hooks or m._forward_pre_hooks for m in self.modules() if m is not self)

    def _fuses(self, x: torch.Tensor) -> bool:
        if not self.fused_units or not can_fuse(x) or self._hooked():
            return False
        if any(u.bn.training != self.training or u.act.training != self.training for u in self.fused_units):
            return False  # e.g. BatchNorm frozen in eval mode while the rest trains: the modules do that
        # training: BatchNorm needs two rows (its own error otherwise); evaluation: no backward
        return x.shape[0] > 1 if self.training else not torch.is_grad_enabled()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self._fuses(x):
            return super().forward(x)
        for unit in self.fused_units:
            x = dense_tail(unit, x)
        return x


def dense_stack(
    in_dim: int,
    hidden_units: Sequence[int],
    make_layer: Callable[[int, int], nn.Module],
    activation: str,
    dropout: float,
    batch_norm: bool,
) -> tuple[DenseStack, int]:
    """[make_layer(d_in, d_out) → BatchNorm → activation → dropout] per width; returns (stack, out dim).
    ReLU + dropout is one in-place module (ReLUDropout); with BatchNorm and ReLU every width is also
    a FusedUnit, which DenseStack runs as one fused op where it can."""
    layers: list[nn.Module] = []
    fused: list[FusedUnit | None] = []
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
        fused.append(fused_unit(*width) if len(width) == 3 else None)
        layers.extend(width)
        dim = units
    return DenseStack(layers, fused if fused and all(fused) else None), dim


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
