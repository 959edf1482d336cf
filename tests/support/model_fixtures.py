"""Tiny features, batches and configs for model tests."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl_final.config import load_config
from mtl_final.data.features import Batch, FeatureSpec


@dataclass(frozen=True)
class Task:
    name: str
    label: str
    on: str | None = None


def tiny_features() -> FeatureSpec:
    """3 categorical fields (vocab 6, 9, 4 incl. padding and OOV) and 2 numeric fields."""
    return FeatureSpec(categorical=(("a", 6), ("b", 9), ("c", 4)), numeric=("x", "y"))


def tiny_batch(n: int = 32, seed: int = 0, tasks=("ctr",)) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sizes = [6, 9, 4]
    cat = torch.stack([torch.randint(1, s, (n,), generator=g) for s in sizes], dim=1)
    num = torch.randn(n, 2, generator=g)
    click = (torch.rand(n, generator=g) < 0.5).float()
    labels = {"ctr": click}
    if "cvr" in tasks:
        labels["cvr"] = click * (torch.rand(n, generator=g) < 0.5).float()
    return Batch(cat, num, labels)


def tasks(*names: str) -> list[Task]:
    """tasks('ctr') or tasks('ctr', 'cvr') — cvr is declared on ctr."""
    return [Task(n, n, "ctr" if n == "cvr" else None) for n in names]


def make_cfg(*overrides: str) -> dict:
    return load_config(None, list(overrides))


# the few models whose defaults are too wide for tiny batches
SMALL = {"cin": ["model.cin_hidden_units=[4]"], "xdeepfm": ["model.cin_hidden_units=[4]"],
         "afm": ["model.attention_dim=4"]}
