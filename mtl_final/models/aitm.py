"""AITM (Xi et al., KDD 2021): Adaptive Information Transfer Multi-task model for a funnel of steps.

Tasks t = 1..T form one funnel (impression → click → conversion: ctr, then cvr on ctr). With x the
flattened field embedding [batch, F·D]:

    q_t = f_t(x)                              the tower of step t (block factory, cfg.tower)
    z_1 = q_1
    p_{t-1} = g_{t-1}(z_{t-1})                the information transferred from step t-1 (t > 1)
    z_t = AIT(p_{t-1}, q_t)                   attention over the two, mtl_final/nn/ait.py (t > 1)
    ŷ_t = σ(w_t · z_t + b_t)                  = P(y_1 = … = y_t = 1 | x), over every impression

g_{t-1} reads z_{t-1}, which for the click step is its tower output q_1 (later steps pass on their AIT
output, as the paper and its reference code do).

Loss (the paper's, with every term a mean over the batch's rows):

    L = Σ_t BCE(ŷ_t, y_1·…·y_t) + α · Σ_{t>1} max(ŷ_t − ŷ_{t-1}, 0)

the second term being the behavioural expectation calibrator (a step's probability should not
exceed its predecessor's), α = ``model.calibrator_weight`` (default 0.6, the weight of the authors'
Ali-CCP example run). The term is a mean over rows like the BCE terms, as in the authors' standard
TensorFlow code; the PyTorch port sums it over the batch, which scales α with the batch size.
Following the paper, step t's BCE is taken over all impressions against the joint label
y_1·…·y_t (its "conversion" task is click·purchase), not masked to the parent's positive rows.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import ModelOutput, RankingModel, entire_space_name
from mtl_final.models.registry import register_model
from mtl_final.nn.ait import InformationTransfer
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.logit_head import LogitHead
from mtl_final.nn.tower import self_distillation_loss


def funnel_order(tasks: Sequence[Any], model_name: str) -> list[str]:
    """Task names from the funnel's first step to its last: one task without ``on``, each other one
    ``on`` the step before it. Anything else is a ValueError naming the tasks."""
    described = ", ".join(f"{t.name} (on {t.on})" if t.on else f"{t.name} (no parent)" for t in tasks)
    roots = [t.name for t in tasks if not t.on]
    child_of: dict[str, str] = {}
    for t in tasks:
        if t.on:
            child_of.setdefault(t.on, t.name)
    order = roots[:1]
    while order and order[-1] in child_of and len(order) <= len(tasks):
        order.append(child_of[order[-1]])
    if len(roots) != 1 or len(tasks) < 2 or sorted(order) != sorted(t.name for t in tasks):
        raise ValueError(
            f"model {model_name!r} models one funnel: the tasks must be a chain of at least two, the first "
            f"without a parent and each other one declared `on` the one before it (e.g. ctr, then cvr on ctr); "
            f"tasks: {described}"
        )
    return order


def calibrator_loss(logits: Sequence[torch.Tensor]) -> torch.Tensor:
    """mean over rows of Σ_{t>1} max(σ(l_t) − σ(l_{t-1}), 0); logits in funnel order, each [batch]."""
    probs = [torch.sigmoid(logit) for logit in logits]
    return sum(F.relu(child - parent) for parent, child in zip(probs, probs[1:])).mean()


class AITChain(nn.Module):
    """One AITM pass over the funnel: [batch, in_dim] → a logit [batch] per step, in funnel order.

    Per step a tower block f_t and a LogitHead; per transition a transfer block g_{t-1} (one layer of
    the tower's kind and width, as the paper's Dense + BatchNorm + activation + dropout); one AIT
    attention shared by every transition, as in the paper's reference code.
    """

    def __init__(self, steps: int, in_dim: int, section: Mapping[str, Any]) -> None:
        super().__init__()
        self.towers = nn.ModuleList(build_block_from_config(section, in_dim, "tower") for _ in range(steps))
        dim = self.towers[0].output_dim
        self.transfers = nn.ModuleList(
            build_block_from_config(section, dim, "tower", hidden_units=[dim]) for _ in range(steps - 1)
        )
        self.attention = InformationTransfer(dim)
        self.heads = nn.ModuleList(LogitHead(dim) for _ in range(steps))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        z = self.towers[0](x)
        logits = [self.heads[0](z).squeeze(-1)]
        for tower, transfer, head in zip(self.towers[1:], self.transfers, self.heads[1:]):
            z = self.attention(transfer(z), tower(x))
            logits.append(head(z).squeeze(-1))
        return logits


@register_model("aitm")
class AITM(RankingModel):
    """Shared embedding → AITChain (two with ``tower.dual=true``, logits averaged and, with
    ``tower.kd``, each distilled toward the average: aux loss ``kd/<task>``) → a logit per task.

    ``logits[t]`` is the logit of the joint ŷ_t = P(y_1 = … = y_t = 1). The published probabilities
    keep the library's names: ``probs[t_1]`` = ŷ_1 (pCTR); for t > 1 the entire-space product
    ``probs[entire_space_name(t-1, t)]`` ('ctcvr') = ŷ_t, the model's own output, and
    ``probs[t]`` ('cvr', scored on the parent's positive rows) = min(ŷ_t / ŷ_{t-1}, 1), the
    conditional probability that output implies. The calibrator is aux loss ``calibrator``.
    """

    MULTI_TASK = True
    KEYS = {
        "calibrator_weight": Key(0.6, "AITM: α of the calibrator α·Σ max(ŷ_t − ŷ_{t-1}, 0)", bounds=(0.0, None)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.order = funnel_order(self.tasks, cfg["model"]["name"])
        self.calibrator_weight = float(cfg["model"]["calibrator_weight"])
        section = cfg["tower"]
        self.kd = bool(section["dual"]) and bool(section["kd"])
        in_dim = features.num_fields * self.embedding_dim
        copies = 2 if section["dual"] else 1
        self.chains = nn.ModuleList(AITChain(len(self.order), in_dim, section) for _ in range(copies))

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        h = self.flat_embedding(batch)
        per_chain = [chain(h) for chain in self.chains]  # chains × steps logits [batch]
        logits, aux = {}, {}
        for step, name in enumerate(self.order):
            copies = [chain_logits[step] for chain_logits in per_chain]
            logits[name] = copies[0] if len(copies) == 1 else (copies[0] + copies[1]) / 2
            if self.kd and self.training:
                aux[f"kd/{name}"] = self_distillation_loss(copies, logits[name])
        aux["calibrator"] = self.calibrator_weight * calibrator_loss([logits[name] for name in self.order])
        return logits, aux

    def probabilities(self, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """ŷ_1 and, per later step, the conditional min(ŷ_t / ŷ_{t-1}, 1) under the task's name and
        the joint ŷ_t under the entire-space name (see the class docstring)."""
        probs = {self.order[0]: torch.sigmoid(logits[self.order[0]])}
        joints = {}
        for parent, child in zip(self.order, self.order[1:]):
            # ŷ_t / ŷ_{t-1} in log space: finite where ŷ_{t-1} underflows
            ratio = torch.exp(F.logsigmoid(logits[child]) - F.logsigmoid(logits[parent]))
            probs[child] = ratio.clamp(max=1.0)
            joints[entire_space_name(parent, child)] = torch.sigmoid(logits[child])
        return {**{name: probs[name] for name in self.task_names}, **joints}

    def task_losses(self, out: ModelOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """BCE(ŷ_t, y_1·…·y_t) over all rows, per task."""
        losses, target = {}, None
        for name in self.order:
            target = batch.labels[name] if target is None else target * batch.labels[name]
            losses[name] = F.binary_cross_entropy_with_logits(out.logits[name], target) * batch.row_scale
        return {name: losses[name] for name in self.task_names}
