"""SAM (Cheng & Xue, SIGIR 2021, "Looking at CTR Prediction Again: Is Attention All You Need?"):
a self-attention-style feature-interaction layer, an aggregation layer, then a Linear output."""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.logit_head import LogitHead
from mtl_final.nn.self_attention import SAM_INTERACTIONS, SAMInteraction


@register_model("sam")
class SAM(RankingModel):
    """Field embeddings [batch, F, D] → SAMInteraction (interaction_type; SAM3A/SAM3E stack
    num_interaction_layers layers) → [batch, P, D] (P = F for SAM3*, F(F-1)/2 for SAM2*) →
    aggregation → Linear → logit. Aggregations: concat [B, P·D]; weighted_pooling Σ_p a_p o_p with
    learned a_p (init 1); mean_pooling / sum_pooling over the P vectors → [B, D]."""

    KEYS = {
        "interaction_type": Key("SAM3A", "SAM2A/SAM2E over field pairs, SAM3A/SAM3E over fields",
                                choices=SAM_INTERACTIONS),
        "aggregation": Key("concat", "how the P output vectors become one",
                           choices=("concat", "weighted_pooling", "mean_pooling", "sum_pooling")),
        "num_interaction_layers": Key(3, "SAM3A/SAM3E: stacked interaction layers", bounds=(1, None)),
        "use_residual": Key(True, "residual connection in each interaction layer"),
        "dropout": Key(0.0, "dropout in the interaction layers", bounds=(0.0, 1.0)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        self.interaction = SAMInteraction(
            features.num_fields,
            self.embedding_dim,
            m["interaction_type"],
            num_layers=m["num_interaction_layers"],
            use_residual=m["use_residual"],
            dropout=m["dropout"],
        )
        self.aggregation = m["aggregation"]
        p = self.interaction.output_fields
        self.pool_weights = nn.Parameter(torch.ones(p)) if self.aggregation == "weighted_pooling" else None
        self.head = LogitHead(p * self.embedding_dim if self.aggregation == "concat" else self.embedding_dim)

    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        out = self.interaction(self.embedding(batch))  # [B, P, D]
        if self.aggregation == "concat":
            pooled = out.flatten(1)
        elif self.aggregation == "weighted_pooling":
            pooled = torch.einsum("bpd,p->bd", out, self.pool_weights)
        elif self.aggregation == "mean_pooling":
            pooled = out.mean(1)
        else:
            pooled = out.sum(1)
        return {self.task_names[0]: self.head(pooled).squeeze(-1)}, {}
