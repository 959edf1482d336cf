"""PLE (Tang et al., RecSys 2020): Progressive Layered Extraction — stacked CGC levels.

Level j (j = 1..L) holds, per task k, ``num_task_experts`` experts reading task k's input, plus
``num_shared_experts`` shared experts reading the shared input. With E_k = task k's experts and
E_s = the shared ones:

    task k output   g^{k,j} = softmax(W^{k,j} · in_k) · [E_k(in_k); E_s(in_s)]
    shared output   g^{s,j} = softmax(W^{s,j} · in_s) · [E_1(in_1); …; E_K(in_K); E_s(in_s)]

Level 1 reads the flattened embedding for every input; level j > 1 reads in_k = g^{k,j-1} and
in_s = g^{s,j-1}. The last level has no shared gate (nothing consumes its output). Towers (cfg.tower)
read g^{k,L}. Every expert comes from the block factory with cfg.expert.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.gated_sum import gated_sum
from mtl_final.nn.tower import Tower, run_towers


class CGCLevel(nn.Module):
    """One Customized Gate Control level.

    forward(task_inputs: task → [B, in_dim], shared_input [B, in_dim]) →
      (task outputs: task → [B, out_dim], shared output [B, out_dim] or None,
       task gates: task → [B, T + S], shared gate [B, K·T + S] or None)
    Task gate columns: task k's own T experts, then the S shared experts. Shared gate columns: the
    T experts of each task in `task_names` order, then the S shared experts.
    """

    def __init__(
        self,
        task_names: Sequence[str],
        in_dim: int,
        expert_section,
        num_task_experts: int,
        num_shared_experts: int,
        shared_gate: bool,
    ) -> None:
        super().__init__()
        self.task_names = list(task_names)

        def experts(n: int) -> nn.ModuleList:
            return nn.ModuleList(build_block_from_config(expert_section, in_dim, "expert") for _ in range(n))

        self.task_experts = nn.ModuleDict({name: experts(num_task_experts) for name in self.task_names})
        self.shared_experts = experts(num_shared_experts)
        any_expert = self.shared_experts[0] if num_shared_experts else self.task_experts[self.task_names[0]][0]
        self.output_dim = any_expert.output_dim
        own = num_task_experts + num_shared_experts
        self.task_gates = nn.ModuleDict({name: nn.Linear(in_dim, own) for name in self.task_names})
        total = len(self.task_names) * num_task_experts + num_shared_experts
        self.shared_gate = nn.Linear(in_dim, total) if shared_gate else None

    def forward(self, task_inputs: dict[str, torch.Tensor], shared_input: torch.Tensor):
        shared_outs = [expert(shared_input) for expert in self.shared_experts]
        task_outs = {
            name: [expert(task_inputs[name]) for expert in self.task_experts[name]] for name in self.task_names
        }
        outputs, gates = {}, {}
        for name in self.task_names:
            g = torch.softmax(self.task_gates[name](task_inputs[name]), dim=-1)  # [B, T + S]
            stacked = torch.stack(task_outs[name] + shared_outs, dim=1)  # [B, T + S, H]
            outputs[name] = gated_sum(g, stacked)
            gates[name] = g
        shared_out = shared_g = None
        if self.shared_gate is not None:
            shared_g = torch.softmax(self.shared_gate(shared_input), dim=-1)  # [B, K·T + S]
            every = [out for name in self.task_names for out in task_outs[name]] + shared_outs
            shared_out = gated_sum(shared_g, torch.stack(every, dim=1))
        return outputs, shared_out, gates, shared_g


@register_model("ple")
class PLE(RankingModel):
    """Model keys: num_levels (default 2), num_shared_experts (2), num_task_experts (2, per task).

    After each forward (detached, softmax rows sum to 1):
      ``last_task_gates``: list over levels (length num_levels) of dict task → [B, T + S]
        (columns: the task's own T experts, then the S shared experts);
      ``last_shared_gates``: list over levels 1..num_levels-1 of [B, K·T + S]
        (columns: each task's T experts in task order, then the S shared experts).
    Tasks ``on`` a parent get the base class's masked BCE.
    """

    MULTI_TASK = True
    KEYS = {
        "num_levels": Key(2, "extraction levels (CGC layers)", bounds=(1, None)),
        "num_shared_experts": Key(2, "shared experts per level", bounds=(0, None)),
        "num_task_experts": Key(2, "experts of each task per level (not both 0 with num_shared_experts)",
                                bounds=(0, None)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        num_levels, n_shared, n_task = int(m["num_levels"]), int(m["num_shared_experts"]), int(m["num_task_experts"])
        if n_shared + n_task < 1:
            raise ValueError(
                "model.num_shared_experts and model.num_task_experts must be >= 0 and not both 0, "
                f"got {n_shared} and {n_task}"
            )
        dim = features.num_fields * self.embedding_dim
        levels = []
        for j in range(num_levels):
            level = CGCLevel(self.task_names, dim, cfg["expert"], n_task, n_shared, shared_gate=j < num_levels - 1)
            levels.append(level)
            dim = level.output_dim
        self.levels = nn.ModuleList(levels)
        self.towers = nn.ModuleDict({name: Tower(dim, cfg["tower"]) for name in self.task_names})
        self.last_task_gates: list[dict[str, torch.Tensor]] = []
        self.last_shared_gates: list[torch.Tensor] = []

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x = self.flat_embedding(batch)
        task_in, shared_in = {name: x for name in self.task_names}, x
        task_gates, shared_gates = [], []
        for level in self.levels:
            task_in, shared_in, gates, shared_g = level(task_in, shared_in)
            task_gates.append({name: g.detach() for name, g in gates.items()})
            if shared_g is not None:
                shared_gates.append(shared_g.detach())
        self.last_task_gates, self.last_shared_gates = task_gates, shared_gates
        return run_towers(self.towers, task_in)
