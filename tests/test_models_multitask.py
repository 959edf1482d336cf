"""Multi-task models: ESMM entire-space loss, masked CVR loss, gates, self-distillation, one train step;
every model and tower against a float64 hand computation; bad config values name the key."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from mtl_final.models import ModelOutput, build_model
from mtl_final.models.esmm import product_bce_with_logits
from mtl_final.nn.final import FactorizedInteraction, FinalBlock
from mtl_final.nn.mlp import MLPBlock
from mtl_final.nn.tower import Tower, self_distillation_loss
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


# ----------------------------------------------------------------------------- hand computations
# Every expected value below is computed by hand (float64) from the module's own weights: MMoE's gate
# softmax and mixture, PLE's gate input sets over two levels, ESMM's entire-space losses and their
# gradient flow, SharedBottom's composition, MLP / FINAL / dual towers and the FINAL 2B+KD terms.
REFERENCE_SMALL = (
    "model.embedding_dim=3",
    "tower.hidden_units=[4]",
    "tower.dropout=0",
    "expert.hidden_units=[4]",
    "expert.dropout=0",
)


def build_reference(name: str, *overrides: str):
    torch.manual_seed(0)
    cfg = make_cfg(f"model={name}", *REFERENCE_SMALL, *overrides)
    return build_model(cfg, tiny_features(), tasks("ctr", "cvr"))


def batch(n: int = 12, seed: int = 0):
    return tiny_batch(n, seed=seed, tasks=("ctr", "cvr"))


def randomise_batchnorm(model: nn.Module) -> None:
    """Non-trivial running statistics and affine parameters, so that eval-mode BatchNorm matters."""
    g = torch.Generator().manual_seed(7)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm1d):
            with torch.no_grad():
                m.running_mean.copy_(0.3 * torch.randn(m.num_features, generator=g))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=g))
                m.weight.copy_(1 + 0.2 * torch.randn(m.num_features, generator=g))
                m.bias.copy_(0.2 * torch.randn(m.num_features, generator=g))


# --- a float64 reference of the deep blocks (eval mode: BatchNorm on running statistics) ---------


def ref_linear(lin: nn.Linear, x: torch.Tensor) -> torch.Tensor:
    y = x @ lin.weight.double().T
    return y + lin.bias.double() if lin.bias is not None else y


def ref_block(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Walk the block's layers by hand (Linear / FINAL layer, BatchNorm, ReLU)."""
    for m in block.layers:
        if isinstance(m, FactorizedInteraction):
            assert m.aggregation == "concat" and m.num_steps == 2 and isinstance(m.sigma, nn.Identity)
            z = ref_linear(m.linear, x)
            h1, z2 = z[:, : m.step_dim], z[:, m.step_dim:]
            x = torch.cat([h1, h1 * z2], dim=1)  # h_1 = z_1, h_2 = h_1 ⊙ z_2
        elif isinstance(m, nn.Linear):
            x = ref_linear(m, x)
        elif isinstance(m, nn.BatchNorm1d):
            x = (x - m.running_mean.double()) / torch.sqrt(m.running_var.double() + m.eps)
            x = x * m.weight.double() + m.bias.double()
        elif type(m).__name__ in ("ReLU", "ReLUDropout"):
            x = torch.relu(x)
        else:
            raise AssertionError(f"unexpected layer {m!r}")
    return x


def ref_tower(tower: Tower, x: torch.Tensor) -> torch.Tensor:
    logits = [ref_linear(head, ref_block(block, x)).squeeze(-1) for block, head in zip(tower.blocks, tower.heads)]
    return sum(logits) / len(logits)


def flat(model, b) -> torch.Tensor:
    with torch.no_grad():
        return model.flat_embedding(b).double()


# --- towers ------------------------------------------------------------------------------------


@pytest.mark.parametrize("overrides,kind", [((), MLPBlock), (("tower=final",), FinalBlock),
                                            (("tower=final", "tower.dual=true"), FinalBlock)])
def test_tower_logit_equals_hand_computation(overrides, kind):
    model = build_reference("shared_bottom", "tower.hidden_units=[6,4]", *overrides).eval()
    randomise_batchnorm(model)
    for tower in model.towers.values():
        assert len(tower.blocks) == (2 if "tower.dual=true" in overrides else 1)
        assert all(isinstance(b, kind) for b in tower.blocks)
    b = batch()
    with torch.no_grad():
        out = model(b)
    x = flat(model, b)
    for name, tower in model.towers.items():
        torch.testing.assert_close(out.logits[name].double(), ref_tower(tower, x), rtol=1e-5, atol=1e-6)
    assert out.aux_losses == {}


