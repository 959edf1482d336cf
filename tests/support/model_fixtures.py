"""Tiny features, batches and configs for model tests."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from mtl_final.config import load_config
from mtl_final.data.features import Batch, FeatureSpec, SequenceSpec


@dataclass(frozen=True)
class Task:
    name: str
    label: str
    on: str | None = None


def tiny_features(sequences: bool = False) -> FeatureSpec:
    """3 categorical fields (vocab 6, 9, 4 incl. padding and OOV) and 2 numeric fields; with
    `sequences` also TINY_SEQUENCES (a history of field a's ids, attention-pooled toward a, and
    mean-pooled tags with a vocabulary of their own)."""
    return FeatureSpec(categorical=(("a", 6), ("b", 9), ("c", 4)), numeric=("x", "y"),
                       sequences=TINY_SEQUENCES if sequences else ())


TINY_SEQUENCES = (SequenceSpec("hist_a", 5, 6, "a", "attention", "a", (8,)),
                  SequenceSpec("tags", 3, 7, None, "mean", None))
SEQUENCE_MODELS = frozenset({"din"})  # models that need a sequence field


def tiny_sequences(n: int, seed: int = 0, sequences=TINY_SEQUENCES) -> dict[str, torch.Tensor]:
    """Batch.seq for `sequences`: random lengths 0..max_len (every length for n >= 8), ids left-aligned
    in [1, vocab_size), padding 0 after them."""
    g = torch.Generator().manual_seed(1000 + seed)
    out = {}
    for s in sequences:
        ids = torch.randint(1, s.vocab_size, (n, s.max_len), generator=g)
        lengths = torch.arange(n) % (s.max_len + 1)
        out[s.name] = ids.masked_fill(torch.arange(s.max_len) >= lengths[:, None], 0)
    return out


def tiny_batch(n: int = 32, seed: int = 0, tasks=("ctr",), sequences: bool = False) -> Batch:
    g = torch.Generator().manual_seed(seed)
    sizes = [6, 9, 4]
    cat = torch.stack([torch.randint(1, s, (n,), generator=g) for s in sizes], dim=1)
    num = torch.randn(n, 2, generator=g)
    click = (torch.rand(n, generator=g) < 0.5).float()
    labels = {"ctr": click}
    if "cvr" in tasks:
        labels["cvr"] = click * (torch.rand(n, generator=g) < 0.5).float()
    return Batch(cat, num, labels, seq=tiny_sequences(n, seed) if sequences else {})


def tasks(*names: str) -> list[Task]:
    """tasks('ctr') or tasks('ctr', 'cvr') — cvr is declared on ctr."""
    return [Task(n, n, "ctr" if n == "cvr" else None) for n in names]


def make_cfg(*overrides: str) -> dict:
    return load_config(None, list(overrides))


# the few models whose defaults are too wide for tiny batches
SMALL = {"cin": ["model.cin_hidden_units=[4]"], "xdeepfm": ["model.cin_hidden_units=[4]"],
         "afm": ["model.attention_dim=4"]}
