"""AIT: the Adaptive Information Transfer attention of AITM (Xi et al., KDD 2021)."""
from __future__ import annotations

import math

import torch
from torch import nn


class InformationTransfer(nn.Module):
    """Self-attention over the two inputs of a funnel step: the information p transferred from the
    previous step and the step's own tower output q.

        z = Σ_{u ∈ {p, q}} w_u · h_1(u),   w_u = softmax_u(⟨h_2(u), h_3(u)⟩ / √dim)

    h_1, h_2, h_3 are bias-free Linear(dim, dim) projections, as in the paper's reference code.
    Shapes: p, q [batch, dim] → z [batch, dim]; `weights(p, q)` gives w [batch, 2] (columns p, q).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.h1 = nn.Linear(dim, dim, bias=False)
        self.h2 = nn.Linear(dim, dim, bias=False)
        self.h3 = nn.Linear(dim, dim, bias=False)

    def weights(self, u: torch.Tensor) -> torch.Tensor:
        """u [batch, 2, dim] (p then q) → attention weights [batch, 2], rows summing to 1."""
        scores = (self.h2(u) * self.h3(u)).sum(dim=-1) / math.sqrt(self.dim)
        return torch.softmax(scores, dim=1)

    def forward(self, p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        u = torch.stack([p, q], dim=1)  # [batch, 2, dim]
        return (self.weights(u).unsqueeze(-1) * self.h1(u)).sum(dim=1)
