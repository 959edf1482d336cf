"""FeatureEmbedding: the shared bottom that turns encoded fields into vectors."""
from __future__ import annotations

import math
from itertools import accumulate

import torch
from torch import nn

from mtl_final import kernels
from mtl_final.config_spec import allowed
from mtl_final.data.features import Batch, FeatureSpec, SequenceSpec
from mtl_final.kernels import ptr
from mtl_final.nn.target_attention import TargetAttention

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
    as value · w_f. A sequence field looks its ids up in the same table: in a region of its own,
    placed after the categorical ones, or (share_embedding) in its owner's region, so that both
    fields train the owner's rows; its [max_len] ids pool to one vector (mean / sum / max:
    `pool_rows`; attention: TargetAttention toward its target field's embedding).
    Output order: categorical fields, then numeric fields, then sequence fields.
    """

    def __init__(self, features: FeatureSpec, dim: int) -> None:
        super().__init__()
        self.features = features
        self.dim = dim
        sizes = [size for _, size in features.categorical]
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.long).cumsum(0) if sizes else torch.zeros(0, dtype=torch.long)
        self.register_buffer("offsets", offsets, persistent=False)
        self.register_buffer("field_ends", offsets + torch.tensor(sizes, dtype=torch.long), persistent=False)
        self.sequence_regions = sequence_regions(features)
        names = [name for name, _ in features.categorical]
        self.targets = [names.index(seq.target) if seq.pooling == "attention" else None for seq in features.sequences]
        own = [start for (start, _), seq in zip(self.sequence_regions, features.sequences) if seq.share_embedding is None]
        self.register_buffer("padding_rows", torch.cat([offsets, torch.tensor(own, dtype=torch.long)]),
                             persistent=False)
        rows = sum(sizes) + sum(seq.vocab_size for seq in features.sequences if seq.share_embedding is None)
        self.table = nn.Embedding(max(rows, 1), dim)
        self.numeric = nn.Parameter(torch.empty(len(features.numeric), dim))
        # one unit per attention sequence; not embedding parameters (model.net_regularizer covers them)
        self.attention = nn.ModuleList(
            TargetAttention(dim, seq.attention_units, seq.attention_activation)
            for seq in features.sequences if seq.pooling == "attention")
        self.reset_parameters()

    @torch.no_grad()
    def reset_parameters(self, numeric_init: str = "embedding") -> None:
        """Categorical rows N(0, 1e-4²), padding rows 0. Numeric vectors w_f: "embedding" the same
        N(0, 1e-4²); "xavier" Xavier normal, std √(2 / (1 + dim)), as FuxiCTR's Linear(1, dim) for a
        numeric field."""
        nn.init.normal_(self.table.weight, std=EMBEDDING_INIT_STD)
        if self.padding_rows.numel():
            self.table.weight.index_fill_(0, self.padding_rows, 0.0)  # each region's padding row (its index 0)
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
        # the checks are skipped on a GPU (a host sync per batch) and while torch.export traces (a
        # data-dependent branch; mtl_final.export's graph counts and maps out-of-vocabulary ids itself)
        check = batch.cat.device.type == "cpu" and not torch.compiler.is_exporting()
        cat = None
        if self.offsets.numel():
            if check:
                self.check_vocabulary(batch.cat)
            cat = _LookupRows.apply(self.table.weight, batch.cat + self.offsets, self.offsets, self.field_ends)
            parts.append(cat)
        if self.numeric.shape[0]:
            parts.append(batch.num.unsqueeze(-1) * self.numeric)
        units = iter(self.attention)
        for seq, (start, size), target in zip(self.features.sequences, self.sequence_regions, self.targets):
            ids = sequence_ids(batch, seq)
            if check:
                check_sequence(seq.name, ids, size)
            rows = torch.where(ids > 0, ids + start, 0)  # every padding id → row 0, the first region's padding row
            if target is not None:
                history = nn.functional.embedding(rows, self.table.weight, padding_idx=0)  # [batch, max_len, dim]
                pooled = next(units)(history, ids > 0, cat[:, target])
            else:
                pooled = pool_rows(self.table.weight, rows, seq.pooling)
            parts.append(pooled.unsqueeze(1))
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

    def embedding_parameters(self) -> list[nn.Parameter]:
        """The table and the numeric vectors: what model.embedding_regularizer covers (not the attention units)."""
        return [self.table.weight, self.numeric]

    def squared_norm(self) -> torch.Tensor:
        """‖E‖² over every embedding parameter (whole tables, not only looked-up rows)."""
        return self.table.weight.pow(2).sum() + self.numeric.pow(2).sum()


POOLINGS = ("mean", "sum", "max", "attention")


def sequence_regions(features: FeatureSpec) -> list[tuple[int, int]]:
    """(first table row, rows) of each sequence field's region: its own, after the categorical regions and
    the own regions of the sequences before it, or its share_embedding owner's. Raises ValueError for a
    pooling, owner or attention target the layout cannot serve."""
    names = [name for name, _ in features.categorical]
    starts = dict(zip(names, accumulate([size for _, size in features.categorical], initial=0)))
    sizes = dict(features.categorical)
    end = sum(sizes.values())
    regions = []
    for seq in features.sequences:
        where = f"sequence field {seq.name!r}"
        if seq.pooling not in POOLINGS:
            raise ValueError(f"{where}: pooling must be one of {list(POOLINGS)}, got {seq.pooling!r}")
        if seq.share_embedding is None:
            regions.append((end, seq.vocab_size))
            end += seq.vocab_size
        elif seq.share_embedding not in sizes:
            raise ValueError(f"{where}: share_embedding {seq.share_embedding!r} is not a categorical field; "
                             f"categorical fields: {names}")
        elif sizes[seq.share_embedding] != seq.vocab_size:
            raise ValueError(f"{where}: vocab_size {seq.vocab_size} differs from {sizes[seq.share_embedding]}, that "
                             f"of its share_embedding field {seq.share_embedding!r}; they share one vocabulary")
        else:
            regions.append((starts[seq.share_embedding], seq.vocab_size))
        if seq.pooling == "attention" and (seq.target is None or seq.target != seq.share_embedding):
            raise ValueError(f"{where}: attention needs a target in the sequence's own table space, i.e. "
                             f"target = its share_embedding field; got target {seq.target!r}, "
                             f"share_embedding {seq.share_embedding!r}")
    return regions


def sequence_ids(batch: Batch, seq: SequenceSpec) -> torch.Tensor:
    """batch.seq[seq.name] [batch, max_len]; ValueError naming the field when the batch lacks it."""
    ids = batch.seq.get(seq.name)
    if ids is None:
        raise ValueError(f"the batch has no ids for sequence field {seq.name!r} (Batch.seq holds "
                         f"{sorted(batch.seq)}); batches must come from a store of the same schema")
    return ids


def check_sequence(name: str, ids: torch.Tensor, size: int) -> None:
    """Raise IndexError (naming field, row and value) unless every id of ids [batch, max_len] lies in
    [0, size): one out of range would read another field's rows."""
    bad = (ids < 0) | (ids >= size)
    if bool(bad.any()):
        row, col = (int(i) for i in bad.nonzero()[0])
        raise out_of_vocabulary(f"sequence field {name!r} (position {col})", int(ids[row, col]), row, size)


