"""Loss balancing (train.loss_balance): how a multi-task model's task losses L_i combine.

  sum          Σ_i w_i · L_i with the fixed w_i = model.task_weights (the model's own `loss`).
  uncertainty  Kendall et al. (CVPR 2018), homoscedastic uncertainty with s_i = log σ_i²:
                   Σ_i exp(−s_i) · L_i + s_i
               s_i start at 0 (every weight 1) and are trained by the run's optimizer with the model.
  gradnorm     Chen et al. (ICML 2018): Σ_i w_i · L_i, the w_i (start 1) stepped each step by the run's
               optimizer on
                   L_grad = Σ_i | G_i − mean_j(G_j) · r_i^α |,  G_i = ‖∇_W w_i · L_i‖₂,
                   r_i = L̃_i / mean_j(L̃_j),  L̃_i = L_i / L_i(first step)
               (the target mean_j(G_j) · r_i^α held constant, so ∇_{w_i} L_grad =
               sign(G_i − target_i) · ‖∇_W L_i‖), then floored at MIN_WEIGHT and renormalised to
               Σ_i w_i = number of tasks; α = train.gradnorm_alpha (1.5, the paper's choice).
               The network's gradient sees the w_i as constants.

W, "the last shared layer" that GradNorm measures (`last_shared_parameters`):
  shared_bottom with model.shared_units: the last layer of the shared block;
  mmoe: the last layer of every expert (each feeds every task through the gates);
  ple: the last layer of the last level's shared experts (its task experts feed one task);
  everything else — shared_bottom without a shared block, esmm, escm2, aitm, ple without shared
  experts — shares only the field embedding (table and numeric vectors): W is that.

Aux terms (self-distillation, AITM's calibrator) and regularisation are added unweighted after the
combination. The balancer's learned values live in its `state_dict`, saved in last.pt.
"""
from __future__ import annotations

import math
from typing import Any, Mapping

import torch
import torch.distributed as torch_dist
from torch import nn

from mtl_final import distributed
from mtl_final.data.features import Batch
from mtl_final.models.base import ModelOutput, RankingModel
from mtl_final.models.mmoe import MMoE
from mtl_final.models.ple import PLE
from mtl_final.models.shared_bottom import SharedBottom

MIN_WEIGHT = 1e-3  # a GradNorm weight at 0 would stop training its task for good


