"""torchrun script of tests/test_cross_rank_batchnorm.py: on 2 gloo ranks holding shares of 5 and 4 rows,
CrossRankBatchNorm1d must give each rank its rows of what nn.BatchNorm1d gives on all 9 rows (output,
input gradient, summed parameter gradients, running statistics over two steps). Rank 0 prints one
`ok <case>` line per case; a mismatch raises SystemExit naming the case and the tensor."""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn

from mtl_final import distributed
from mtl_final.nn.cross_rank_batchnorm import CrossRankBatchNorm1d


def check(case: str, name: str, got: torch.Tensor, want: torch.Tensor) -> None:
    if not torch.allclose(got, want, atol=2e-6, rtol=1e-5):
        raise SystemExit(f"{case}: {name} differs by {float((got - want).abs().max()):.3g}")


def run_case(case: str, ctx: distributed.DistContext, rows: int, **options) -> None:
    lo, hi = distributed.shard_bounds(rows, ctx.rank, ctx.world_size)
    torch.manual_seed(7)  # the same full batches, upstream gradients and affine parameters on every rank
    reference = nn.BatchNorm1d(3, **options)
    if reference.affine:
        with torch.no_grad():
            reference.weight.copy_(torch.tensor([0.5, 2.0, -1.5]))
            reference.bias.copy_(torch.tensor([0.1, -0.3, 0.7]))
    synced = CrossRankBatchNorm1d.from_batchnorm(nn.BatchNorm1d(3, **options))
    synced.load_state_dict(reference.state_dict())
    local = nn.BatchNorm1d(3, **options)  # per-rank statistics: what the sync must not equal
    local.load_state_dict(reference.state_dict())
    for step in range(2):
        x = torch.randn(rows, 3) * torch.tensor([1.0, 3.0, 0.2]) + torch.tensor([0.0, 5.0, -2.0])
        upstream = torch.randn(rows, 3)
        x_full = x.clone().requires_grad_()
        y_full = reference(x_full)
        y_full.backward(upstream)
        x_share = x[lo:hi].clone().requires_grad_()
        y_share = synced(x_share)
        y_share.backward(upstream[lo:hi])
        check(case, f"step {step} output", y_share, y_full[lo:hi])
        check(case, f"step {step} input gradient", x_share.grad, x_full.grad[lo:hi])
        if local(x[lo:hi]).sub(y_full[lo:hi]).abs().max() < 1e-3:
            raise SystemExit(f"{case}: per-rank statistics give the global output; the check cannot fail")
        for name in ("weight", "bias") if reference.affine else ():
            grad = getattr(synced, name).grad.clone()
            dist.all_reduce(grad)  # what DDP sums (and averages) over ranks
            check(case, f"step {step} {name} gradient summed over ranks", grad, getattr(reference, name).grad)
            getattr(synced, name).grad = None
            getattr(reference, name).grad = None
        for name in ("running_mean", "running_var", "num_batches_tracked") if reference.track_running_stats else ():
            check(case, f"step {step} {name}", getattr(synced, name).float(), getattr(reference, name).float())
    if ctx.is_main:
        print(f"ok {case}", flush=True)


def main() -> None:
    ctx = distributed.init_from_env("gloo", torch.device("cpu"))
    torch.set_num_threads(1)
    run_case("affine momentum 0.1", ctx, 9)
    run_case("cumulative average (momentum None)", ctx, 9, momentum=None)
    run_case("no affine", ctx, 9, affine=False)
    run_case("no running statistics", ctx, 9, track_running_stats=False)
    try:
        CrossRankBatchNorm1d(3).train()(torch.randn(1 - ctx.rank, 3))  # 1 row over both ranks
    except ValueError as err:
        if ctx.is_main:
            print(f"ok one row: {err}", flush=True)
    else:
        raise SystemExit("one row over all ranks: no error")
    distributed.shutdown()


if __name__ == "__main__":
    main()
