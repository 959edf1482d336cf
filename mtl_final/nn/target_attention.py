"""TargetAttention: DIN's local activation unit, pooling a behaviour history toward a target item.

Zhou et al., KDD 2018 ("Deep Interest Network"): for history embeddings e_1..e_L and the target's
embedding e_t,

    w_l    = MLP([e_l, e_t, e_l − e_t, e_l ⊙ e_t])        (a scalar per position, no softmax)
    pooled = Σ_l m_l · w_l · e_l                          (m_l = 0 at padding, 1 elsewhere)

so the weights keep the intensity of the user's interest (a softmax would normalise it away).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtl_final.nn.activations import build_activation

ATTENTION_ACTIVATIONS = ("sigmoid", "relu", "prelu")


def _activation(name: str) -> nn.Module:
    if name not in ATTENTION_ACTIVATIONS:
        raise ValueError(f"attention_activation must be one of {list(ATTENTION_ACTIVATIONS)}, got {name!r}")
    return nn.PReLU() if name == "prelu" else build_activation(name)


class TargetAttention(nn.Module):
    """history [B, L, D], mask [B, L] bool (True = a real id), target [B, D] → pooled [B, D].

    The unit is Linear(4·D, u_1) → activation → … → Linear(u_k, 1), vectorised over [B, L]; a padded
    position weighs exactly 0 (its weight is replaced, so neither it nor its gradient leaks)."""

    def __init__(self, dim: int, units: Sequence[int], activation: str = "sigmoid") -> None:
        super().__init__()
        if not units or any(int(u) < 1 for u in units):
            raise ValueError(f"attention_units must be a non-empty list of widths >= 1, got {list(units)}")
        layers: list[nn.Module] = []
        width = 4 * dim
        for units_out in units:
            layers += [nn.Linear(width, int(units_out)), _activation(activation)]
            width = int(units_out)
        layers.append(nn.Linear(width, 1))
        self.unit = nn.Sequential(*layers)

    def weights(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """The weights w_l [B, L], 0 at padding."""
        t = target.unsqueeze(1).expand_as(history)
        w = self.unit(torch.cat([history, t, history - t, history * t], dim=-1)).squeeze(-1)
        return torch.where(mask, w, torch.zeros_like(w))

    def forward(self, history: torch.Tensor, mask: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        w = self.weights(history, mask, target)
        return (w.unsqueeze(-1) * history).sum(dim=1)
