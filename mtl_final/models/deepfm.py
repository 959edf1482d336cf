"""DeepFM (Guo et al., IJCAI 2017): FM and a deep block sharing the field embeddings."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.fm import FMInteraction, LogisticRegression
from mtl_final.nn.logit_head import LogitHead


@register_model("deepfm")
class DeepFM(RankingModel):
    """logit = LR(x) + FM(e) + Linear(block(flatten(e))), e = field embeddings [batch, F, D].

    The deep part is cfg.block over [batch, F·D]: `block=final` gives the FINAL paper's
    Table 2 "DeepFM+FINAL". Output: logit [batch].
    """


    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.first_order = LogisticRegression(features)
        self.fm = FMInteraction()
        self.block = build_block_from_config(cfg["block"], features.num_fields * self.embedding_dim)
        self.head = LogitHead(self.block.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        emb = self.embedding(batch)
        deep = self.head(self.block(emb.flatten(1))).squeeze(-1)
        logit = self.first_order(batch) + self.fm(emb) + deep
        return {self.task_names[0]: logit}, {}
