"""MMoE (Ma et al., KDD 2018): Multi-gate Mixture-of-Experts.

    f_k(x) = Σ_e g_k(x)_e · expert_e(x),   g_k(x) = softmax(W_k x)
    y_k    = tower_k(f_k(x))

x is the flattened field embedding [batch, F·D]; every expert is built by the block factory from
cfg.expert (so ``expert=final`` gives FINAL experts) and every tower is a ``Tower`` from cfg.tower.
"""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.gated_sum import gated_sum
from mtl_final.nn.tower import Tower, run_towers


@register_model("mmoe")
class MMoE(RankingModel):
    """Model keys: num_experts (default 4).

    After each forward, ``last_gates`` maps task name → gate weights [batch, num_experts]
    (softmax, rows sum to 1; detached), expert order as in ``self.experts``.
    Tasks ``on`` a parent get the base class's masked BCE.
    """

    MULTI_TASK = True
    KEYS = {"num_experts": Key(4, "experts, mixed by one gate per task", bounds=(1, None))}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        num_experts = int(cfg["model"]["num_experts"])
        in_dim = features.num_fields * self.embedding_dim
        self.experts = nn.ModuleList(build_block_from_config(cfg["expert"], in_dim, "expert") for _ in range(num_experts))
        expert_dim = self.experts[0].output_dim
        self.gates = nn.ModuleDict({name: nn.Linear(in_dim, num_experts) for name in self.task_names})
        self.towers = nn.ModuleDict({name: Tower(expert_dim, cfg["tower"]) for name in self.task_names})
        self.last_gates: dict[str, torch.Tensor] = {}

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = self.flat_embedding(batch)
        experts = torch.stack([expert(x) for expert in self.experts], dim=1)  # [B, E, H]
        gates = {name: torch.softmax(gate(x), dim=-1) for name, gate in self.gates.items()}  # [B, E]
        self.last_gates = {name: g.detach() for name, g in gates.items()}
        mixed = {name: gated_sum(g, experts) for name, g in gates.items()}
        return run_towers(self.towers, mixed)
