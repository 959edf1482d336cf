"""FeatureEmbedding: the shared bottom that turns encoded fields into vectors."""
from __future__ import annotations

import math

import torch
from torch import nn

from mtl_final import kernels
from mtl_final.config_spec import allowed
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.kernels import ptr

EMBEDDING_INIT_STD = 1e-4
NUMERIC_INITS = allowed("model.numeric_init")


def out_of_vocabulary(field: str, value: int, row: int, size: int) -> IndexError:
    """The error for an encoded categorical value outside its field's vocabulary [0, size)."""
    return IndexError(f"{field}: encoded value {value} at batch row {row} is outside its vocabulary [0, {size}); "
                      "encode raw data with the run's encoders (encoders.json, as mtl_final.predict does) "
                      "instead of passing ids from another vocabulary")


class _LookupRows(torch.autograd.Function):
    """table[index] whose backward scatters the rows' gradients in index order and zeroes the
    padding rows.

    Same sums in the same order as the built-in embedding backward (bit for bit), which on CPU
    calls a BLAS axpy per looked-up row. CPU: the fused-kernel library's embedding_backward, one
    thread per field (each field owns its rows), else index_add_ (2.3 vs 0.8 ms for 40,960 rows of
    width 10 against the built-in). Shapes: table [rows, dim], index [batch, fields] (field f's
    values in [field_starts[f], field_ends[f])) → [batch, fields, dim]."""

    @staticmethod
    def forward(ctx, table: torch.Tensor, index: torch.Tensor, field_starts: torch.Tensor,
                field_ends: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(index, field_starts, field_ends)
        ctx.table_shape = table.shape
        return nn.functional.embedding(index, table)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        index, starts, ends = ctx.saved_tensors
        rows, dim = ctx.table_shape
        if grad.device.type != "cpu":  # index_add_ uses atomics (run-to-run noise) on GPUs; this does not
            grad_table = torch.ops.aten.embedding_dense_backward(grad, index, rows, -1, False)
        elif (lib := kernels.library()) is not None and grad.dtype == torch.float32:
            grad, index = grad.contiguous(), index.contiguous()
            grad_table = grad.new_zeros(rows, dim)
            batch, fields = index.shape
            bad = lib.embedding_backward(ptr(grad), ptr(index), batch, fields, dim, ptr(starts), ptr(ends),
                                         ptr(grad_table), torch.get_num_threads())
            if bad >= 0:
                b, f = divmod(bad, fields)
                raise out_of_vocabulary(f"categorical field {f}", int(index[b, f] - starts[f]), b,
                                        int(ends[f] - starts[f]))
        else:
            grad_table = grad.new_zeros(rows, dim).index_add_(0, index.reshape(-1), grad.reshape(-1, dim))
        return grad_table.index_fill_(0, starts, 0.0), None, None, None


class FeatureEmbedding(nn.Module):
    """All fields of a batch → field embeddings [batch, fields, dim].

    Categorical fields share ONE table with per-field offsets (one gather instead of one
    lookup per field). Each field keeps its own padding row (its index 0), which stays
    zero: it is zeroed at init and its lookup gradient is masked. A numeric field f is embedded
    as value · w_f. Output order: categorical fields, then numeric fields.
    """

    def __init__(self, features: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.features = features
        self.dim = dim
        sizes = [size for _, size in features.categorical]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("field_ends", offsets + torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.table = nn.Embedding(max(sum(sizes), 1), dim)
        self.numeric = nn.Parameter(torch.empty(len(features.numeric), dim))
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, numeric_init: str = "embedding") -> None:
        """Categorical rows N(0, 1e-4²), padding rows 0. Numeric vectors w_f: "embedding" the same
        N(0, 1e-4²); "xavier" Xavier normal, std √(2 / (1 + dim)), as FuxiCTR's Linear(1, dim) for a
        numeric field."""
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        if self.offsets.numel():
            self.table.weight.index_fill_(0, self.offsets, 0.0)  # each field's padding row (its index 0)
        if numeric_init not in NUMERIC_INITS:
            raise ValueError(f"numeric_init must be one of {NUMERIC_INITS}, got {numeric_init!r}")
        std = EMBEDDING_INIT_STD if numeric_init == "embedding" else math.sqrt(2.0 / (1 + self.dim))
        nn.init.normal_(self.numeric, std=std)

    @property
    def num_fields(self) -> int:
        return self.features.num_fields

    def forward(self, batch: Batch) -> torch.Tensor:
        """Batch → [batch, fields, dim]."""
        parts = []
        if self.offsets.numel():
            # skipped on a GPU (a host sync per batch) and while torch.export traces (a data-dependent
            # branch; mtl_final.export's graph counts and maps out-of-vocabulary ids itself)
            if batch.cat.device.type == "cpu" and not torch.compiler.is_exporting():
                self.check_vocabulary(batch.cat)
            parts.append(_LookupRows.apply(self.table.weight, batch.cat + self.offsets, self.offsets, self.field_ends))
        if self.numeric.shape[0]:
            parts.append(batch.num.unsqueeze(-1) * self.numeric)
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=1)

    def check_vocabulary(self, cat: torch.Tensor) -> None:
        """Raise IndexError (naming field, row and value) unless every value of cat [batch, fields] lies in
        its field's vocabulary: one out of range would silently read another field's rows."""
        sizes = self.field_ends - self.offsets
        bad = (cat < 0) | (cat >= sizes)
        if bool(bad.any()):
            row, f = (int(i) for i in bad.nonzero()[0])
            name = self.features.categorical[f][0]
            raise out_of_vocabulary(f"categorical field {name!r} (column {f})", int(cat[row, f]), row, int(sizes[f]))

    def squared_norm(self) -> torch.Tensor:
        """‖E‖² over every embedding parameter (whole tables, not only looked-up rows)."""
        return self.table.weight.pow(2).sum() + self.numeric.pow(2).sum()
