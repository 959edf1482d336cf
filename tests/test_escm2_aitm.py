"""ESCM² (IPS and DR counterfactual risks, the detached propensity) and AITM (information transfer,
calibrator, published probabilities) against float64 hand computations; every variant trains a step."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_final.data.features import Batch
from mtl_final.models import build_model
from mtl_final.models.aitm import calibrator_loss, funnel_order
from mtl_final.models.escm2 import CounterfactualOutput, dr_risk
from mtl_final.train.trainer import Trainer
from tests.support.model_fixtures import Task, make_cfg, tasks, tiny_batch, tiny_features

SMALL = ("model.embedding_dim=4", "tower.hidden_units=[8,4]", "tower.dropout=0")


def build(name: str, *overrides: str, task_list=None):
    torch.manual_seed(0)
    cfg = make_cfg(f"model={name}", *SMALL, *overrides)
    return build_model(cfg, tiny_features(), task_list or tasks("ctr", "cvr"))


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def np_bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


# --- ESCM²: a toy batch of 5 rows -----------------------------------------------------------------
CLICK = np.array([1.0, 0.0, 1.0, 1.0, 0.0])
CONV = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
CTR_LOGIT = np.array([0.5, -1.0, -4.0, 2.0, 0.0])  # row 2 is clicked with pCTR 0.018 < the clip 1/15
CVR_LOGIT = np.array([1.0, 0.3, -0.5, -2.0, 1.5])
IMPUTED = np.array([0.4, 0.9, 0.2, 1.1, 0.05])


def toy(model, imputed: bool = False):
    """(out, batch) of the toy rows with fixed logits (and imputed errors)."""
    t = lambda a: torch.tensor(a, dtype=torch.float32)  # noqa: E731
    logits = {"ctr": t(CTR_LOGIT), "cvr": t(CVR_LOGIT)}
    batch = Batch(torch.ones(5, 3, dtype=torch.long), torch.zeros(5, 2), {"ctr": t(CLICK), "cvr": t(CONV)})
    return CounterfactualOutput(logits, model.probabilities(logits), imputed_error=t(IMPUTED) if imputed else None), batch


def hand_parts(clip: float = 1 / 15):
    """(L_ctr, L_ctcvr, e, p̂) of the toy rows in float64."""
    pctr, pcvr = np_sigmoid(CTR_LOGIT), np_sigmoid(CVR_LOGIT)
    error = np_bce(pcvr, CONV)
    p_hat = np.clip(pctr, clip, 1.0)
    return np_bce(pctr, CLICK).mean(), np_bce(pctr * pcvr, CLICK * CONV).mean(), error, p_hat


def test_escm2_ips_loss_equals_hand_computation_with_the_clip():
    model = build("escm2", "model.counterfactual=ips")
    out, batch = toy(model)
    l_ctr, l_ctcvr, error, p_hat = hand_parts()
    assert p_hat[2] == pytest.approx(1 / 15) and np_sigmoid(CTR_LOGIT[2]) < 1 / 15  # the clip is active
    risk = (CLICK * error / p_hat).mean()
    assert float(model.counterfactual_risk(out, batch)) == pytest.approx(risk, rel=1e-6)
    losses = model.task_losses(out, batch)
    assert float(losses["ctr"]) == pytest.approx(l_ctr, rel=1e-6)
    assert float(losses["cvr"]) == pytest.approx(0.5 * l_ctcvr + 0.5 * risk, rel=1e-6)
    total, _ = model.loss(out, batch)
    assert float(total) == pytest.approx(l_ctr + 0.5 * l_ctcvr + 0.5 * risk, rel=1e-6)
    # the risk without the clip differs: the check above is sensitive to it
    unclipped = (CLICK * error / np_sigmoid(CTR_LOGIT)).mean()
    assert abs(unclipped - risk) > 0.1 * risk
    # the weights and the clip are the config keys
    other = build("escm2", "model.ips_clip=0.01", "model.ctcvr_weight=2", "model.counterfactual_weight=0.25")
    _, _, error, p_hat = hand_parts(0.01)
    risk = (CLICK * error / p_hat).mean()
    assert float(other.task_losses(*toy(other))["cvr"]) == pytest.approx(2 * l_ctcvr + 0.25 * risk, rel=1e-6)


def test_escm2_dr_loss_equals_hand_computation():
    model = build("escm2", "model.counterfactual=dr")
    out, batch = toy(model, imputed=True)
    l_ctr, l_ctcvr, error, p_hat = hand_parts()
    residual = error - IMPUTED
    risk = (IMPUTED + CLICK * residual / p_hat).mean()
    imputation = (CLICK * residual**2 / p_hat).mean()
    assert float(model.counterfactual_risk(out, batch)) == pytest.approx(risk + imputation, rel=1e-6)
    assert float(model.task_losses(out, batch)["cvr"]) == pytest.approx(0.5 * l_ctcvr + 0.5 * (risk + imputation),
                                                                       rel=1e-6)


def test_dr_stop_gradients():
    """The DR risk trains the prediction (not the imputation), the imputation loss the imputation
    (not the prediction): ∂risk/∂ê = 0, ∂imputation/∂e = 0, the other two derivatives as by hand."""
    error = torch.tensor([0.7, 0.2, 1.3, 0.4], dtype=torch.float64, requires_grad=True)
    imputed = torch.tensor([0.5, 0.6, 0.9, 0.1], dtype=torch.float64, requires_grad=True)
    click = torch.tensor([1.0, 0.0, 1.0, 1.0], dtype=torch.float64)
    p_hat = torch.tensor([0.5, 0.2, 0.1, 0.8], dtype=torch.float64)
    risk, imputation = dr_risk(error, imputed, click, p_hat)
    g_e, g_i = torch.autograd.grad(risk, (error, imputed), retain_graph=True, allow_unused=True)
    assert g_i is None
    torch.testing.assert_close(g_e, click / p_hat / 4)
    g_e, g_i = torch.autograd.grad(imputation, (error, imputed), allow_unused=True)
    assert g_e is None
    torch.testing.assert_close(g_i, -2 * click * (error - imputed).detach() / p_hat / 4)


@pytest.mark.parametrize("counterfactual", ["ips", "dr"])
def test_escm2_risk_sends_no_gradient_into_the_propensity(counterfactual):
    model = build("escm2", f"model.counterfactual={counterfactual}").train()
    batch = tiny_batch(32, tasks=("ctr", "cvr"))
    out = model(batch)
    ctr_params = list(model.towers["ctr"].parameters())
    cvr_params = list(model.towers["cvr"].parameters())
    risk = model.counterfactual_risk(out, batch)
    grads = torch.autograd.grad(risk, ctr_params + cvr_params, retain_graph=True, allow_unused=True)
    assert all(g is None or not g.any() for g in grads[: len(ctr_params)])  # the CTR tower: nothing
    assert any(g is not None and g.abs().sum() > 0 for g in grads[len(ctr_params):])  # the CVR tower: trained
    # the same risk with p̂ NOT detached does reach the CTR tower: the check above is sensitive
    error = F.binary_cross_entropy_with_logits(out.logits["cvr"], batch.labels["cvr"], reduction="none")
    leaky = (batch.labels["ctr"] * error / torch.sigmoid(out.logits["ctr"]).clamp(min=1 / 15)).mean()
    grads = torch.autograd.grad(leaky, ctr_params, allow_unused=True)
    assert any(g is not None and g.abs().sum() > 0 for g in grads)


def test_escm2_dr_imputation_tower_is_trained_by_the_imputation_loss_only():
    model = build("escm2", "model.counterfactual=dr", "tower.dual=true").train()
    assert model.imputation is not None and model.imputation.dual and not model.imputation.kd
    batch = tiny_batch(32, tasks=("ctr", "cvr"))
    out = model(batch)
    assert "kd/imputation" not in out.aux_losses and set(out.aux_losses) == {"kd/ctr", "kd/cvr"}
    params = list(model.imputation.parameters())
    grads = torch.autograd.grad(model.task_losses(out, batch)["cvr"], params, retain_graph=True)
    assert any(g.abs().sum() > 0 for g in grads)
    grads = torch.autograd.grad(model.task_losses(out, batch)["ctr"], params, allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    assert build("escm2").imputation is None  # IPS has none


def test_escm2_needs_one_child_on_its_parent():
    with pytest.raises(ValueError, match="model 'escm2' needs exactly one task"):
        build("escm2", task_list=tasks("ctr"))


# --- AITM ------------------------------------------------------------------------------------------
REF = ("model.embedding_dim=3", "tower.hidden_units=[4]", "tower.dropout=0", "tower.batch_norm=false")


def lin(layer, x: torch.Tensor) -> torch.Tensor:
    y = x @ layer.weight.double().T
    return y + layer.bias.double() if layer.bias is not None else y


def mlp_layer(block, x: torch.Tensor) -> torch.Tensor:
    """One Linear → ReLU block (no BatchNorm, no dropout) by hand."""
    (linear,) = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    return torch.relu(lin(linear, x))


def test_aitm_transfer_attention_and_outputs_equal_hand_computation():
    model = build("aitm", *REF).eval()
    b = tiny_batch(12, tasks=("ctr", "cvr"))
    with torch.no_grad():
        out = model(b)
        total, parts = model.loss(out, b)
        x = model.flat_embedding(b).double()
    chain = model.chains[0]
    att = chain.attention
    q1, q2 = mlp_layer(chain.towers[0], x), mlp_layer(chain.towers[1], x)
    p1 = mlp_layer(chain.transfers[0], q1)  # the information transferred from the click step
    scores = torch.stack([(lin(att.h2, u) * lin(att.h3, u)).sum(-1) for u in (p1, q2)], dim=1) / math.sqrt(4)
    w = torch.exp(scores) / torch.exp(scores).sum(dim=1, keepdim=True)  # softmax over the two inputs
    z2 = w[:, :1] * lin(att.h1, p1) + w[:, 1:] * lin(att.h1, q2)
    l1, l2 = lin(chain.heads[0], q1).squeeze(-1), lin(chain.heads[1], z2).squeeze(-1)
    torch.testing.assert_close(out.logits["ctr"].double(), l1, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits["cvr"].double(), l2, rtol=1e-5, atol=1e-6)
    y1, y2 = torch.sigmoid(l1), torch.sigmoid(l2)
    # the second output is P(click, conversion): published as ctcvr; cvr is the implied conditional
    torch.testing.assert_close(out.probs["ctr"].double(), y1, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.probs["ctcvr"].double(), y2, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(out.probs["cvr"].double(), torch.clamp(y2 / y1, max=1), rtol=1e-5, atol=1e-7)
    click, conv = b.labels["ctr"].double(), b.labels["cvr"].double()

    def bce(p, y):
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # over ALL rows

    calibrator = 0.6 * torch.relu(y2 - y1).mean()
    torch.testing.assert_close(parts["ctr"].double(), bce(y1, click), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts["cvr"].double(), bce(y2, click * conv), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts["calibrator"].double(), calibrator, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(total.double(), bce(y1, click) + bce(y2, click * conv) + calibrator,
                               rtol=1e-5, atol=1e-7)


def test_aitm_calibrator_penalises_a_step_above_its_predecessor():
    l1 = torch.tensor([0.0, 1.0, -2.0, 3.0], dtype=torch.float64)
    l2 = torch.tensor([1.0, -1.0, -1.0, 3.0], dtype=torch.float64)
    s = lambda v: 1 / (1 + math.exp(-v))  # noqa: E731
    expected = ((s(1) - s(0)) + 0 + (s(-1) - s(-2)) + 0) / 4  # rows 0 and 2 exceed their click probability
    assert float(calibrator_loss([l1, l2])) == pytest.approx(expected, rel=1e-12)
    l3 = torch.tensor([2.0, 0.0, -1.5, 2.0], dtype=torch.float64)
    expected3 = expected + ((s(2) - s(1)) + (s(0) - s(-1))) / 4  # rows 0 and 1 exceed their conversion
    assert float(calibrator_loss([l1, l2, l3])) == pytest.approx(expected3, rel=1e-12)
    # the model's aux term is α times it, α = model.calibrator_weight
    model = build("aitm", "model.calibrator_weight=2.5").eval()
    b = tiny_batch(8, tasks=("ctr", "cvr"))
    out = model(b)
    torch.testing.assert_close(out.aux_losses["calibrator"],
                               2.5 * calibrator_loss([out.logits["ctr"], out.logits["cvr"]]))


def test_aitm_funnel_order_and_bad_task_sets():
    three = [Task("cvr", "cvr", "ctr"), Task("ctr", "ctr"), Task("buy", "buy", "cvr")]
    assert funnel_order(three, "aitm") == ["ctr", "cvr", "buy"]
    model = build("aitm", task_list=three)
    assert model.output_names == ["cvr", "ctr", "buy", "ctcvr", "cvr_buy"]
    b = tiny_batch(8, tasks=("ctr", "cvr"))
    b.labels["buy"] = b.labels["cvr"] * torch.tensor([1.0, 0, 1, 0, 1, 0, 1, 0])
    out = model(b)
    assert set(out.probs) == set(model.output_names)
    y = {n: torch.sigmoid(out.logits[n]) for n in ("ctr", "cvr", "buy")}
    torch.testing.assert_close(out.probs["cvr_buy"], y["buy"])  # joint P(click, conversion, buy)
    torch.testing.assert_close(out.probs["buy"], torch.clamp(y["buy"] / y["cvr"], max=1))
    losses = model.task_losses(out, b)
    target = b.labels["ctr"] * b.labels["cvr"] * b.labels["buy"]
    torch.testing.assert_close(losses["buy"], F.binary_cross_entropy_with_logits(out.logits["buy"], target))
    for bad in ([Task("ctr", "ctr")], [Task("ctr", "ctr"), Task("like", "like")],
                [Task("ctr", "ctr"), Task("cvr", "cvr", "ctr"), Task("fav", "fav", "ctr")]):
        with pytest.raises(ValueError, match="model 'aitm' models one funnel"):
            build("aitm", task_list=bad)


# --- every new model trains -----------------------------------------------------------------------
MODELS = {"escm2_ips": ("escm2", "model.counterfactual=ips"), "escm2_dr": ("escm2", "model.counterfactual=dr"),
          "aitm": ("aitm",)}
TOWERS = {"mlp": (), "final": ("tower=final",), "final_dual_kd": ("tower=final", "tower.dual=true", "tower.kd=true")}


@pytest.mark.parametrize("tower", list(TOWERS))
@pytest.mark.parametrize("model_id", list(MODELS))
def test_every_variant_takes_a_trainer_step(model_id, tower):
    name, *extra = MODELS[model_id]
    cfg = make_cfg(f"model={name}", *SMALL, *extra, *TOWERS[tower], "train.lr=0.01")
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(), tasks("ctr", "cvr"))
    trainer = Trainer(model, cfg, log=lambda s: None)
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    before = [p.detach().clone() for p in model.parameters()]
    model.train()
    loss, parts = trainer.train_step(batch, [p for p in model.parameters() if p.requires_grad])
    assert torch.isfinite(loss) and {"ctr", "cvr"} <= set(parts)
    assert ({"kd/ctr", "kd/cvr"} <= set(parts)) is (tower == "final_dual_kd")
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))  # every part is trained
    with torch.no_grad():
        probs = model.eval()(batch).probs
    assert set(probs) == {"ctr", "cvr", "ctcvr"}
    assert all(p.shape == (16,) and ((p >= 0) & (p <= 1)).all() for p in probs.values())
