"""FM (Rendle, ICDM 2010): first-order term + Σ_{i<j} <e_i, e_j>."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.fm import FMInteraction, LogisticRegression


@register_model("fm")
class FM(RankingModel):
    """logit = LR(x) + ½ Σ_d[(Σ_f e_fd)² − Σ_f e_fd²], e = field embeddings [batch, F, D] → [batch]."""


    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.first_order = LogisticRegression(features)
        self.fm = FMInteraction()

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logit = self.first_order(batch) + self.fm(self.embedding(batch))
        return {self.task_names[0]: logit}, {}
