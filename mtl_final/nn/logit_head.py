"""LogitHead: the Linear(·, 1) that ends every tower, kept in float32 under mixed precision."""
from __future__ import annotations

import torch
from torch import nn


class LogitHead(nn.Linear):
    """Linear(in_dim, 1) computed in float32 even inside a bfloat16 autocast region.

    A bfloat16 logit keeps 8 significant bits, so many rows would tie and AUC would drop; the
    head's cost is one [batch, in_dim] · [in_dim] product. Shapes: [batch, in_dim] → [batch, 1].
    """

    def __init__(self, in_dim: int) -> None:
        super().__init__(in_dim, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, enabled=False):
            return super().forward(x.to(self.weight.dtype))
