"""xDeepFM (Lian et al., KDD 2018): linear + CIN (explicit) + deep block (implicit) interactions."""
from __future__ import annotations

import torch

from mtl_final.data.features import Batch
from mtl_final.models.cin import CIN
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.logit_head import LogitHead


@register_model("xdeepfm")
class XDeepFM(CIN):
    """logit = LR(x) + Linear(CIN(e)) + Linear(block(flatten(e))), e = embeddings [batch, F, D].

    The CIN model (same keys: cin_hidden_units) plus a deep part: cfg.block over [batch, F·D].
    `block=final` gives the FINAL paper's Table 2 "xDeepFM+FINAL". Output: logit [batch].
    """

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.block = build_block_from_config(cfg["block"], features.num_fields * self.embedding_dim)
        self.head = LogitHead(self.block.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        emb = self.embedding(batch)
        implicit = self.head(self.block(emb.flatten(1))).squeeze(-1)
        return {self.task_names[0]: self.explicit_logit(batch, emb) + implicit}, {}
