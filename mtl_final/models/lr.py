"""LR: logistic regression on the encoded fields (the first-order baseline)."""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.embedding import FeatureEmbedding
from mtl_final.nn.fm import first_order_features, first_order_logit


@register_model("lr")
class LR(RankingModel):
    """logit = w_0 + Σ_f w_f(x_f): first order only.

    The model's embedding IS the table of first-order weights: `self.embedding` is replaced by a
    FeatureEmbedding of dim 1 (so model.embedding_dim is not used, `self.embedding_dim` is 1, and
    model.embedding_regularizer acts on these weights); a sequence field adds its pooled weights
    (`first_order_features`). Batch → logit [batch].
    """

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.embedding = FeatureEmbedding(first_order_features(features), 1)
        self.embedding_dim = 1
        self.bias = nn.Parameter(torch.zeros(1))

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        return {self.task_names[0]: first_order_logit(self.embedding(batch), self.bias)}, {}