def test_dual_blocks_are_initialised_independently():
    model = build_reference("shared_bottom", "tower.dual=true")
    tower = model.towers["ctr"]
    w0 = tower.blocks[0].layers[0].weight
    w1 = tower.blocks[1].layers[0].weight
    assert not torch.equal(w0, w1)


def test_kd_loss_equals_hand_formula_for_final_dual_tower():
    """BCE(σ(l_a), sg(ŷ)) + BCE(σ(l_b), sg(ŷ)), ŷ = σ((l_a + l_b)/2), in training mode."""
    torch.manual_seed(0)
    section = dict(make_cfg("tower=final", "tower.dual=true", "tower.dropout=0", "tower.hidden_units=[6]")["tower"])
    tower = Tower(5, section).train()
    assert tower.kd
    x = torch.randn(10, 5)
    logit, kd = tower(x)
    # training-mode BatchNorm normalises with batch statistics: run the blocks again on the same rows
    la, lb = (head(block(x)).squeeze(-1).double() for block, head in zip(tower.blocks, tower.heads))
    y_hat = torch.sigmoid((la + lb) / 2)

    def bce(p, y):
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()

    expected = bce(torch.sigmoid(la), y_hat) + bce(torch.sigmoid(lb), y_hat)
    torch.testing.assert_close(logit.double(), (la + lb) / 2, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(kd.double(), expected, rtol=1e-5, atol=1e-7)
    assert tower.eval()(x)[1] is None


def test_kd_gradient_treats_teacher_as_constant():
    a = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64, requires_grad=True)
    b = torch.tensor([-0.7, 0.4, 1.1], dtype=torch.float64, requires_grad=True)
    teacher = (a + b) / 2
    loss = self_distillation_loss([a, b], teacher)
    ga, gb = torch.autograd.grad(loss, (a, b))
    t = torch.sigmoid(teacher.detach())
    # d/da BCE_with_logits(a, t) = (σ(a) - t) / n: the teacher contributes nothing
    torch.testing.assert_close(ga, (torch.sigmoid(a) - t).detach() / 3)
    torch.testing.assert_close(gb, (torch.sigmoid(b) - t).detach() / 3)


def test_dual_without_kd_has_no_aux_loss():
    model = build_reference("shared_bottom", "tower.dual=true", "tower.kd=false").train()
    assert model(batch()).aux_losses == {}


# --- MMoE ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("expert", ["mlp", "final"])
def test_mmoe_gates_and_mixture_equal_hand_computation(expert):
    model = build_reference("mmoe", "model.num_experts=3", f"expert={expert}").eval()
    kind = FinalBlock if expert == "final" else MLPBlock
    assert len(model.experts) == 3 and all(isinstance(e, kind) for e in model.experts)
    randomise_batchnorm(model)
    b = batch()
    with torch.no_grad():
        out = model(b)
    x = flat(model, b)
    experts = torch.stack([ref_block(e, x) for e in model.experts], dim=1)  # [B, E, H]
    for name in ("ctr", "cvr"):
        gate = model.gates[name]
        g = torch.softmax(ref_linear(gate, x), dim=-1)  # the gate reads the input x
        torch.testing.assert_close(model.last_gates[name].double(), g, rtol=1e-5, atol=1e-6)
        mixed = (g.unsqueeze(-1) * experts).sum(1)
        torch.testing.assert_close(out.logits[name].double(), ref_tower(model.towers[name], mixed),
                                   rtol=1e-5, atol=1e-6)
    # one gate per task, distinct weights
    assert not torch.equal(model.gates["ctr"].weight, model.gates["cvr"].weight)


def test_mmoe_final_experts_dual_towers_train_with_kd():
    model = build_reference("mmoe", "expert=final", "tower=final", "tower.dual=true").train()
    b = batch(16)
    out = model(b)
    loss, parts = model.loss(out, b)
    assert {"kd/ctr", "kd/cvr"} <= set(parts)
    loss.backward()
    for e in model.experts:
        assert e.layers[0].linear.weight.grad.abs().sum() > 0


# --- PLE -----------------------------------------------------------------------------------------


def ref_cgc(level, task_in: dict, shared_in: torch.Tensor, names):
    shared = [ref_block(e, shared_in) for e in level.shared_experts]
    own = {k: [ref_block(e, task_in[k]) for e in level.task_experts[k]] for k in names}
    outs, gates = {}, {}
    for k in names:
        g = torch.softmax(ref_linear(level.task_gates[k], task_in[k]), dim=-1)
        outs[k] = (g.unsqueeze(-1) * torch.stack(own[k] + shared, 1)).sum(1)  # own T + shared S
        gates[k] = g
    s_out = s_g = None
    if level.shared_gate is not None:
        s_g = torch.softmax(ref_linear(level.shared_gate, shared_in), dim=-1)
        every = [e for k in names for e in own[k]] + shared  # all task experts + shared
        s_out = (s_g.unsqueeze(-1) * torch.stack(every, 1)).sum(1)
    return outs, s_out, gates, s_g


