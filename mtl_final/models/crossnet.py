"""CrossNet: DCN's cross network alone (explicit feature crosses only, no deep part)."""
from __future__ import annotations

import torch

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.cross import CrossNet
from mtl_final.nn.logit_head import LogitHead

CROSS_LAYERS = Key(3, "cross layers", bounds=(1, None))  # the key of every CrossNet-based model


@register_model("crossnet")
class CrossNetModel(RankingModel):
    """x_0 = flattened field embeddings [batch, F·D] → CrossNet (num_cross_layers layers of
    x_{l+1} = x_0 (x_lᵀ w_l) + b_l + x_l) → Linear(F·D, 1) → logit."""

    KEYS = {"num_cross_layers": CROSS_LAYERS}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        flat_dim = features.num_fields * self.embedding_dim
        self.cross = CrossNet(flat_dim, cfg["model"]["num_cross_layers"])
        self.head = LogitHead(flat_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logit = self.head(self.cross(self.flat_embedding(batch))).squeeze(-1)
        return {self.task_names[0]: logit}, {}
