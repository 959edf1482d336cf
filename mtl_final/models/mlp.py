"""MLP (the paper's DNN baseline): flattened field embeddings → deep block → logit."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.logit_head import LogitHead


@register_model("mlp")
class MLP(RankingModel):
    """[batch, F·D] → block (cfg.block: 'mlp', or 'final' for the Table 2 MLP+FINAL) → Linear → logit."""

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.block = build_block_from_config(cfg["block"], features.num_fields * self.embedding_dim)
        self.head = LogitHead(self.block.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        logit = self.head(self.block(self.flat_embedding(batch))).squeeze(-1)
        return {self.task_names[0]: logit}, {}