@pytest.mark.parametrize("levels,n_task,n_shared,expert", [
    (2, 1, 2, "mlp"), (3, 2, 1, "final"), (1, 2, 2, "mlp"), (2, 0, 2, "mlp"), (2, 2, 0, "mlp"),
])
def test_ple_equals_hand_computation(levels, n_task, n_shared, expert):
    model = build_reference("ple", f"model.num_levels={levels}", f"model.num_task_experts={n_task}",
                  f"model.num_shared_experts={n_shared}", f"expert={expert}").eval()
    randomise_batchnorm(model)
    names = ["ctr", "cvr"]
    b = batch()
    with torch.no_grad():
        out = model(b)
    x = flat(model, b)
    task_in, shared_in = {k: x for k in names}, x
    for j, level in enumerate(model.levels):
        assert (level.shared_gate is None) == (j == levels - 1)  # no shared gate at the last level
        for k in names:
            assert level.task_gates[k].out_features == n_task + n_shared
        if level.shared_gate is not None:
            assert level.shared_gate.out_features == 2 * n_task + n_shared
        task_in, shared_in, gates, s_g = ref_cgc(level, task_in, shared_in, names)
        for k in names:
            torch.testing.assert_close(model.last_task_gates[j][k].double(), gates[k], rtol=1e-5, atol=1e-6)
        if s_g is not None:
            torch.testing.assert_close(model.last_shared_gates[j].double(), s_g, rtol=1e-5, atol=1e-6)
    assert len(model.last_shared_gates) == levels - 1
    for k in names:
        torch.testing.assert_close(out.logits[k].double(), ref_tower(model.towers[k], task_in[k]),
                                   rtol=1e-5, atol=1e-6)


def test_ple_task_gate_ignores_other_tasks_experts():
    """Task k's output at the last level does not depend on task j's experts of that level."""
    model = build_reference("ple", "model.num_levels=1").eval()
    b = batch()
    with torch.no_grad():
        before = {k: v.clone() for k, v in model(b).logits.items()}
        for e in model.levels[0].task_experts["cvr"]:
            for p in e.parameters():
                p.add_(1.0)
        after = model(b).logits
    torch.testing.assert_close(after["ctr"], before["ctr"])
    assert not torch.allclose(after["cvr"], before["cvr"])  # the check is sensitive


def test_cgc_level_shapes():
    model = build_reference("ple", "model.num_levels=2", "model.num_task_experts=1", "model.num_shared_experts=3",
                  "expert.hidden_units=[6]").eval()
    x = torch.randn(5, model.levels[0].task_gates["ctr"].in_features)
    outs, s_out, gates, s_g = model.levels[0]({"ctr": x, "cvr": x}, x)
    assert all(o.shape == (5, 6) for o in outs.values()) and s_out.shape == (5, 6)
    assert all(g.shape == (5, 1 + 3) for g in gates.values()) and s_g.shape == (5, 2 * 1 + 3)
    outs, s_out, gates, s_g = model.levels[1](outs, s_out)
    assert s_out is None and s_g is None


