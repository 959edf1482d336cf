"""CIN: xDeepFM's Compressed Interaction Network alone (explicit interactions only, no deep part)."""
from __future__ import annotations

import torch

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.cin import CompressedInteraction
from mtl_final.nn.fm import LogisticRegression
from mtl_final.nn.logit_head import LogitHead


@register_model("cin")
class CIN(RankingModel):
    """logit = LR(x) + Linear(p+), p+ = sum-pooled CIN feature maps [batch, Σ cin_hidden_units].

    Keys: cin_hidden_units (H_1..H_K, one CIN layer each). Shapes: [batch, F, D] → [batch].
    """

    KEYS = {"cin_hidden_units": Key([16, 16, 16], "H_1..H_K: feature maps of each CIN layer", bounds=(1, None))}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.first_order = LogisticRegression(features)
        self.cin = CompressedInteraction(features.num_fields, cfg["model"]["cin_hidden_units"])
        self.cin_head = LogitHead(self.cin.output_dim)

    def explicit_logit(self, batch: Batch, emb: torch.Tensor) -> torch.Tensor:
        """LR(x) + Linear(CIN(emb)): embeddings [batch, F, D] → [batch] (shared with xDeepFM)."""
        return self.first_order(batch) + self.cin_head(self.cin(emb)).squeeze(-1)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {self.task_names[0]: self.explicit_logit(batch, self.embedding(batch))}, {}
