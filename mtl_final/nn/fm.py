"""Factorization-machine pieces: the first-order (LR) term and the FM pairwise term.

FM (Rendle, ICDM 2010):  ŷ = w_0 + Σ_f w_f(x_f) + Σ_{i<j} <e_i, e_j>,
with the pairwise sum computed in O(F·D) by the sum-square identity
    Σ_{i<j} <e_i, e_j> = ½ Σ_d [ (Σ_f e_fd)² − Σ_f e_fd² ].
"""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.nn.embedding import FeatureEmbedding


def first_order_features(features: FeatureSpec) -> FeatureSpec:
    """The layout of the first-order weights: ``features`` with every attention sequence mean-pooled.

    A sequence's first-order term pools its ids' weights w_v like the field (mean, sum or max); a
    1-dim attention unit would compare scalars, so an attention history contributes the mean of its
    weights instead. A shared sequence reads its owner's weights (one w_v per item)."""
    sequences = tuple(dataclasses.replace(s, pooling="mean") if s.pooling == "attention" else s
                      for s in features.sequences)
    return dataclasses.replace(features, sequences=sequences)


def first_order_logit(weights: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """bias + Σ_f w_f.  weights: [batch, fields, 1] (or [batch, fields]); bias: [1] or None → [batch]."""
    out = weights.flatten(1).sum(dim=1)
    return out + bias if bias is not None else out


class LogisticRegression(nn.Module):
    """The first-order term w_0 + Σ_f w_f(x_f) of LR / FM / DeepFM / xDeepFM.

    The per-feature weights w_f are a FeatureEmbedding of dim 1 (its own table, so the base
    model's init and whole-table embedding L2 treat it like any other embedding); a numeric
    field contributes value · w_f, a sequence field its pooled weights (`first_order_features`). The
    bias w_0 starts at zero. Shapes: Batch → [batch].
    """

    def __init__(self, features: FeatureSpec, bias: bool = True) -> None:
        super().__init__()
        self.weights = FeatureEmbedding(first_order_features(features), 1)
        self.bias = nn.Parameter(torch.zeros(1)) if bias else None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        self.weights.reset_parameters()
        if self.bias is not None:
            self.bias.zero_()

    def forward(self, batch: Batch) -> torch.Tensor:
        return first_order_logit(self.weights(batch), self.bias)


def fm_pairwise(emb: torch.Tensor) -> torch.Tensor:
    """Σ_{i<j} <e_i, e_j> by the sum-square trick.  emb: [batch, fields, dim] → [batch]."""
    square_of_sum = emb.sum(dim=1).pow(2)  # [batch, dim]
    sum_of_square = emb.pow(2).sum(dim=1)  # [batch, dim]
    return 0.5 * (square_of_sum - sum_of_square).sum(dim=1)


class FMInteraction(nn.Module):
    """FM second-order term Σ_{i<j} <e_i, e_j> (no parameters).  [batch, fields, dim] → [batch]."""

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        return fm_pairwise(emb)