# --- ESMM ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["mlp", "final"])
def test_esmm_full_model_losses_equal_hand_computation(tower):
    model = build_reference("esmm", f"tower={tower}").eval()
    randomise_batchnorm(model)
    b = batch(16)
    with torch.no_grad():
        out = model(b)
        total, parts = model.loss(out, b)
    x = flat(model, b)
    a, c = ref_tower(model.towers["ctr"], x), ref_tower(model.towers["cvr"], x)
    torch.testing.assert_close(out.logits["ctr"].double(), a, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out.logits["cvr"].double(), c, rtol=1e-5, atol=1e-6)
    click, conv = b.labels["ctr"].double(), b.labels["cvr"].double()
    pctr, pcvr = torch.sigmoid(a), torch.sigmoid(c)
    pctcvr = pctr * pcvr

    def bce(p, y):
        return -(y * torch.log(p) + (1 - y) * torch.log(1 - p)).mean()  # over ALL rows

    torch.testing.assert_close(out.probs["ctcvr"].double(), pctcvr, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts["ctr"].double(), bce(pctr, click), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(parts["cvr"].double(), bce(pctcvr, click * conv), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(total.double(), bce(pctr, click) + bce(pctcvr, click * conv), rtol=1e-5, atol=1e-7)


def test_esmm_gradient_flow():
    """ctr loss trains only the ctr tower (and the embedding); the ctcvr loss trains both towers;
    the cvr tower gets no other signal; one embedding is shared."""
    model = build_reference("esmm").train()
    assert sum(isinstance(m, type(model.embedding)) for m in model.modules()) == 1
    b = batch(16)
    parts = model.task_losses(model(b), b)
    cvr_params = list(model.towers["cvr"].parameters())
    ctr_params = list(model.towers["ctr"].parameters())
    g = torch.autograd.grad(parts["ctr"], cvr_params, retain_graph=True, allow_unused=True)
    assert all(x is None or not x.any() for x in g)
    g = torch.autograd.grad(parts["cvr"], cvr_params + ctr_params, retain_graph=True)
    assert all(x.abs().sum() > 0 for x in g[: len(cvr_params)] if x.dim() > 1)
    assert any(x.abs().sum() > 0 for x in g[len(cvr_params):])
    g = torch.autograd.grad(parts["ctr"], model.embedding.table.weight, retain_graph=True)[0]
    h = torch.autograd.grad(parts["cvr"], model.embedding.table.weight)[0]
    assert g.abs().sum() > 0 and h.abs().sum() > 0


# --- SharedBottom --------------------------------------------------------------------------------


@pytest.mark.parametrize("tower", ["mlp", "final"])
def test_shared_bottom_equals_hand_computation(tower):
    model = build_reference("shared_bottom", f"tower={tower}", "model.shared_units=[6]").eval()
    assert isinstance(model.shared, FinalBlock if tower == "final" else MLPBlock)
    randomise_batchnorm(model)
    b = batch()
    with torch.no_grad():
        out = model(b)
        parts = model.task_losses(out, b)
    h = ref_block(model.shared, flat(model, b))
    for name, t in model.towers.items():
        torch.testing.assert_close(out.logits[name].double(), ref_tower(t, h), rtol=1e-5, atol=1e-6)
    m = b.labels["ctr"] > 0.5
    lc = ref_tower(model.towers["cvr"], h)
    expected = F.binary_cross_entropy_with_logits(lc[m], b.labels["cvr"][m].double())
    torch.testing.assert_close(parts["cvr"].double(), expected, rtol=1e-5, atol=1e-7)


# --- bad config values ---------------------------------------------------------------------------


@pytest.mark.parametrize("name,overrides,key", [
    ("mmoe", ("model.num_experts=0",), "model.num_experts"),
    ("ple", ("model.num_levels=0",), "model.num_levels"),
    ("ple", ("model.num_task_experts=0", "model.num_shared_experts=0"), "model.num_task_experts"),
    ("ple", ("model.num_shared_experts=-1",), "model.num_shared_experts"),
    ("shared_bottom", ("model.shared_units=[0]",), "model.shared_units"),
    # FINAL's concat splits each width into num_steps parts: the error names the offending key
    ("esmm", ("tower=final", "tower.hidden_units=[5]"), "tower.hidden_units"),
    ("mmoe", ("expert=final", "expert.hidden_units=[5]"), "expert.hidden_units"),
    ("ple", ("expert=final", "expert.hidden_units=[6,5]"), "expert.hidden_units"),
    ("shared_bottom", ("tower=final", "model.shared_units=[5]"), "model.shared_units"),
    ("shared_bottom", ("tower=final", "tower.num_steps=3", "tower.hidden_units=[4]"), "tower.hidden_units"),
])
def test_bad_config_values_name_the_key(name, overrides, key):
    with pytest.raises(ValueError, match=key.replace(".", r"\.")):
        build_reference(name, *overrides)


@pytest.mark.parametrize("name,overrides,key", [
    ("final", ("block.kind=final", "block.hidden_units=[5]"), "block.hidden_units"),
    ("final", ("block.kind=final", "model.num_blocks=2", "model.block2.hidden_units=[5]"), "model.block2.hidden_units"),
    ("mlp", ("block.kind=final", "block.num_steps=3", "block.hidden_units=[4]"), "block.num_steps"),
])
def test_single_task_blocks_name_the_key_too(name, overrides, key):
    # the single-task models build their blocks through the same factory, build_block_from_config
    cfg = make_cfg(f"model={name}", "model.embedding_dim=3", *overrides)
    with pytest.raises(ValueError, match=rf"^config keys .*'{re.escape(key)}'.*\(block kind 'final'\): "):
        build_model(cfg, tiny_features(), tasks("ctr"))
