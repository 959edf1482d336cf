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

    def __init__(self, layers: Sequence[nn.Module], slots: Sequence[tuple[int, int, int]]) -> None:
        super().__init__(*layers)
        self.slots = list(slots)  # (layer, BatchNorm, activation) positions of each width

    @property
    def fused_units(self) -> list[FusedUnit] | None:
        """Each width as a FusedUnit, or None where one cannot fuse. Read from the current modules, so
        that a module swapped in later (e.g. CrossRankBatchNorm1d under DDP) is seen."""
        units = [fused_unit(self[a], self[b], self[c]) for a, b, c in self.slots]
        return units if units and all(units) else None

    def _hooked(self) -> bool:
        """Whether a forward hook watches a layer (the fused path would bypass it; torch keeps the
        global hooks in these module-level dicts)."""
        module = nn.modules.module
        return bool(module._global_forward_hooks or module._global_forward_pre_hooks) or any(
            m._forward_hooks or m._forward_pre_hooks for m in self.modules() if m is not self)

    def _fusable(self, x: torch.Tensor) -> list[FusedUnit] | None:
        """The fused units to run `x` through, or None where the modules must run."""
        units = self.fused_units
        if units is None or not can_fuse(x) or self._hooked():
            return None
        if any(u.bn.training != self.training or u.act.training != self.training for u in units):
            return None  # e.g. BatchNorm frozen in eval mode while the rest trains: the modules do that
        # training: BatchNorm needs two rows (its own error otherwise); evaluation: no backward
        fits = x.shape[0] > 1 if self.training else not torch.is_grad_enabled()
        return units if fits else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        units = self._fusable(x)
        if units is None:
            return super().forward(x)
        for unit in units:
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
    ReLU + dropout is one in-place module (ReLUDropout); with BatchNorm and ReLU every width may also
    be a FusedUnit, which DenseStack runs as one fused op where it can."""
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
