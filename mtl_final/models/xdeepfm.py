"""xDeepFM (Lian et al., KDD 2018): linear + CIN (explicit) + deep block (implicit) interactions."""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.cin import CompressedInteraction
from mtl_final.nn.fm import LogisticRegression


@register_model("xdeepfm")
class XDeepFM(RankingModel):
    """logit = LR(x) + Linear(CIN(e)) + Linear(block(flatten(e))), e = embeddings [batch, F, D].

    Keys: cin_hidden_units. The deep part is cfg.block over [batch, F·D]: `block=final` gives the
    FINAL paper's Table 2 "xDeepFM+FINAL". Output: logit [batch].
    """

    DEFAULTS = {"cin_hidden_units": [16, 16, 16]}

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        self.first_order = LogisticRegression(features)
        self.cin = CompressedInteraction(features.num_fields, cfg["model"]["cin_hidden_units"])
        self.cin_head = nn.Linear(self.cin.output_dim, 1)
        self.block = build_block_from_config(cfg["block"], features.num_fields * self.embedding_dim)
        self.head = nn.Linear(self.block.output_dim, 1)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        emb = self.embedding(batch)
        explicit = self.cin_head(self.cin(emb)).squeeze(-1)
        implicit = self.head(self.block(emb.flatten(1))).squeeze(-1)
        logit = self.first_order(batch) + explicit + implicit
        return {self.task_names[0]: logit}, {}
