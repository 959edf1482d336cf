"""DCNv2 (Wang et al., WWW 2021): full-rank CrossNetV2 with a deep block, parallel or stacked."""
from __future__ import annotations

import torch

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.crossnet import CROSS_LAYERS
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.cross import CrossNetV2
from mtl_final.nn.logit_head import LogitHead


@register_model("dcnv2")
class DCNv2(RankingModel):
    """x_0 = flattened field embeddings [batch, F·D].
    parallel: logit = Linear([CrossNetV2(x_0) ‖ block(x_0)]);
    stacked:  logit = Linear(block(CrossNetV2(x_0))).
    block from cfg.block ('final' gives DCNv2+FINAL). No low-rank / mixture-of-experts cross."""

    KEYS = {
        "num_cross_layers": CROSS_LAYERS,
        "structure": Key("parallel", "parallel: Linear([cross ‖ block]); stacked: Linear(block(cross))",
                         choices=("parallel", "stacked")),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        self.stacked = m["structure"] == "stacked"
        flat_dim = features.num_fields * self.embedding_dim
        self.cross = CrossNetV2(flat_dim, m["num_cross_layers"])
        self.block = build_block_from_config(cfg["block"], flat_dim)
        head_dim = self.block.output_dim if self.stacked else flat_dim + self.block.output_dim
        self.head = LogitHead(head_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        x0 = self.flat_embedding(batch)
        if self.stacked:
            hidden = self.block(self.cross(x0))
        else:
            hidden = torch.cat([self.cross(x0), self.block(x0)], dim=-1)
        return {self.task_names[0]: self.head(hidden).squeeze(-1)}, {}
