"""CrossNetV2: DCN-V2's full-rank cross network alone (explicit feature crosses only)."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.crossnet import CROSS_LAYERS
from mtl_final.models.registry import register_model
from mtl_final.nn.cross import CrossNetV2
from mtl_final.nn.logit_head import LogitHead


@register_model("crossnetv2")
class CrossNetV2Model(RankingModel):
    """x_0 = flattened field embeddings [batch, F·D] → CrossNetV2 (num_cross_layers layers of
    x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l) → Linear(F·D, 1) → logit."""

    KEYS = {"num_cross_layers": CROSS_LAYERS}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        flat_dim = features.num_fields * self.embedding_dim
        self.cross = CrossNetV2(flat_dim, cfg["model"]["num_cross_layers"])
        self.head = LogitHead(flat_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logit = self.head(self.cross(self.flat_embedding(batch))).squeeze(-1)
        return {self.task_names[0]: logit}, {}