class LossBalancer(nn.Module):
    """train.loss_balance=sum: the model's own weighted sum; the base of the learned balancers.

    Per training step: `loss` (forward's output → total and named parts), then after backward
    `after_backward`, after the optimizer step `after_step`."""

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.task_names = list(model.task_names)
        self.fixed_weights = dict(model.task_weights)

    def loss(self, model: RankingModel, out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model.loss(out, batch)

    def after_backward(self) -> None:
        """Hook between backward and the optimizer step."""

    def after_step(self) -> None:
        """Hook after the optimizer step."""

    def task_weights(self) -> dict[str, float]:
        """The weight each task loss gets at this step (logged as train/task_weight_<task>)."""
        return dict(self.fixed_weights)


class UncertaintyBalance(LossBalancer):
    """Σ_i exp(−s_i) · L_i + s_i; `log_variances` [tasks] = s, in task order."""

    def __init__(self, model: RankingModel, dist: distributed.DistContext) -> None:
        super().__init__(model)
        self.dist = dist
        self.log_variances = nn.Parameter(torch.zeros(len(self.task_names)))

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """task name → L_i ↦ Σ_i exp(−s_i) · L_i + s_i."""
        s = self.log_variances
        return sum(torch.exp(-s[i]) * losses[name] + s[i] for i, name in enumerate(self.task_names))

    def loss(self, model: RankingModel, out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model.loss(out, batch, combine=self.combine)

    def after_backward(self) -> None:
        # each rank's losses are its share of the global batch's: the mean of the ranks' gradients of s
        # is the global one (the network's are averaged by DDP)
        if self.dist.enabled and self.log_variances.grad is not None:
            torch_dist.all_reduce(self.log_variances.grad)
            self.log_variances.grad /= self.dist.world_size

    def task_weights(self) -> dict[str, float]:
        return {name: math.exp(-float(s)) for name, s in zip(self.task_names, self.log_variances.detach())}


class GradNormBalance(LossBalancer):
    """Σ_i w_i · L_i with `weights` [tasks] = w stepped toward equal training rates (module docstring);
    `initial_losses` [tasks] holds L_i of the first step (NaN before it)."""

    def __init__(self, model: RankingModel, alpha: float) -> None:
        super().__init__(model)
        self.alpha = alpha
        self.shared = last_shared_parameters(model)  # W: not registered, the model owns them
        self.weights = nn.Parameter(torch.ones(len(self.task_names)))
        self.register_buffer("initial_losses", torch.full((len(self.task_names),), math.nan))
        self._weight_grad: torch.Tensor | None = None  # ∇_w L_grad of the current step

    def shared_gradient_norm(self, task_loss: torch.Tensor) -> torch.Tensor:
        """‖∇_W L_i‖₂ (a scalar without graph); the forward graph is kept for the backward."""
        grads = torch.autograd.grad(task_loss, self.shared, retain_graph=True, allow_unused=True)
        total = torch.zeros((), device=task_loss.device)
        for g in grads:
            if g is not None:  # None: a loss that does not reach W (its norm is 0)
                total = total + g.pow(2).sum()
        return total.sqrt()

    def combine(self, losses: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """task name → L_i ↦ Σ_i w_i · L_i (w constant), computing ∇_w L_grad on the way."""
        task_losses = torch.stack([losses[name] for name in self.task_names])  # [tasks]
        norms = torch.stack([self.shared_gradient_norm(losses[name]) for name in self.task_names])
        with torch.no_grad():
            current = task_losses.detach()
            if torch.isnan(self.initial_losses).any():
                self.initial_losses.copy_(current)
            rate = current / self.initial_losses.clamp_min(torch.finfo(current.dtype).tiny)
            target = (self.weights * norms).mean() * (rate / rate.mean()) ** self.alpha
            self._weight_grad = torch.sign(self.weights * norms - target) * norms
        return (self.weights.detach() * task_losses).sum()

    def loss(self, model: RankingModel, out: ModelOutput, batch: Batch) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return model.loss(out, batch, combine=self.combine)

    def after_backward(self) -> None:
        self.weights.grad = self._weight_grad

    @torch.no_grad()
    def after_step(self) -> None:
        self.weights.clamp_(min=MIN_WEIGHT)
        self.weights.mul_(len(self.task_names) / self.weights.sum())

    def task_weights(self) -> dict[str, float]:
        return {name: float(w) for name, w in zip(self.task_names, self.weights.detach())}


def last_shared_parameters(model: RankingModel) -> list[nn.Parameter]:
    """GradNorm's W for `model`: the weights of the last layer every task's loss flows through
    (module docstring)."""
    blocks: list[nn.Module] = []
    if isinstance(model, SharedBottom) and model.shared is not None:
        blocks = [model.shared]
    elif isinstance(model, MMoE):
        blocks = list(model.experts)
    elif isinstance(model, PLE):
        blocks = list(model.levels[-1].shared_experts)
    layers = [[m for m in block.modules() if isinstance(m, nn.Linear)] for block in blocks]
    weights = [found[-1].weight for found in layers if found]
    return weights or [p for p in model.embedding.parameters() if p.requires_grad]


def build_balancer(cfg: Mapping[str, Any], model: RankingModel,
                   dist: distributed.DistContext = distributed.SINGLE) -> LossBalancer:
    """The train.loss_balance balancer for `model` (on the model's device)."""
    kind = cfg["train"]["loss_balance"]
    if kind == "sum":
        return LossBalancer(model)
    if len(model.task_names) < 2:
        raise ValueError(f"train.loss_balance={kind} balances the losses of several tasks, and this run trains "
                         f"one ({model.task_names[0]}); use train.loss_balance=sum")
    if cfg["model"].get("task_weights"):
        raise ValueError(f"model.task_weights is the fixed weighting of train.loss_balance=sum; "
                         f"train.loss_balance={kind} learns the weights: remove model.task_weights or use sum")
    device = next(model.parameters()).device
    if kind == "uncertainty":
        return UncertaintyBalance(model, dist).to(device)
    if kind == "gradnorm":
        if dist.enabled:
            raise ValueError("train.loss_balance=gradnorm measures per-task gradients in one process; run it "
                             "without torchrun, or use train.loss_balance=uncertainty or sum")
        return GradNormBalance(model, float(cfg["train"]["gradnorm_alpha"])).to(device)
    raise ValueError(f"unknown train.loss_balance {kind!r}; choose sum, uncertainty or gradnorm")
