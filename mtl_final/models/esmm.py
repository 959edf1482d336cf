"""ESMM (Ma et al., SIGIR 2018): the Entire Space Multi-task Model.

pCTCVR = pCTR × pCVR. Both losses are taken over ALL impressions:

    L = BCE(pCTR, click) + BCE(pCTCVR, click · conversion)

so pCVR is only ever trained through the product, never on clicked rows alone (no sample
selection bias, and the unclicked rows also teach the CVR tower).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mtl_final.data.features import Batch
from mtl_final.models.base import ModelOutput, RankingModel, entire_space_name
from mtl_final.models.registry import register_model
from mtl_final.nn.tower import Tower, run_towers


def product_bce_with_logits(logit_a: torch.Tensor, logit_b: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean BCE(σ(a)·σ(b), target), computed in log space without clamping.

    With p = σ(a)σ(b):
        -log p     = softplus(-a) + softplus(-b)
        1 - p      = (e^-a + e^-b + e^-(a+b)) / ((1 + e^-a)(1 + e^-b))
        log(1 - p) = logsumexp(-a, -b, -a-b) - softplus(-a) - softplus(-b)
    hence BCE = softplus(-a) + softplus(-b) - (1 - y)·logsumexp(-a, -b, -a-b), exact for soft labels
    too, finite with finite gradients for every finite a, b (no log(0) as p → 0 or p → 1).
    """
    neg_log_p = F.softplus(-logit_a) + F.softplus(-logit_b)
    lse = torch.logsumexp(torch.stack([-logit_a, -logit_b, -logit_a - logit_b]), dim=0)
    return (neg_log_p - (1 - target) * lse).mean()


@register_model("esmm")
class ESMM(RankingModel):
    """Shared embedding [batch, F·D] → one Tower per task (cfg.tower) → logit per task.

    Exactly one task must be declared ``on`` another (child on parent, e.g. cvr on ctr); its
    probability product is published as ``entire_space_name(parent, child)`` ('ctcvr') by the base
    class. Losses (dict keyed by task name, so ``model.task_weights`` applies as usual):
      parent: BCE(σ(l_parent), y_parent) over all rows;
      child:  BCE(σ(l_parent)·σ(l_child), y_parent·y_child) over all rows (the pCTCVR loss — the
              child's only training signal);
      any other (independent) task: plain BCE over all rows.
    """

    MULTI_TASK = True

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        name = cfg["model"]["name"]  # also the entire-space models built on this one (escm2)
        described = ", ".join(f"{t.name} (on {t.on})" if t.on else f"{t.name} (no parent)" for t in self.tasks)
        children = [t for t in self.tasks if t.on]
        if len(children) != 1:
            raise ValueError(
                f"model {name!r} needs exactly one task declared `on` a parent task (e.g. cvr on ctr), "
                f"got {len(children)}; tasks: {described}"
            )
        child = children[0]
        if child.on not in self.task_names:
            raise ValueError(
                f"model {name!r}: task {child.name!r} is declared on {child.on!r}, which is not among the "
                f"selected tasks ({described}); select {child.on!r} too"
            )
        self.parent, self.child = child.on, child.name
        self.product_name = entire_space_name(self.parent, self.child)
        in_dim = features.num_fields * self.embedding_dim
        self.towers = nn.ModuleDict({name: Tower(in_dim, cfg["tower"]) for name in self.task_names})

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        h = self.flat_embedding(batch)
        return run_towers(self.towers, h)

    def task_losses(self, out: ModelOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """Entire-space losses (see the class docstring); every term averages over all rows."""
        losses = {}
        for name in self.task_names:
            if name == self.child:
                target = batch.labels[self.parent] * batch.labels[self.child]
                losses[name] = product_bce_with_logits(out.logits[self.parent], out.logits[name], target)
            else:
                losses[name] = F.binary_cross_entropy_with_logits(out.logits[name], batch.labels[name])
            losses[name] = losses[name] * batch.row_scale
        return losses
