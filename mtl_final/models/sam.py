"""SAM (Cheng & Xue, SIGIR 2021, "Looking at CTR Prediction Again: Is Attention All You Need?"):
a self-attention-style feature-interaction layer, an aggregation layer, then a Linear output."""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.config import register_model_defaults
from mtl_final.data.features import Batch
from mtl_final.models.base import RankingModel
from mtl_final.models.registry import register_model
from mtl_final.nn.logit_head import LogitHead
from mtl_final.nn.self_attention import SAM_INTERACTIONS, SAMInteraction

AGGREGATIONS = ("concat", "weighted_pooling", "mean_pooling", "sum_pooling")


@register_model("sam")
class SAM(RankingModel):
    """Field embeddings [batch, F, D] → SAMInteraction (interaction_type; SAM3A/SAM3E stack
    num_interaction_layers layers) → [batch, P, D] (P = F for SAM3*, F(F-1)/2 for SAM2*) →
    aggregation → Linear → logit. Aggregations: concat [B, P·D]; weighted_pooling Σ_p a_p o_p with
    learned a_p (init 1); mean_pooling / sum_pooling over the P vectors → [B, D]."""

    DEFAULTS = {
        "interaction_type": "SAM3A",
        "aggregation": "concat",
        "num_interaction_layers": 3,
        "use_residual": True,
        "dropout": 0.0,
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        if m["aggregation"] not in AGGREGATIONS:
            raise ValueError(f"model.aggregation must be one of {list(AGGREGATIONS)}, got {m['aggregation']!r}")
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


# Register again with the allowed values so that config validation rejects bad choices.
register_model_defaults(
    "sam",
    SAM.DEFAULTS,
    choices={"interaction_type": list(SAM_INTERACTIONS), "aggregation": list(AGGREGATIONS)},
)
