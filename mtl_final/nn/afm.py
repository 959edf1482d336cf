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

ATTENTION_CHUNK_ROWS = 2048


class _AttentionScore(torch.autograd.Function):
    """s = ReLU(P Wᵀ + b) h for P [N, D], W [A, D], b [A], h [A] → s [N].

    The [N, A] hidden layer is the only large tensor in AFM (N = batch · pairs). It is computed in
    row chunks that stay in cache and recomputed in backward instead of being stored: one Frappe
    training step (4096 rows, 45 pairs, A = 128, one thread) went from 0.53 s to 0.12 s.
    """

    @staticmethod
    def forward(ctx, products, weight, bias, h, chunk_rows):
        weight_t = weight.t().contiguous()  # [D, A]
        out = products.new_empty(products.shape[0])
        for start in range(0, products.shape[0], chunk_rows):
            rows = slice(start, start + chunk_rows)
            hidden = torch.addmm(bias, products[rows], weight_t).relu_()
            torch.mv(hidden, h, out=out[rows])
        ctx.save_for_backward(products, weight_t, bias, h)
        ctx.chunk_rows = chunk_rows
        return out

    @staticmethod
    def backward(ctx, grad_out):
        # Products are arranged so that BLAS sees long inner dimensions: on CPU, [A, n] @ [n, D]
        # runs ~5x slower than [D, n] @ [n, A] for the same numbers, hence the transposed buffers.
        products, weight_t, bias, h = ctx.saved_tensors
        grad_products = torch.empty_like(products)
        grad_weight_t, grad_bias, grad_h = torch.zeros_like(weight_t), torch.zeros_like(bias), torch.zeros_like(h)
        grad_out = grad_out.contiguous()
        for start in range(0, products.shape[0], ctx.chunk_rows):
            rows = slice(start, start + ctx.chunk_rows)
            hidden = torch.addmm(bias, products[rows], weight_t).relu_()
            grad_h.addmv_(hidden.t(), grad_out[rows])
            grad_hidden = torch.ops.aten.threshold_backward(torch.outer(grad_out[rows], h), hidden, 0)
            grad_weight_t.addmm_(products[rows].t(), grad_hidden)
            grad_bias.add_(grad_hidden.sum(dim=0))
            grad_products[rows] = torch.mm(weight_t, grad_hidden.t()).t()
        return grad_products, grad_weight_t.t(), grad_bias, grad_h, None


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
        b, pairs, dim = products.shape
        flat = products.reshape(b * pairs, dim)
        if torch.compiler.is_exporting():  # the chunk loop would fix the batch size into the traced graph
            scores = torch.relu(self.attention(flat)) @ self.score.weight[0]
        else:
            scores = _AttentionScore.apply(flat, self.attention.weight, self.attention.bias, self.score.weight[0],
                                           ATTENTION_CHUNK_ROWS)
        return torch.softmax(scores.view(b, pairs), dim=1)

    def forward(self, emb: torch.Tensor, return_weights: bool = False):
        """[batch, fields, dim] → [batch] (and the attention weights [batch, pairs] if asked).
        Runs outside autocast, in the weights' dtype: the fused score kernel takes one dtype, and this
        term is part of the logit."""
        with torch.autocast(emb.device.type, enabled=False):
            products = self.pair_products(emb.to(self.projection.weight.dtype))
            weights = self.attention_weights(products)
            pooled = (self.dropout(weights).unsqueeze(-1) * products).sum(dim=1)  # [batch, dim]
            out = self.projection(pooled).squeeze(-1)
        return (out, weights) if return_weights else out
