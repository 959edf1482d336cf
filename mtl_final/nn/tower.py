"""Tower: one task's head — a block (or two, dual) ending in a logit, with optional self-distillation."""
from __future__ import annotations

from typing import Any, Mapping

import torch
import torch.nn.functional as F
from torch import nn

from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.logit_head import LogitHead


def self_distillation_loss(block_logits: list[torch.Tensor], teacher_logit: torch.Tensor) -> torch.Tensor:
    """Σ_k BCE(sigmoid(logit_k), stop_grad(sigmoid(teacher))) — the FINAL 2B+KD terms.

    block_logits: k tensors [batch]; teacher_logit: [batch] (detached here, so no gradient
    ever reaches the teacher through these terms).
    """
    target = torch.sigmoid(teacher_logit.detach())
    return sum(F.binary_cross_entropy_with_logits(logit, target) for logit in block_logits)


class Tower(nn.Module):
    """[batch, in_dim] → logit [batch]; dual=True runs two blocks and averages their logits.

    `kd_loss` (set in training forward when dual and kd) holds the self-distillation terms of
    both blocks toward their averaged, detached prediction.
    """

    def __init__(self, in_dim: int, section: Mapping[str, Any]) -> None:
        super().__init__()
        self.dual = bool(section.get("dual", False))
        self.kd = bool(section.get("kd", False)) and self.dual
        self.blocks = nn.ModuleList(
            build_block_from_config(section, in_dim, "tower") for _ in range(2 if self.dual else 1)
        )
        self.heads = nn.ModuleList(LogitHead(block.output_dim) for block in self.blocks)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [batch, in_dim] → (logit [batch], kd loss scalar or None)."""
        logits = [head(block(x)).squeeze(-1) for block, head in zip(self.blocks, self.heads)]
        if len(logits) == 1:
            return logits[0], None
        logit = (logits[0] + logits[1]) / 2
        kd = self_distillation_loss(logits, logit) if self.kd and self.training else None
        return logit, kd


def run_towers(
    towers: nn.ModuleDict, inputs: torch.Tensor | dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Apply each task's Tower to the shared input [batch, d] (or to its own input, task → [batch, d]).

    Returns (task → logit [batch], 'kd/<task>' → self-distillation loss for dual towers)."""
    logits, aux = {}, {}
    for name, tower in towers.items():
        logits[name], kd = tower(inputs[name] if isinstance(inputs, dict) else inputs)
        if kd is not None:
            aux[f"kd/{name}"] = kd
    return logits, aux
