"""Mini-batches by slicing whole in-RAM tensors (no per-sample Python, no collate)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from .features import Batch
from .store import TensorSplit


def epoch_seed(seed: int, epoch: int) -> int:
    """The shuffle generator's seed of one (run seed, epoch): a 64-bit draw of numpy's SeedSequence
    of both, so distinct pairs get unrelated orders (with seed + epoch, seed s in epoch e + 1 trained
    on the order of seed s + 1 in epoch e). Negative seeds are taken mod 2^64."""
    return int(np.random.SeedSequence([seed % (1 << 64), epoch]).generate_state(1, dtype=np.uint64)[0])


class BatchLoader:
    """Iterate ``Batch`` objects over a TensorSplit.

    shuffle=False: contiguous slices (views, no gather). shuffle=True: one
    ``torch.randperm`` per epoch from a generator seeded with ``epoch_seed(seed, epoch)``,
    so the same (seed, epoch) always gives the same order; call ``set_epoch`` before
    each epoch to get a new order (the epoch is not advanced automatically).
    """

    def __init__(self, data: TensorSplit, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling order of the next iterations."""
        self.epoch = int(epoch)

    @property
    def n_rows(self) -> int:
        return self.data.n_rows

    def __len__(self) -> int:
        """Number of batches per epoch."""
        if self.drop_last:
            return self.n_rows // self.batch_size
        return -(-self.n_rows // self.batch_size)

    def order(self) -> torch.Tensor | None:
        """[N] int64 row order of the current epoch (None without shuffle)."""
        if not self.shuffle:
            return None
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n_rows, generator=gen)

    def __iter__(self) -> Iterator[Batch]:
        """Yield batches: cat [B, Fc] int64, num [B, Fn] float32, labels task -> [B] float32."""
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch index `start` on (a resumed epoch skips those it has done)."""
        d = self.data
        perm = self.order()
        bs = self.batch_size
        for b in range(start, len(self)):
            lo, hi = b * bs, min((b + 1) * bs, self.n_rows)
            if perm is None:
                yield Batch(d.cat[lo:hi], d.num[lo:hi], {t: y[lo:hi] for t, y in d.labels.items()})
            else:
                idx = perm[lo:hi]
                yield Batch(d.cat.index_select(0, idx), d.num.index_select(0, idx),
                            {t: y.index_select(0, idx) for t, y in d.labels.items()})
