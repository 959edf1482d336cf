"""RankingModel: what every model shares — the embedding bottom, task heads' outputs, losses."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from mtl_final.config_spec import Key, Section
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.nn.embedding import FeatureEmbedding


def entire_space_name(parent: str, child: str) -> str:
    """Name of p(parent) · p(child | parent): 'ctcvr' for (ctr, cvr)."""
    return "ctcvr" if (parent, child) == ("ctr", "cvr") else f"{parent}_{child}"


def task_output_names(tasks: Sequence[Any]) -> list[str]:
    """What a model of these tasks (TaskSpec-like: name, on) predicts and the metrics score: every
    task, then the entire-space product (e.g. 'ctcvr') of each task declared on another of them."""
    names = [t.name for t in tasks]
    return names + [entire_space_name(t.on, t.name) for t in tasks if t.on and t.on in names]


@dataclass
class ModelOutput:
    """logits: task → [batch]; probs: task → [batch] plus entire-space products (e.g. 'ctcvr');
    aux_losses: named extra loss terms computed in forward (self-distillation), scalar means over
    the batch's rows."""

    logits: dict[str, torch.Tensor]
    probs: dict[str, torch.Tensor]
    aux_losses: dict[str, torch.Tensor] = field(default_factory=dict)


class RankingModel(nn.Module):
    """Base of every model. Subclasses build their layers in __init__ and implement `compute_logits`.

    Config keys read here: model.embedding_dim, model.embedding_regularizer,
    model.net_regularizer, model.task_weights. `KEYS` declares a subclass's own model.* keys
    (name → config_spec.Key, or a Section of them).
    """

    KEYS: ClassVar[dict[str, Key | Section]] = {}
    MULTI_TASK: ClassVar[bool] = False

    def __init__(self, features: FeatureSpec, tasks: Sequence[Any], cfg: Mapping[str, Any]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("a model needs at least one task")
        if not self.MULTI_TASK and len(tasks) != 1:
            raise ValueError(
                f"model {cfg['model']['name']!r} predicts one task but {len(tasks)} were selected "
                f"({', '.join(t.name for t in tasks)}); pick one with tasks=[ctr] or use a multi-task "
                "model (shared_bottom, esmm, escm2, aitm, mmoe, ple)"
            )
        self.features = features
        self.tasks = list(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.cfg = cfg
        m = cfg["model"]
        self.embedding_dim = int(m["embedding_dim"])
        self.embedding_regularizer = float(m["embedding_regularizer"])
        self.net_regularizer = float(m["net_regularizer"])
        weights = dict(m.get("task_weights") or {})
        unknown = set(weights) - set(self.task_names)
        if unknown:
            raise ValueError(f"model.task_weights names unknown tasks {sorted(unknown)}; tasks are {self.task_names}")
        self.task_weights = {t: float(weights.get(t, 1.0)) for t in self.task_names}
        self.embedding = FeatureEmbedding(features, self.embedding_dim)

    # --- to implement -------------------------------------------------------------------
    def compute_logits(self, batch: Batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Batch → (task → logit [batch], named aux loss scalars)."""
        raise NotImplementedError

    # --- shared behaviour ---------------------------------------------------------------
    def forward(self, batch: Batch) -> ModelOutput:
        logits, aux = self.compute_logits(batch)
        return ModelOutput(logits, self.probabilities(logits), aux)

    @property
    def output_names(self) -> list[str]:
        """The keys of ModelOutput.probs: every task, then the entire-space products (e.g. 'ctcvr')."""
        return task_output_names(self.tasks)

    def probabilities(self, logits: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        probs = {name: torch.sigmoid(logit) for name, logit in logits.items()}
        for task in self.tasks:
            if task.on and task.on in probs:
                probs[entire_space_name(task.on, task.name)] = probs[task.on] * probs[task.name]
        return probs

    def task_losses(self, out: ModelOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """BCE per task; a task declared `on: parent` is averaged over rows whose parent label is 1.
        Means go through `batch.row_scale` / `batch.mean_where`, which for one rank's share of a
        global batch divide by the global counts (data-parallel training)."""
        losses = {}
        for task in self.tasks:
            logit, label = out.logits[task.name], batch.labels[task.name]
            if task.on:
                per_row = F.binary_cross_entropy_with_logits(logit, label, reduction="none")
                losses[task.name] = batch.mean_where(per_row, task.on)
            else:
                losses[task.name] = F.binary_cross_entropy_with_logits(logit, label) * batch.row_scale
        return losses

    def regularization(self) -> torch.Tensor:
        """(λ_emb/2)·Σ‖E‖² over whole embedding tables + (λ_net/2)·Σ‖θ‖² over every trainable
        parameter outside them (weights, biases, BatchNorm scale and shift, field gate), as
        FuxiCTR's net_regularizer."""
        reg = torch.zeros((), device=self.embedding.table.weight.device)
        if self.embedding_regularizer:
            emb = sum(m.squared_norm() for m in self.modules() if isinstance(m, FeatureEmbedding))
            reg = reg + self.embedding_regularizer / 2 * emb
        if self.net_regularizer:
            reg = reg + self.net_regularizer / 2 * sum(p.pow(2).sum() for p in self.network_parameters())
        return reg

    def network_parameters(self) -> list[nn.Parameter]:
        """Trainable parameters outside the embedding tables and numeric vectors (the attention units of
        sequence fields included): what model.net_regularizer covers."""
        embedding = {id(p) for m in self.modules() if isinstance(m, FeatureEmbedding) for p in m.embedding_parameters()}
        return [p for p in self.parameters() if p.requires_grad and id(p) not in embedding]

    def loss(
        self, out: ModelOutput, batch: Batch,
        combine: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total training loss and its named parts (task losses, aux terms, regularisation).

        combine: task name → task loss scalar ↦ their combined scalar (train.loss_balance); None is
        Σ model.task_weights[t] · L_t. Aux terms and regularisation are added to it unweighted."""
        parts = self.task_losses(out, batch)
        if combine is None:
            total = sum(self.task_weights[name] * value for name, value in parts.items())
        else:
            total = combine(dict(parts))
        for name, value in out.aux_losses.items():  # means over the batch's rows
            value = value * batch.row_scale
            total = total + value
            parts[name] = value
        reg = self.regularization()
        parts["regularization"] = reg
        return total + reg, parts

    @torch.no_grad()
    def init_weights(self) -> None:
        """Paper init: Linear Xavier-normal with zero bias; embeddings N(0, 1e-4²) with zero padding rows;
        numeric-field vectors as model.numeric_init says.
        Modules with their own init (FieldGate, interaction layers) keep it."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_normal_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, FeatureEmbedding):
                module.reset_parameters(self.cfg["model"]["numeric_init"])

    def flat_embedding(self, batch: Batch) -> torch.Tensor:
        """[batch, fields · dim]."""
        return self.embedding(batch).flatten(1)
