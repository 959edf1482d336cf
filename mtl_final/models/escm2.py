"""ESCM² (Wang et al., SIGIR 2022): Entire Space Counterfactual Multi-task Model.

ESMM's towers and entire-space losses (mtl_final/models/esmm.py) plus a counterfactual CVR risk
that regularises the CVR tower. Over the batch D of impressions, with o_i the click label,
e_i = BCE(pCVR_i, conversion_i) the CVR error of row i and the propensity

    p̂_i = clip(pCTR_i, ips_clip, 1), detached (no gradient reaches the CTR tower through it),

    L = L_ctr + λ_ctcvr · L_ctcvr + λ_cf · R

    L_ctr   = (1/|D|) Σ BCE(pCTR_i, o_i),   L_ctcvr = (1/|D|) Σ BCE(pCTR_i · pCVR_i, o_i · conversion_i)

    IPS:  R = (1/|D|) Σ o_i · e_i / p̂_i
    DR:   R = (1/|D|) Σ [ ê_i + o_i · (e_i − ê_i) / p̂_i ]  +  (1/|D|) Σ o_i · (e_i − ê_i)² / p̂_i

where ê_i is the CVR error imputed by a third tower (same kind as the others, its linear output
read as the error; dual like them, never distilled: KD would read it as a logit). In DR the first
sum is the doubly-robust risk, which trains the CVR tower: ê is detached in it. The second is the
imputation loss, which trains the imputation tower: e is detached in it. Together that is the
joint learning of doubly-robust estimators (the prediction model fits the DR risk with the
imputation fixed, the imputation fits the squared error with the prediction fixed); p̂ is detached in
every term. The imputation loss is weighted by λ_cf like the risk, as in PaddleRec's ESCM².

Defaults, from PaddleRec's reference ESCM² (Ali-CCP config): λ_ctcvr = 0.5 (its ``global_w``),
λ_cf = 0.5 (``counterfactual_w``), ips_clip = 1/15 (it clips the inverse propensity at 15).
The task losses are {ctr: L_ctr, cvr: λ_ctcvr · L_ctcvr + λ_cf · R}, so ``model.task_weights`` and
``train.loss_balance`` treat everything that trains the CVR tower as the cvr task's loss.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from mtl_final.config_spec import Key
from mtl_final.data.features import Batch
from mtl_final.models.base import ModelOutput
from mtl_final.models.esmm import ESMM
from mtl_final.models.registry import register_model
from mtl_final.nn.tower import Tower, run_towers


@dataclass
class CounterfactualOutput(ModelOutput):
    """ModelOutput plus ESCM²-DR's imputed CVR error ê [batch] (None for IPS)."""

    imputed_error: torch.Tensor | None = None


def propensity(ctr_logit: torch.Tensor, clip: float) -> torch.Tensor:
    """p̂ = clip(σ(ctr_logit), clip, 1), detached: [batch] → [batch]."""
    return torch.sigmoid(ctr_logit.detach()).clamp(min=clip, max=1.0)


def ips_risk(error: torch.Tensor, click: torch.Tensor, p_hat: torch.Tensor) -> torch.Tensor:
    """(1/|D|) Σ o·e/p̂ over the batch's rows; every argument [batch]."""
    return (click * error / p_hat).mean()


def dr_risk(error: torch.Tensor, imputed: torch.Tensor, click: torch.Tensor,
            p_hat: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(doubly-robust risk (1/|D|) Σ [ê + o(e − ê)/p̂] with ê detached,
    imputation loss (1/|D|) Σ o(e − ê)²/p̂ with e detached); every argument [batch]."""
    fixed_imputation = imputed.detach()
    risk = (fixed_imputation + click * (error - fixed_imputation) / p_hat).mean()
    imputation = (click * (error.detach() - imputed).pow(2) / p_hat).mean()
    return risk, imputation


@register_model("escm2")
class ESCM2(ESMM):
    """ESMM (one child task on its parent: cvr on ctr) + the counterfactual CVR risk (module docstring).

    Model keys: counterfactual (ips | dr), ips_clip, ctcvr_weight (λ_ctcvr), counterfactual_weight
    (λ_cf). With dr, ``self.imputation`` is the imputation Tower.
    """

    KEYS = {
        "counterfactual": Key("ips", "ESCM²: the counterfactual CVR risk, ips or dr (doubly robust)",
                              choices=("ips", "dr")),
        "ips_clip": Key(1 / 15, "ESCM²: lower clip of the propensity p̂ = pCTR in the risk (PaddleRec's 1/15)",
                        bounds=(1e-6, 1.0)),
        "ctcvr_weight": Key(0.5, "ESCM²: λ of the entire-space pCTCVR loss", bounds=(0.0, None)),
        "counterfactual_weight": Key(0.5, "ESCM²: λ of the counterfactual risk (and DR's imputation loss)",
                                     bounds=(0.0, None)),
    }

    def __init__(self, features, tasks, cfg) -> None:
        super().__init__(features, tasks, cfg)
        m = cfg["model"]
        self.counterfactual = m["counterfactual"]
        self.ips_clip = float(m["ips_clip"])
        self.ctcvr_weight = float(m["ctcvr_weight"])
        self.counterfactual_weight = float(m["counterfactual_weight"])
        self.imputation = None
        if self.counterfactual == "dr":
            in_dim = features.num_fields * self.embedding_dim
            self.imputation = Tower(in_dim, {**cfg["tower"], "kd": False})

    def forward(self, batch: Batch) -> CounterfactualOutput:
        h = self.flat_embedding(batch)
        logits, aux = run_towers(self.towers, h)
        imputed = self.imputation(h)[0] if self.imputation is not None else None
        return CounterfactualOutput(logits, self.probabilities(logits), aux, imputed_error=imputed)

    def task_losses(self, out: ModelOutput, batch: Batch) -> dict[str, torch.Tensor]:
        """ESMM's losses with the child's replaced by λ_ctcvr · L_ctcvr + λ_cf · R."""
        losses = super().task_losses(out, batch)
        losses[self.child] = self.ctcvr_weight * losses[self.child] + \
            self.counterfactual_weight * self.counterfactual_risk(out, batch) * batch.row_scale
        return losses

    def counterfactual_risk(self, out: ModelOutput, batch: Batch) -> torch.Tensor:
        """R of model.counterfactual (for dr: the DR risk plus the imputation loss), a mean over the
        batch's rows."""
        click, conversion = batch.labels[self.parent], batch.labels[self.child]
        error = F.binary_cross_entropy_with_logits(out.logits[self.child], conversion, reduction="none")
        p_hat = propensity(out.logits[self.parent], self.ips_clip)
        if self.imputation is None:
            return ips_risk(error, click, p_hat)
        risk, imputation = dr_risk(error, out.imputed_error, click, p_hat)
        return risk + imputation
