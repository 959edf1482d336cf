"""Activation lookup by config name."""
from __future__ import annotations

from torch import nn

ACTIVATIONS = {
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
    "identity": nn.Identity,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
}


def build_activation(name: str, inplace: bool = False) -> nn.Module:
    """'relu' → nn.ReLU() etc.; unknown names list the valid ones. `inplace` applies to relu only
    (safe after BatchNorm/Linear/FINAL layers, whose backward does not need their output)."""
    try:
        if name.lower() == "relu":
            return nn.ReLU(inplace=inplace)
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
