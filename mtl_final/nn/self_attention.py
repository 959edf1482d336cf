"""Self-attention over fields: AutoInt's multi-head interacting layer (Song et al., CIKM 2019) and
the SAM feature-interaction layers (Cheng & Xue, "Looking at CTR Prediction Again: Is Attention
All You Need?", SIGIR 2021).

Fields are the "tokens": inputs are field embeddings [batch, F, D]. All projections are
bias-free nn.Linear (Xavier-normal, as the model's init also sets); SAM's per-pair weight
vectors are own parameters initialised to ones.
"""
from __future__ import annotations

import torch
from torch import nn

from mtl_final.nn.fused_attention import can_fuse, field_attention

SAM_INTERACTIONS = ("SAM2A", "SAM2E", "SAM3A", "SAM3E")


class MultiHeadSelfAttention(nn.Module):
    """One AutoInt interacting layer. For every head h (h = 1..H, per-head width d'):

        Q_h = X W_Q^h,  K_h = X W_K^h,  V_h = X W_V^h              [B, F, d']
        A_h = softmax_row(Q_h K_hᵀ  (/ √d' if use_scale))           [B, F, F], rows sum to 1
        out = ReLU( [A_1 V_1 ‖ … ‖ A_H V_H] + X W_res )              [B, F, H·d']

    The residual term X W_res (a projection, as in the paper) is dropped with use_residual=False.
    Shapes: [batch, F, input_dim] → [batch, F, num_heads · attention_dim].
    """

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        use_residual: bool = True,
        use_scale: bool = False,
    ) -> None:
        super().__init__()
        if attention_dim < 1 or num_heads < 1:
            raise ValueError(f"attention_dim and num_heads must be >= 1, got {attention_dim}, {num_heads}")
        self.attention_dim = int(attention_dim)
        self.num_heads = int(num_heads)
        self.output_dim = self.num_heads * self.attention_dim
        self.use_scale = bool(use_scale)
        self.query = nn.Linear(input_dim, self.output_dim, bias=False)
        self.key = nn.Linear(input_dim, self.output_dim, bias=False)
        self.value = nn.Linear(input_dim, self.output_dim, bias=False)
        self.residual = nn.Linear(input_dim, self.output_dim, bias=False) if use_residual else None
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        for layer in (self.query, self.key, self.value, self.residual):
            if layer is not None:
                nn.init.xavier_normal_(layer.weight)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[B, F, H·d'] → [B, H, F, d']."""
        b, f, _ = x.shape
        return x.view(b, f, self.num_heads, self.attention_dim).transpose(1, 2)

    def forward(self, x: torch.Tensor, return_attention: bool = False):
        """x [B, F, input_dim] → [B, F, H·d'] (and the attention [B, H, F, F] if asked). CPU float32
        inputs run the attention core as one fused op (nn/fused_attention.py)."""
        q, k, v = self.query(x), self.key(x), self.value(x)
        residual = self.residual(x) if self.residual is not None else None
        if can_fuse(q):
            scale = self.attention_dim**-0.5 if self.use_scale else 1.0
            out, attention = field_attention(q, k, v, residual, self.num_heads, scale)
            return (out, attention) if return_attention else out
        q, k, v = self._heads(q), self._heads(k), self._heads(v)
        scores = q @ k.transpose(-1, -2)  # [B, H, F, F]
        if self.use_scale:
            scores = scores / self.attention_dim**0.5
        attention = scores.softmax(dim=-1)
        out = (attention @ v).transpose(1, 2).flatten(2)  # [B, F, H·d'], heads concatenated
        if residual is not None:
            out = out + residual
        out = torch.relu(out)
        return (out, attention) if return_attention else out


class SAMInteraction(nn.Module):
    """SAM feature-interaction layer(s) over field embeddings E = [e_1 … e_F], e_i ∈ R^D.

    Written from our reading of the SAM paper's framework ("2" = pairwise outputs, one vector per
    field pair as in FM/FwFM; "3" = each field's output aggregates its interactions with all fields,
    as in a Transformer; "A" = a scalar dot-product weight per pair, "E" = an element-wise one):

    - SAM2A: o_ij = ⟨e_i, e_j⟩ · w_ij                      for i < j → [B, F(F-1)/2, D]
    - SAM2E: o_ij = (e_i ⊙ e_j) ⊙ w_ij                     for i < j → [B, F(F-1)/2, D]
    - SAM3A: per layer, o_i = Σ_j ⟨e_i, W_K e_j⟩ · w_ij (+ W_res e_i) → [B, F, D]
    - SAM3E: per layer, o_i = Σ_j (e_i ⊙ W_K e_j) ⊙ w_ij (+ W_res e_i) → [B, F, D]

    w_ij ∈ R^D are learned per pair (initialised to ones); W_K, W_res ∈ R^{D×D} per layer, bias-free.
    SAM3A/SAM3E stack `num_layers` such layers (E ← O); SAM2A/SAM2E have exactly one.
    Dropout (if > 0) is applied to each layer's output. `output_fields` is the number of output
    vectors (pairs or fields).
    """

    def __init__(
        self,
        num_fields: int,
        embedding_dim: int,
        interaction_type: str = "SAM3A",
        num_layers: int = 1,
        use_residual: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if interaction_type not in SAM_INTERACTIONS:
            raise ValueError(f"unknown SAM interaction_type {interaction_type!r}; choose one of {list(SAM_INTERACTIONS)}")
        if num_layers < 1:
            raise ValueError(f"SAM needs at least one interaction layer, got {num_layers}")
        self.interaction_type = interaction_type
        self.num_fields, self.embedding_dim = int(num_fields), int(embedding_dim)
        self.pairwise = interaction_type.startswith("SAM2")
        self.elementwise = interaction_type.endswith("E")
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        if self.pairwise:
            rows, cols = torch.triu_indices(num_fields, num_fields, offset=1)
            self.register_buffer("rows", rows, persistent=False)
            self.register_buffer("cols", cols, persistent=False)
            self.num_layers = 1
            self.output_fields = rows.numel()
            self.pair_weights = nn.Parameter(torch.empty(1, self.output_fields, embedding_dim))
            self.keys = self.residuals = None
        else:
            self.num_layers = int(num_layers)
            self.output_fields = self.num_fields
            self.pair_weights = nn.Parameter(torch.empty(num_layers, num_fields, num_fields, embedding_dim))
            self.keys = nn.ModuleList(nn.Linear(embedding_dim, embedding_dim, bias=False) for _ in range(num_layers))
            self.residuals = (
                nn.ModuleList(nn.Linear(embedding_dim, embedding_dim, bias=False) for _ in range(num_layers))
                if use_residual
                else None
            )
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self) -> None:
        nn.init.ones_(self.pair_weights)
        for group in (self.keys, self.residuals):
            for layer in group or ():
                nn.init.xavier_normal_(layer.weight)

    def forward(self, emb: torch.Tensor) -> torch.Tensor:
        """emb [B, F, D] → [B, output_fields, D]."""
        if self.pairwise:
            left, right = emb[:, self.rows], emb[:, self.cols]  # [B, P, D]
            inter = left * right
            if not self.elementwise:
                inter = inter.sum(-1, keepdim=True)  # ⟨e_i, e_j⟩ [B, P, 1]
            return self.dropout(inter * self.pair_weights[0])
        x = emb
        for layer in range(self.num_layers):
            keys, w = self.keys[layer](x), self.pair_weights[layer]  # [B, F, D], [F, F, D]
            if self.elementwise:
                out = x * torch.einsum("bjd,ijd->bid", keys, w)  # Σ_j (x_i ⊙ k_j) ⊙ w_ij
            else:
                scores = x @ keys.transpose(1, 2)  # ⟨x_i, k_j⟩ [B, F, F]
                out = torch.einsum("bij,ijd->bid", scores, w)
            if self.residuals is not None:
                out = out + self.residuals[layer](x)
            x = self.dropout(out)
        return x
