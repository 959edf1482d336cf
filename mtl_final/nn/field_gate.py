"""FieldGate: a learned per-field gate in front of the first FINAL block."""
from __future__ import annotations

import torch
from torch import nn


class FieldGate(nn.Module):
    """gates = (W Eᵀ + b)ᵀ mixes the field axis (W: [F, F], init 0; b: [F], init 1);
    output = concat_fields[E, E ⊙ gates].  Shapes: [batch, F, D] → [batch, 2F, D].
    """

    def __init__(self, num_fields: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(num_fields, num_fields))
        self.bias = nn.Parameter(torch.ones(num_fields))

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        gates = torch.einsum("gf,bfd->bgd", self.weight, emb) + self.bias[:, None]
        return torch.cat([emb, emb * gates], dim=1)
