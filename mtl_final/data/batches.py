"""Mini-batches by slicing whole in-RAM tensors (no per-sample Python, no collate)."""
from __future__ import annotations

from typing import Iterator

import numpy as np
import torch

from mtl_final.distributed import shard_bounds

from .features import Batch, BatchShare
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

    shard=(rank, world) with world > 1 (data-parallel training): every rank walks the same global
    batches and yields its contiguous share of each (``distributed.shard_bounds``), so the ranks'
    shards of one step are disjoint and together are the one-process batch. Each shard carries the
    global batch's counts (``Batch.share``), by which the losses average over the global batch.

    min_share: the fewest rows each rank's share of a batch must have. Training passes 2 (BatchNorm
    cannot normalise one row): a last, partial batch with fewer is left out, and ``dropped_rows``
    counts it per epoch (the shuffle puts other rows there every epoch). Evaluation keeps every row.
    """

    def __init__(self, data: TensorSplit, batch_size: int, shuffle: bool, seed: int = 0,
                 drop_last: bool = False, shard: tuple[int, int] = (0, 1), min_share: int = 1) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        rank, world = shard
        if not 0 <= rank < world:
            raise ValueError(f"shard=(rank {rank}, world {world}) needs 0 <= rank < world")
        if batch_size < min_share * world:
            processes = f" for {world} processes" if world > 1 else ""
            raise ValueError(f"train.batch_size={batch_size} is too small{processes}: every process needs at "
                             f"least {min_share} rows of each batch (BatchNorm); use at least {min_share * world}")
        self.data = data
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.drop_last = bool(drop_last)
        self.shard = (int(rank), int(world))
        self.min_share = int(min_share)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling order of the next iterations."""
        self.epoch = int(epoch)

    @property
    def n_rows(self) -> int:
        return self.data.n_rows

    def __len__(self) -> int:
        """Number of batches (optimizer steps) per epoch."""
        full, tail = divmod(self.n_rows, self.batch_size)
        if self.drop_last or tail < self.min_tail:
            return full
        return full + 1

    @property
    def min_tail(self) -> int:
        """The fewest rows a last, partial batch must have to be kept: min_share per rank."""
        return self.min_share * self.shard[1]

    @property
    def dropped_rows(self) -> int:
        """Rows of each epoch that no batch holds (the partial last batch, where it is left out)."""
        return self.n_rows - min(self.n_rows, len(self) * self.batch_size)

    def order(self) -> torch.Tensor | None:
        """[N] int64 row order of the current epoch (None without shuffle)."""
        if not self.shuffle:
            return None
        gen = torch.Generator()
        gen.manual_seed(epoch_seed(self.seed, self.epoch))
        return torch.randperm(self.n_rows, generator=gen)

    def __iter__(self) -> Iterator[Batch]:
        """Yield batches: cat [B, Fc] int64, num [B, Fn] float32, labels task -> [B] float32,
        seq field -> [B, max_len] int64."""
        return self.batches()

    def batches(self, start: int = 0) -> Iterator[Batch]:
        """The epoch's batches from batch index `start` on (a resumed epoch skips those it has done)."""
        d = self.data
        perm = self.order()
        bs = self.batch_size
        rank, world = self.shard
        for b in range(start, len(self)):
            lo, hi = b * bs, min((b + 1) * bs, self.n_rows)
            share = None
            if world > 1:
                share = self._share(lo, hi, perm)
                first, last = shard_bounds(hi - lo, rank, world)
                lo, hi = lo + first, lo + last
            if perm is None:
                yield Batch(d.cat[lo:hi], d.num[lo:hi], {t: y[lo:hi] for t, y in d.labels.items()}, share,
                            {n: s[lo:hi].long() for n, s in d.seq.items()})
            else:
                idx = perm[lo:hi]
                yield Batch(d.cat.index_select(0, idx), d.num.index_select(0, idx),
                            {t: y.index_select(0, idx) for t, y in d.labels.items()}, share,
                            {n: s.index_select(0, idx).long() for n, s in d.seq.items()})

    def _share(self, lo: int, hi: int, perm: torch.Tensor | None) -> BatchShare:
        """The global counts of the batch of rows [lo, hi) of this epoch's order, which every rank
        computes alike from the whole split (no communication)."""
        labels = self.data.labels
        if perm is None:
            positives = {t: int((y[lo:hi] > 0.5).sum()) for t, y in labels.items()}
        else:
            idx = perm[lo:hi]
            positives = {t: int((y.index_select(0, idx) > 0.5).sum()) for t, y in labels.items()}
        return BatchShare(self.shard[1], hi - lo, positives)
