"""Multi-task models: ESMM entire-space loss, masked CVR loss, gates, self-distillation, one train step."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from mtl_final.models import ModelOutput, build_model
from mtl_final.models.esmm import product_bce_with_logits
from tests.support.model_fixtures import Task, make_cfg, tasks, tiny_batch, tiny_features

SMALL = (
    "model.embedding_dim=4",
    "tower.hidden_units=[8,4]",
    "tower.dropout=0",
    "expert.hidden_units=[8]",
    "expert.dropout=0",
)


def build(name: str, *overrides: str, task_list=None):
    torch.manual_seed(0)
    cfg = make_cfg(f"model={name}", *SMALL, *overrides)
    return build_model(cfg, tiny_features(), task_list or tasks("ctr", "cvr"))


def np_bce(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def np_sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


def fixed_logits(n: int, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"ctr": 3 * torch.randn(n, generator=g), "cvr": 3 * torch.randn(n, generator=g)}


# --- ESMM ------------------------------------------------------------------------------------


def test_esmm_loss_equals_hand_computation(monkeypatch):
    model = build("esmm")
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    logits = fixed_logits(16)
    monkeypatch.setattr(model, "compute_logits", lambda b: (logits, {}))
    out = model(batch)
    total, parts = model.loss(out, batch)

    a, b = logits["ctr"].double().numpy(), logits["cvr"].double().numpy()
    click, conv = batch.labels["ctr"].double().numpy(), batch.labels["cvr"].double().numpy()
    pctr, pcvr = np_sigmoid(a), np_sigmoid(b)
    expected = np_bce(pctr, click).mean() + np_bce(pctr * pcvr, click * conv).mean()

    assert float(parts["ctr"]) == pytest.approx(np_bce(pctr, click).mean(), rel=1e-5)
    assert float(parts["cvr"]) == pytest.approx(np_bce(pctr * pcvr, click * conv).mean(), rel=1e-5)
    assert float(total) == pytest.approx(expected, rel=1e-5)  # regularisation is 0 by default
    np.testing.assert_allclose(out.probs["ctcvr"].double().numpy(), pctr * pcvr, rtol=1e-5)


def test_esmm_cvr_is_trained_on_unclicked_rows_too():
    model = build("esmm")
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    logits = {k: v.requires_grad_() for k, v in fixed_logits(16).items()}
    out = ModelOutput(logits, model.probabilities(logits))
    loss = sum(model.task_losses(out, batch).values())
    (grad_cvr,) = torch.autograd.grad(loss, logits["cvr"])
    unclicked = batch.labels["ctr"] < 0.5
    assert unclicked.any() and (grad_cvr[unclicked].abs() > 0).all()


def test_product_bce_is_finite_for_extreme_logits():
    a = torch.tensor([60.0, -60.0, 60.0, -60.0, 0.0], requires_grad=True)
    b = torch.tensor([60.0, 60.0, -60.0, -60.0, 0.0], requires_grad=True)
    for y in (torch.zeros(5), torch.ones(5)):
        loss = product_bce_with_logits(a, b, y)
        ga, gb = torch.autograd.grad(loss, (a, b))
        assert torch.isfinite(loss) and torch.isfinite(ga).all() and torch.isfinite(gb).all()
    # moderate logits: agrees with the naive formula
    a2, b2 = torch.randn(50, dtype=torch.float64), torch.randn(50, dtype=torch.float64)
    y = (torch.rand(50) < 0.3).double()
    p = torch.sigmoid(a2) * torch.sigmoid(b2)
    torch.testing.assert_close(product_bce_with_logits(a2, b2, y), F.binary_cross_entropy(p, y))


def test_esmm_needs_exactly_one_child_parent_pair():
    with pytest.raises(ValueError, match="ctr"):
        build("esmm", task_list=tasks("ctr"))
    two = [Task("ctr", "ctr"), Task("cvr", "cvr", "ctr"), Task("buy", "buy", "ctr")]
    with pytest.raises(ValueError, match=r"(?s)cvr.*buy"):
        build("esmm", task_list=two)
    with pytest.raises(ValueError, match="ctr"):
        build("esmm", task_list=[Task("cvr", "cvr", "ctr")])


def test_esmm_extra_independent_task_gets_plain_bce():
    task_list = [Task("ctr", "ctr"), Task("cvr", "cvr", "ctr"), Task("like", "like")]
    model = build("esmm", task_list=task_list)
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    batch.labels["like"] = (torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5).float()
    logits = {**fixed_logits(16), "like": torch.linspace(-2, 2, 16)}
    out = ModelOutput(logits, model.probabilities(logits))
    losses = model.task_losses(out, batch)
    torch.testing.assert_close(
        losses["like"], F.binary_cross_entropy_with_logits(logits["like"], batch.labels["like"])
    )


# --- masked CVR loss (SharedBottom, base class) ------------------------------------------------


def test_shared_bottom_masked_cvr_loss_ignores_unclicked_rows():
    model = build("shared_bottom").eval()
    batch = tiny_batch(32, tasks=("ctr", "cvr"))
    click = batch.labels["ctr"] > 0.5
    assert click.any() and (~click).any()
    with torch.no_grad():
        out = model(batch)
    losses = model.task_losses(out, batch)

    logit = out.logits["cvr"].detach().double().numpy()
    y = batch.labels["cvr"].double().numpy()
    m = click.numpy()
    expected = np_bce(np_sigmoid(logit[m]), y[m]).mean()
    assert float(losses["cvr"]) == pytest.approx(expected, rel=1e-5)

    # flip the cvr labels of unclicked rows: same loss
    batch.labels["cvr"] = torch.where(click, batch.labels["cvr"], 1 - batch.labels["cvr"])
    assert float(model.task_losses(out, batch)["cvr"]) == pytest.approx(float(losses["cvr"]), rel=1e-6)
    # change the cvr logits of unclicked rows: same loss
    logits = dict(out.logits)
    logits["cvr"] = torch.where(click, logits["cvr"], torch.full_like(logits["cvr"], 7.0))
    changed = ModelOutput(logits, model.probabilities(logits))
    assert float(model.task_losses(changed, batch)["cvr"]) == pytest.approx(float(losses["cvr"]), rel=1e-6)


# --- gates ---------------------------------------------------------------------------------------


def test_mmoe_gates_shape_and_sum():
    model = build("mmoe", "model.num_experts=3")
    batch = tiny_batch(10, tasks=("ctr", "cvr"))
    model(batch)
    assert set(model.last_gates) == {"ctr", "cvr"}
    for g in model.last_gates.values():
        assert g.shape == (10, 3)
        torch.testing.assert_close(g.sum(-1), torch.ones(10))
        assert (g >= 0).all()


@pytest.mark.parametrize("levels", [1, 3])
def test_ple_gates_shape_and_sum(levels):
    model = build("ple", f"model.num_levels={levels}", "model.num_shared_experts=2", "model.num_task_experts=1")
    batch = tiny_batch(10, tasks=("ctr", "cvr"))
    model(batch)
    assert len(model.last_task_gates) == levels
    assert len(model.last_shared_gates) == levels - 1
    for level in model.last_task_gates:
        assert set(level) == {"ctr", "cvr"}
        for g in level.values():
            assert g.shape == (10, 1 + 2)
            torch.testing.assert_close(g.sum(-1), torch.ones(10))
    for g in model.last_shared_gates:
        assert g.shape == (10, 2 * 1 + 2)
        torch.testing.assert_close(g.sum(-1), torch.ones(10))


def test_ple_upper_level_experts_read_previous_level_outputs():
    model = build("ple").eval()
    seen = {}
    model.levels[0].register_forward_hook(lambda mod, inp, out: seen.__setitem__("level1", out))
    model.levels[1].task_experts["cvr"][0].register_forward_pre_hook(
        lambda mod, inp: seen.__setitem__("task_in", inp[0])
    )
    model.levels[1].shared_experts[0].register_forward_pre_hook(
        lambda mod, inp: seen.__setitem__("shared_in", inp[0])
    )
    model(tiny_batch(8, tasks=("ctr", "cvr")))
    task_out, shared_out, _, _ = seen["level1"]
    assert seen["task_in"] is task_out["cvr"]
    assert seen["shared_in"] is shared_out


# --- self-distillation ------------------------------------------------------------------------


def test_kd_sends_no_gradient_into_the_teacher():
    model = build("shared_bottom", "tower.dual=true", "tower.kd=true").train()
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    out = model(batch)
    assert set(out.aux_losses) == {"kd/ctr", "kd/cvr"}
    tower = model.towers["ctr"]
    params = list(tower.parameters())
    grads_kd = torch.autograd.grad(out.aux_losses["kd/ctr"], params)

    x = model.flat_embedding(batch).detach()
    block_logits = [head(block(x)).squeeze(-1) for block, head in zip(tower.blocks, tower.heads)]
    avg = (block_logits[0] + block_logits[1]) / 2
    # KD term = BCE of each block toward a constant target: its gradient on each block is exactly that
    const = sum(F.binary_cross_entropy_with_logits(lg, torch.sigmoid(avg).detach()) for lg in block_logits)
    grads_const = torch.autograd.grad(const, params, retain_graph=True)
    for g_kd, g_const in zip(grads_kd, grads_const):
        torch.testing.assert_close(g_kd, g_const)
    # ... and differs from a version whose teacher is not detached (the check is sensitive)
    leaky = sum(F.binary_cross_entropy_with_logits(lg, torch.sigmoid(avg)) for lg in block_logits)
    grads_leaky = torch.autograd.grad(leaky, params)
    assert any(not torch.allclose(a, b) for a, b in zip(grads_kd, grads_leaky))
    # no KD outside training
    assert model.eval()(batch).aux_losses == {}


# --- every family trains --------------------------------------------------------------------------

VARIANTS = {
    "tower_mlp": (),
    "tower_final": ("tower=final",),
    "tower_dual": ("tower.dual=true",),
    "expert_final": ("expert=final",),
}
CASES = [
    (family, variant)
    for family in ("shared_bottom", "esmm", "mmoe", "ple")
    for variant in VARIANTS
    if variant != "expert_final" or family in ("mmoe", "ple")
]


@pytest.mark.parametrize("family,variant", CASES)
def test_one_adam_step(family, variant):
    extra = ("model.shared_units=[8]",) if family == "shared_bottom" else ()
    model = build(family, *extra, *VARIANTS[variant]).train()
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    before = [p.detach().clone() for p in model.parameters()]
    out = model(batch)
    loss, parts = model.loss(out, batch)
    assert torch.isfinite(loss)
    for name in ("ctr", "cvr", "ctcvr"):
        assert out.probs[name].shape == (16,)
        assert ((out.probs[name] >= 0) & (out.probs[name] <= 1)).all()
    if variant == "tower_dual":
        assert {"kd/ctr", "kd/cvr"} <= set(parts)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    assert any(not torch.equal(b, p) for b, p in zip(before, model.parameters()))
    loss2, _ = model.loss(model(batch), batch)
    assert torch.isfinite(loss2)
