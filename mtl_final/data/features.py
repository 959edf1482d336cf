"""What the models see of the data: field names, vocabulary sizes and the batch layout."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class SequenceSpec:
    """One sequence field (a multi-valued attribute or a behaviour history) as the models see it.

    max_len: ids per row (``Batch.seq[name]`` is [B, max_len], left-aligned, padding 0 at the end).
    vocab_size: rows of its table region (padding + vocabulary + OOV).
    share_embedding: the categorical field whose table region (and vocabulary) it uses, or None (its own).
    pooling: mean | sum | max | attention. target: the categorical field attention compares with.
    attention_units / attention_activation: the attention unit's hidden widths and activation.
    """

    name: str
    max_len: int
    vocab_size: int
    share_embedding: str | None
    pooling: str
    target: str | None
    attention_units: tuple[int, ...] = (36,)
    attention_activation: str = "sigmoid"


@dataclass(frozen=True)
class FeatureSpec:
    """Encoded feature layout shared by the data pipeline and every model.

    categorical: (field name, vocabulary size) in column order of ``Batch.cat``;
        the size counts padding (index 0) and OOV (index size - 1).
    numeric: field names in column order of ``Batch.num``.
    sequences: the sequence fields, each one ``Batch.seq`` entry and one pooled embedding field.
    """

    categorical: tuple[tuple[str, int], ...] = ()
    numeric: tuple[str, ...] = ()
    sequences: tuple[SequenceSpec, ...] = ()

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.numeric) + len(self.sequences)

    @property
    def field_names(self) -> list[str]:
        """Names in embedding order: categorical fields, numeric ones, then sequence ones."""
        return [name for name, _ in self.categorical] + list(self.numeric) + [s.name for s in self.sequences]


@dataclass(frozen=True)
class BatchShare:
    """One rank's part of a global batch in data-parallel training: the global counts a loss term
    divides by, so that DDP's average of the ranks' gradients is the one-process gradient.

    world_size: ranks that share the batch; rows: rows of the global batch;
    positives: label name -> rows of the global batch whose label is 1.
    """

    world_size: int
    rows: int
    positives: dict[str, int]


@dataclass
class Batch:
    """One mini-batch. cat: [B, Fc] int64, num: [B, Fn] float32, labels: task -> [B] float32;
    share: set by a sharded loader (this batch is one rank's part of a global batch), else None;
    seq: sequence field name -> [B, max_len] int64 ids (padding 0)."""

    cat: torch.Tensor
    num: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    share: BatchShare | None = None
    seq: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cat.shape[0])  # cat is [B, 0] when there are no categorical fields

    @property
    def row_scale(self) -> float:
        """Factor for a mean over this batch's rows: 1, or for a share B_r · W / B of the global batch
        (B_r rows here, W ranks, B global rows), so that the ranks' average is the global mean."""
        if self.share is None:
            return 1.0
        return len(self) * self.share.world_size / self.share.rows

    def mean_where(self, values: torch.Tensor, label: str) -> torch.Tensor:
        """Mean of values [B] over the rows whose `label` is 1 (0 when none is); for a share, over
        the global batch's such rows (scaled like `row_scale`)."""
        mask = self.labels[label] > 0.5
        total = (values * mask).sum()
        if self.share is None:
            return total / mask.sum().clamp_min(1)
        return total * (self.share.world_size / max(self.share.positives[label], 1))

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.cat.to(device, non_blocking=True),
            self.num.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.labels.items()},
            self.share,
            {k: v.to(device, non_blocking=True) for k, v in self.seq.items()},
        )
