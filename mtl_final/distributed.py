"""Data-parallel training over torch.distributed: torchrun starts the processes, DDP averages gradients.

    torchrun --standalone --nproc-per-node 2 -m mtl_final.train --config FILE [key=value ...]

Every rank holds the whole model. Each global batch of train.batch_size rows is cut into W contiguous
shards (sizes differ by at most one row) and DistributedDataParallel averages the shards' gradients,
so one optimizer step sees the whole global batch and an epoch has as many steps as in one process.
Each shard carries the global batch's counts (`Batch.share`) and the losses divide by them, so that
average is the one-process gradient also when the shards or their positive labels differ in number.
Evaluation cuts the valid/test rows the same way and gathers the probabilities, so metrics cover every
row; rank 0 computes them and broadcasts them, so that every rank takes the same schedule decision.
Rank 0 alone writes the run directory.

What differs from one process, by design: every rank draws dropout masks from its own generator
stream, and by default BatchNorm normalises with its rank's shard statistics, with running statistics
following rank 0's (DDP broadcasts rank 0's buffers before every training forward; `sync_buffers` does
it before evaluation). `distributed.sync_batchnorm=true` normalises with the global batch's statistics
instead (nn/cross_rank_batchnorm.py; torch's SyncBatchNorm has no CPU implementation).
"""
from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from typing import Any, Callable, Mapping, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from mtl_final.config_spec import allowed
from mtl_final.nn.cross_rank_batchnorm import convert_batchnorm

T = TypeVar("T")

BACKENDS = allowed("distributed.backend")
_LAUNCH_VARIABLES = ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


class DistributedError(RuntimeError):
    """The process group cannot be set up, or another rank failed in a step every rank takes together."""


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job: rank in [0, world_size), local_rank on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = DistContext()


def launched_world_size(env: Mapping[str, str] | None = None) -> int:
    """WORLD_SIZE as torchrun sets it (1 when the process was not started by a launcher)."""
    env = os.environ if env is None else env
    value = env.get("WORLD_SIZE", "1")
    try:
        world = int(value)
    except ValueError:
        raise DistributedError(f"WORLD_SIZE={value!r} is not an integer; launch with "
                               "torchrun --nproc-per-node N, which sets it") from None
    if world < 1:
        raise DistributedError(f"WORLD_SIZE={world} must be >= 1")
    return world


def init_from_env(backend: str, device: torch.device, env: Mapping[str, str] | None = None) -> DistContext:
    """The job's DistContext; joins the process group on first call when WORLD_SIZE > 1 (idempotent).

    backend: auto (nccl for CUDA devices, else gloo) | gloo | nccl."""
    env = os.environ if env is None else env
    world = launched_world_size(env)
    if world == 1:
        return SINGLE
    if backend not in BACKENDS:
        raise DistributedError(f"distributed.backend={backend!r}; choose one of {', '.join(BACKENDS)}")
    missing = [name for name in _LAUNCH_VARIABLES if name not in env]
    if missing:
        raise DistributedError(f"WORLD_SIZE={world} but {', '.join(missing)} not set; start the job with "
                               "torchrun --nproc-per-node N -m mtl_final.train ..., which sets them")
    if not dist.is_available():
        raise DistributedError("this torch build has no torch.distributed; train in one process")
    if backend == "auto":
        backend = "nccl" if device.type == "cuda" else "gloo"
    if backend == "nccl" and device.type != "cuda":
        raise DistributedError("distributed.backend=nccl needs CUDA devices; use gloo (or auto) on CPU")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    if dist.get_world_size() != world:
        raise DistributedError(f"the process group has {dist.get_world_size()} ranks, WORLD_SIZE says {world}")
    return DistContext(dist.get_rank(), world, int(env["LOCAL_RANK"]), dist.get_backend())


def shutdown() -> None:
    """Leave the process group, if this process joined one. Unreachable DDP wrappers (held in reference
    cycles, with the process group inside) are collected first, while the interpreter is whole: left
    to interpreter exit, gloo's threads were torn down there and the process sometimes aborted."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


def rank_device(device: torch.device, ctx: DistContext) -> torch.device:
    """A CUDA job puts rank r on cuda:local_rank (one GPU per process); CPU stays CPU."""
    if not ctx.enabled or device.type != "cuda":
        return device
    torch.cuda.set_device(ctx.local_rank)
    return torch.device("cuda", ctx.local_rank)


def shard_bounds(n: int, rank: int, world: int) -> tuple[int, int]:
    """Rows [lo, hi) of `rank`'s contiguous share of n rows; the first n % world shares get one more.
    E.g. n=10, world=3: (0, 4), (4, 7), (7, 10)."""
    base, extra = divmod(n, world)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def rank_seed(seed: int, rank: int) -> int:
    """The torch generator seed of a rank > 0 after model init (dropout draws); unrelated across ranks."""
    return int(np.random.SeedSequence([seed % (1 << 64), rank]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seed_rank_streams(seed: int, ctx: DistContext) -> None:
    """Call after building the model: every rank starts from the same weights (DDP broadcasts rank 0's
    anyway) and ranks > 0 reseed torch so that they draw their own dropout masks; rank 0, like one
    process, keeps its stream."""
    if ctx.rank:
        torch.manual_seed(rank_seed(seed, ctx.rank))


def broadcast_object(obj: T, ctx: DistContext) -> T:
    """Rank 0's `obj` on every rank (pickled)."""
    if not ctx.enabled:
        return obj
    box = [obj if ctx.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, ctx: DistContext) -> list[Any]:
    """[obj of rank 0, ..., obj of rank W-1] on every rank."""
    if not ctx.enabled:
        return [obj]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def main_first(fn: Callable[[], T], ctx: DistContext) -> T:
    """fn() on rank 0, then on the other ranks (which then find what rank 0 built, e.g. a data cache).
    When rank 0 fails, the others raise DistributedError with its message instead of waiting."""
    if not ctx.enabled:
        return fn()
    if ctx.is_main:
        try:
            result = fn()
        except Exception as err:
            broadcast_object(f"{type(err).__name__}: {err}", ctx)
            raise
        broadcast_object(None, ctx)
        return result
    failure = broadcast_object(None, ctx)
    if failure is not None:
        raise DistributedError(f"rank 0 failed, so rank {ctx.rank} stops: {failure}")
    return fn()


def gather_rows(x: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """[n_r, ...] on every rank r → [Σ n_r, ...], rank 0's rows first (shards may differ in size)."""
    if not ctx.enabled:
        return x
    sizes = [int(n) for n in gather_objects(int(x.shape[0]), ctx)]
    longest = max(sizes)
    padded = x.new_zeros((longest, *x.shape[1:]))
    padded[: x.shape[0]] = x
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:n] for part, n in zip(parts, sizes)])


def mean_over_ranks(value: float, ctx: DistContext, device: torch.device) -> float:
    """The mean of a per-rank scalar over all ranks."""
    if not ctx.enabled:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t) / ctx.world_size


def sync_buffers(model: nn.Module, ctx: DistContext) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank, in place."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def wrap(model: nn.Module, ctx: DistContext, device: torch.device, sync_batchnorm: bool = False) -> nn.Module:
    """The module training calls: DistributedDataParallel around `model` (which broadcasts rank 0's
    parameters at construction), or `model` itself in one process. `sync_batchnorm` first turns every
    BatchNorm1d of `model` into a CrossRankBatchNorm1d (statistics of the global batch), in place."""
    if not ctx.enabled:
        return model
    if sync_batchnorm:
        convert_batchnorm(model)
    device_ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
