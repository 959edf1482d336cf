"""AttentionalPairwise: the attention-based pooling layer of AFM (Xiao et al., IJCAI 2017).

For the P = F(F−1)/2 field pairs i < j (ordered as torch.triu_indices(F, F, 1)):
    p_ij = e_i ⊙ e_j                                     pair-wise interaction layer, [D]
    a'_ij = h^T ReLU(W p_ij + b)                          attention network, W: [A, D], h: [A]
    a_ij = softmax over the P pairs of a'_ij
    out  = p^T Σ_{i<j} a_ij p_ij                          p: [D]
"""
from __future__ import annotations

import torch
from torch import nn


class AttentionalPairwise(nn.Module):
    """AFM's attention-pooled pairwise term.  [batch, fields, dim] → [batch].

    attention_dim: A, the attention network's hidden size. attention_dropout: dropout on the
    attention weights a_ij during training (0 = off). All pairs are computed at once from the
    triu index buffers; no loop over pairs. Its three Linear layers get the model's Xavier init.
    """

    def __init__(self, num_fields: int, embedding_dim: int, attention_dim: int = 10, attention_dropout: float = 0.0) -> None:
        super().__init__()
        if num_fields < 2:
            raise ValueError(f"AFM needs at least 2 fields to form pairs, got {num_fields}")
        if attention_dim < 1:
            raise ValueError(f"attention_dim must be >= 1, got {attention_dim}")
        if not 0.0 <= attention_dropout < 1.0:
            raise ValueError(f"attention_dropout must lie in [0, 1), got {attention_dropout}")
        rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.num_pairs = rows.numel()
        self.attention = nn.Linear(embedding_dim, attention_dim)  # W, b
        self.score = nn.Linear(attention_dim, 1, bias=False)  # h
        self.projection = nn.Linear(embedding_dim, 1, bias=False)  # p
        self.dropout = nn.Dropout(attention_dropout)

    def pair_products(self, emb: torch.Tensor) -> torch.Tensor:
        """e_i ⊙ e_j for all i < j.  [batch, fields, dim] → [batch, pairs, dim]."""
        return emb[:, self.rows] * emb[:, self.cols]

    def attention_weights(self, products: torch.Tensor) -> torch.Tensor:
        """softmax_ij(h^T ReLU(W p_ij + b)).  [batch, pairs, dim] → [batch, pairs] (rows sum to 1)."""
        scores = self.score(torch.relu(self.attention(products))).squeeze(-1)
        return torch.softmax(scores, dim=1)

    def forward(self, emb: torch.Tensor, return_weights: bool = False):
        """[batch, fields, dim] → [batch] (and the attention weights [batch, pairs] if asked)."""
        products = self.pair_products(emb)
        weights = self.attention_weights(products)
        pooled = (self.dropout(weights).unsqueeze(-1) * products).sum(dim=1)  # [batch, dim]
        out = self.projection(pooled).squeeze(-1)
        return (out, weights) if return_weights else out