def pool_rows(table: torch.Tensor, rows: torch.Tensor, mode: str) -> torch.Tensor:
    """mean / sum / max of table[rows] over each row's non-padding positions: rows [batch, max_len]
    (padding = 0, a row whose value and gradient stay 0) → [batch, dim]; an empty row → the zero vector.

    The fused embedding_bag, except while torch.export traces (it exports as an ONNX loop over rows,
    some hundred times slower in onnxruntime) and for max on a GPU (its backward adds with atomics:
    run-to-run noise): there the same sums as one gather and a masked reduction."""
    if not torch.compiler.is_exporting() and (mode != "max" or rows.device.type == "cpu"):
        return nn.functional.embedding_bag(rows, table, mode=mode, padding_idx=0)
    return pool_gathered(nn.functional.embedding(rows, table, padding_idx=0), rows > 0, mode)


def pool_gathered(values: torch.Tensor, mask: torch.Tensor, mode: str) -> torch.Tensor:
    """values [batch, L, dim] → [batch, dim] over the positions where mask [batch, L] is True (see pool_rows;
    like embedding_bag's padding_idx, it ignores what the padding row holds)."""
    values = values.masked_fill(~mask.unsqueeze(-1), 0.0)
    if mode == "sum":
        return values.sum(dim=1)
    if mode == "mean":
        return values.sum(dim=1) / mask.sum(dim=1, keepdim=True).clamp_min(1).to(values.dtype)
    if mode == "max":
        highest = values.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(dim=1)
        return torch.where(mask.any(dim=1, keepdim=True), highest, torch.zeros_like(highest))
    raise ValueError(f"pooling must be one of {list(POOLINGS[:3])} here, got {mode!r}")
