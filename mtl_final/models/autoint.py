"""AutoInt (Song et al., CIKM 2019): stacked multi-head self-attention over fields; with
use_deep=true it is AutoInt+ (a deep block's logit added)."""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.logit_head import LogitHead
from mtl_final.nn.self_attention import MultiHeadSelfAttention


@register_model("autoint")
class AutoInt(RankingModel):
    """Field embeddings [batch, F, D] → attention_layers × MultiHeadSelfAttention
    (num_heads heads of width attention_dim, residual projection, ReLU) → flatten
    [batch, F·H·d'] → Linear → logit. use_deep: + Linear(block(flattened embeddings)) (AutoInt+),
    block from cfg.block ('final' gives AutoInt+FINAL)."""

    KEYS = {
        "attention_layers": Key(3, "stacked self-attention layers", bounds=(1, None)),
        "num_heads": Key(2, "attention heads per layer", bounds=(1, None)),
        "attention_dim": Key(40, "width of each head", bounds=(1, None)),
        "use_residual": Key(True, "residual projection around each attention layer"),
        "use_scale": Key(False, "scale attention scores by 1/√d (the paper's attention is unscaled)"),
        "use_deep": Key(False, "add a deep block's logit (AutoInt+); the block from the block section"),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        layers, dim = [], self.embedding_dim
        for _ in range(m["attention_layers"]):
            layer = MultiHeadSelfAttention(
                dim, m["attention_dim"], m["num_heads"], use_residual=m["use_residual"], use_scale=m["use_scale"]
            )
            layers.append(layer)
            dim = layer.output_dim
        self.attention = nn.Sequential(*layers)
        self.head = LogitHead(features.num_fields * dim)
        self.block = self.block_head = None
        if m["use_deep"]:
            self.block = build_block_from_config(cfg["block"], features.num_fields * self.embedding_dim)
            self.block_head = LogitHead(self.block.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        emb = self.embedding(batch)
        logit = self.head(self.attention(emb).flatten(1))
        if self.block is not None:
            logit = logit + self.block_head(self.block(emb.flatten(1)))
        return {self.task_names[0]: logit.squeeze(-1)}, {}
