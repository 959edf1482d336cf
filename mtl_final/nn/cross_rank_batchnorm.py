"""CrossRankBatchNorm1d: BatchNorm over the global batch of a data-parallel job, on any device.

Under DDP each rank holds a share of every batch. Plain BatchNorm normalises with its share's
statistics; this one all-reduces the sums over the default process group, so that every rank
normalises with the mean and variance of the whole batch and the running statistics are the
one-process ones. torch's SyncBatchNorm does the same for GPUs only; this works with gloo on CPU
too. Outside a multi-process group (or in eval mode) it is nn.BatchNorm1d.

Forward, two all-reduces over [C] (a two-pass mean, then the centred sum of squares, as one process
computes them); backward, one over [2, C] (Σ dy and Σ dy·x̂, which dx needs). Parameter gradients
stay each rank's own sums: DDP averages them like every other gradient.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    dist.all_reduce(t)
    return t


class _CrossRankNorm(torch.autograd.Function):
    """x [n_r, C] of this rank → y [n_r, C], normalised with the statistics of all ranks' rows."""

    @staticmethod
    def forward(ctx, x, weight, bias, bn: "CrossRankBatchNorm1d"):
        xf = x.float()
        count_sum = _all_reduce(torch.cat([xf.new_tensor([x.shape[0]]), xf.sum(0)]))
        rows, total = int(count_sum[0]), count_sum[1:]
        if rows < 2:
            raise ValueError(f"CrossRankBatchNorm1d needs at least 2 rows over all ranks in training, got {rows}")
        mean = total / rows
        centred = xf - mean
        var = _all_reduce((centred * centred).sum(0)) / rows
        invstd = torch.rsqrt(var + bn.eps)
        xhat = centred * invstd
        y = xhat * weight.float() + bias.float() if weight is not None else xhat
        bn.update_running_stats(mean, var, rows)
        ctx.save_for_backward(xhat, invstd, weight)
        ctx.rows = rows
        return y.to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        xhat, invstd, weight = ctx.saved_tensors
        dy = grad.float()
        local = torch.stack([dy.sum(0), (dy * xhat).sum(0)])
        dbias, dweight = local[0].clone(), local[1].clone()
        sum_dy, sum_dy_xhat = _all_reduce(local) / ctx.rows
        scale = invstd * weight.float() if weight is not None else invstd
        dx = (dy - sum_dy - xhat * sum_dy_xhat) * scale
        if weight is None:
            return dx.to(grad.dtype), None, None, None
        return dx.to(grad.dtype), dweight.to(weight.dtype), dbias.to(weight.dtype), None


class CrossRankBatchNorm1d(nn.BatchNorm1d):
    """nn.BatchNorm1d whose training statistics cover every rank's rows. Shapes: [batch, C] → [batch, C].

    Same parameters and buffers (and state-dict keys) as nn.BatchNorm1d, so a checkpoint loads into
    either. `from_batchnorm` converts a module in place of the original, sharing its tensors."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        if x.dim() != 2:
            raise ValueError(f"CrossRankBatchNorm1d expects [batch, features], got shape {tuple(x.shape)}")
        return _CrossRankNorm.apply(x, self.weight, self.bias, self)

    @torch.no_grad()
    def update_running_stats(self, mean: torch.Tensor, var: torch.Tensor, rows: int) -> None:
        """As nn.BatchNorm1d: momentum (or the cumulative average when it is None), unbiased variance."""
        if not self.track_running_stats:
            return
        self.num_batches_tracked.add_(1)
        factor = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        self.running_mean.mul_(1 - factor).add_(mean.to(self.running_mean.dtype), alpha=factor)
        self.running_var.mul_(1 - factor).add_(var.to(self.running_var.dtype), alpha=factor * rows / (rows - 1))

    @classmethod
    def from_batchnorm(cls, bn: nn.BatchNorm1d) -> "CrossRankBatchNorm1d":
        """A CrossRankBatchNorm1d holding `bn`'s own Parameter and buffer objects (an optimizer built
        on `bn` keeps working), in its train/eval mode."""
        new = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats)
        for name, tensor in [*bn.named_parameters(recurse=False), *bn.named_buffers(recurse=False)]:
            setattr(new, name, tensor)
        return new.train(bn.training)


def convert_batchnorm(model: nn.Module) -> int:
    """Replace every nn.BatchNorm1d inside `model` by a CrossRankBatchNorm1d holding the same tensors.
    Returns how many were replaced."""
    replaced = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child) is nn.BatchNorm1d:
                setattr(parent, name, CrossRankBatchNorm1d.from_batchnorm(child))
                replaced += 1
    return replaced
