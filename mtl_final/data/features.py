"""What the models see of the data: field names, vocabulary sizes and the batch layout."""
from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(frozen=True)
class FeatureSpec:
    """Encoded feature layout shared by the data pipeline and every model.

    categorical: (field name, vocabulary size) in column order of ``Batch.cat``;
        the size counts padding (index 0) and OOV (index size - 1).
    numeric: field names in column order of ``Batch.num``.
    """

    categorical: tuple[tuple[str, int], ...] = ()
    numeric: tuple[str, ...] = ()

    @property
    def num_fields(self) -> int:
        return len(self.categorical) + len(self.numeric)

    @property
    def field_names(self) -> list[str]:
        """Names in embedding order: categorical fields first, then numeric ones."""
        return [name for name, _ in self.categorical] + list(self.numeric)


@dataclass
class Batch:
    """One mini-batch. cat: [B, Fc] int64, num: [B, Fn] float32, labels: task -> [B] float32."""

    cat: torch.Tensor
    num: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.cat.shape[0])  # cat is [B, 0] when there are no categorical fields

    def to(self, device: torch.device | str) -> "Batch":
        return Batch(
            self.cat.to(device, non_blocking=True),
            self.num.to(device, non_blocking=True),
            {k: v.to(device, non_blocking=True) for k, v in self.labels.items()},
        )
