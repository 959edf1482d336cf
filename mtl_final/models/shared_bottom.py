"""Shared-Bottom: one embedding (and optional shared block) under one tower per task.

This is the FINAL paper's online multi-task setting: ``tower=final`` swaps every MLP tower for a
FINAL block, ``tower.dual=true`` gives each task two blocks (+ self-distillation with
``tower.kd=true``, reported as aux loss ``kd/<task>``).
"""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.blocks import build_block_from_config
from mtl_final.nn.tower import Tower, run_towers


@register_model("shared_bottom")
class SharedBottom(RankingModel):
    """[batch, F·D] → shared block (optional) → Tower per task → logit per task.

    Model keys:
      shared_units: hidden units of the block shared by all tasks ([] = none: the towers read the
        flattened embedding directly). The shared block is built from the ``tower`` section
        (kind, activation, dropout, batch_norm and the FINAL options) with
        ``hidden_units=shared_units``, so ``tower=final`` turns the whole deep part into FINAL
        layers; the ``expert`` section is left to the mixture-of-experts models.

    Tasks declared ``on: parent`` (cvr on ctr) get the base class's BCE masked to rows whose parent
    label is 1; the base class also adds the entire-space product ('ctcvr') to the probabilities.
    """

    MULTI_TASK = True
    KEYS = {
        "shared_units": Key([], "widths of the block shared by all tasks, built like the towers ([] = none)",
                            proto=[1], bounds=(1, None)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        shared_units = list(cfg["model"]["shared_units"])
        in_dim = features.num_fields * self.embedding_dim
        self.shared = None
        if shared_units:
            self.shared = build_block_from_config(cfg["tower"], in_dim, "tower", units_key="model.shared_units",
                                                  hidden_units=shared_units)
            in_dim = self.shared.output_dim
        self.towers = nn.ModuleDict({name: Tower(in_dim, cfg["tower"]) for name in self.task_names})

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        h = self.flat_embedding(batch)
        if self.shared is not None:
            h = self.shared(h)
        return run_towers(self.towers, h)
