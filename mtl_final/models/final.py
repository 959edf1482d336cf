"""FINAL (Zhu et al., SIGIR 2023): 1B, dual blocks (2B), and 2B with self-distillation (2B+KD)."""
from __future__ import annotations

import torch

from mtl_final.config_spec import Key, Section
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.field_gate import FieldGate
from mtl_final.nn.logit_head import LogitHead
from mtl_final.nn.tower import self_distillation_loss


@register_model("final")
class FINAL(RankingModel):
    """Block 1 (cfg.block, optionally behind a FieldGate) and, with num_blocks=2, block 2
    (cfg.block with model.block2's units/dropout) over the plain embeddings; each block has its own
    Linear(·, 1). 2B: logit = (logit_1 + logit_2) / 2. kd: adds BCE(σ(logit_k), stop_grad(ŷ)) per block.
    """

    KEYS = {
        "num_blocks": Key(1, "1 block (1B), or 2 (2B: the two logits averaged)", bounds=(1, 2)),
        "kd": Key(False, "with num_blocks=2: self-distillation of each block toward the averaged prediction"),
        "field_gate": Key(False, "a FieldGate in front of block 1"),
        "block2": Section("block 2: the block section with its own widths and dropout", {
            "hidden_units": Key([400], "block 2's layer widths", bounds=(1, None)),
            "dropout": Key(0.1, "block 2's dropout", bounds=(0.0, 1.0)),
        }),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        if m["kd"] and m["num_blocks"] != 2:
            raise ValueError("model.kd=true needs model.num_blocks=2 (the two blocks teach each other)")
        self.kd = bool(m["kd"])
        flat_dim = features.num_fields * self.embedding_dim
        self.field_gate = FieldGate(features.num_fields) if m["field_gate"] else None
        self.block1 = build_block_from_config(cfg["block"], 2 * flat_dim if self.field_gate else flat_dim)
        self.head1 = LogitHead(self.block1.output_dim)
        self.block2 = self.head2 = None
        if m["num_blocks"] == 2:
            self.block2 = build_block_from_config(cfg["block"], flat_dim, units_key="model.block2.hidden_units",
                                                  **m["block2"])
            self.head2 = LogitHead(self.block2.output_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        emb = self.embedding(batch)
        x1 = self.field_gate(emb) if self.field_gate is not None else emb
        logit = self.head1(self.block1(x1.flatten(1))).squeeze(-1)
        aux = {}
        if self.block2 is not None:
            logit2 = self.head2(self.block2(emb.flatten(1))).squeeze(-1)
            logits = [logit, logit2]
            logit = (logit + logit2) / 2
            if self.kd and self.training:
                aux["kd"] = self_distillation_loss(logits, logit)
        return {self.task_names[0]: logit}, aux
