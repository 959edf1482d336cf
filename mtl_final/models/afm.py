"""AFM (Xiao et al., IJCAI 2017): first-order term + attention-pooled pairwise interactions."""
from __future__ import annotations

import torch

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.afm import AttentionalPairwise
from mtl_final.nn.fm import LogisticRegression


@register_model("afm")
class AFM(RankingModel):
    """logit = LR(x) + p^T Σ_{i<j} a_ij (e_i ⊙ e_j), a = softmax_ij(h^T ReLU(W(e_i ⊙ e_j) + b)).

    Keys: attention_dim (A, hidden size of the attention net), attention_dropout (dropout on
    the attention weights a_ij while training). Shapes: embeddings [batch, F, D] → logit [batch].
    """

    KEYS = {
        "attention_dim": Key(10, "A: hidden size of the attention net", bounds=(1, None)),
        "attention_dropout": Key(0.0, "dropout on the attention weights a_ij while training", bounds=(0.0, 1.0)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        self.first_order = LogisticRegression(features)
        self.afm = AttentionalPairwise(
            features.num_fields, self.embedding_dim, int(m["attention_dim"]), float(m["attention_dropout"])
        )

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logit = self.first_order(batch) + self.afm(self.embedding(batch))
        return {self.task_names[0]: logit}, {}
