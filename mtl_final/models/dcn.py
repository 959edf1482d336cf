"""DCN (Wang et al., ADKDD 2017): cross network and deep block in parallel over x_0."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.crossnet import CROSS_LAYERS
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.cross import CrossNet
from mtl_final.nn.logit_head import LogitHead


@register_model("dcn")
class DCN(RankingModel):
    """x_0 = flattened field embeddings [batch, F·D];
    logit = Linear([CrossNet(x_0) ‖ block(x_0)]), block from cfg.block ('final' gives DCN+FINAL)."""

    KEYS = {"num_cross_layers": CROSS_LAYERS}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        flat_dim = features.num_fields * self.embedding_dim
        self.cross = CrossNet(flat_dim, cfg["model"]["num_cross_layers"])
        self.block = build_block_from_config(cfg["block"], flat_dim)
        self.head = LogitHead(flat_dim + self.block.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x0 = self.flat_embedding(batch)
        logit = self.head(torch.cat([self.cross(x0), self.block(x0)], dim=-1)).squeeze(-1)
        return {self.task_names[0]: logit}, {}
