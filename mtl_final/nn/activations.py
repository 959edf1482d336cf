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


def build_activation(name: str) -> nn.Module:
    """'relu' → nn.ReLU() etc.; unknown names list the valid ones."""
    try:
        return ACTIVATIONS[name.lower()]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(ACTIVATIONS)}") from None
