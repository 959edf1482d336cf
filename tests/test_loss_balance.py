"""train.loss_balance: sum is today's training bit for bit; uncertainty's loss and gradients; GradNorm's
weight gradient, its move toward equal gradient norms and its W per model family; the balancer's
state in last.pt and an exact resume; bad combinations are one clear error."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mtl_final import distributed
from mtl_final.config import load_config
from mtl_final.config_spec import allowed
from mtl_final.models import build_model
from mtl_final.train.loss_balance import (GradNormBalance, LossBalancer, UncertaintyBalance, build_balancer,
                                          last_shared_parameters)
from mtl_final.train.run import resume_run, run_experiment
from mtl_final.train.trainer import Trainer, build_optimizer
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features
from tests.support.tiny_data import tiny_overrides, write_tiny_dataset

SMALL = ("model.embedding_dim=4", "tower.hidden_units=[8,4]", "expert.hidden_units=[8]")
FAMILIES = ["shared_bottom", "esmm", "mmoe", "ple", "escm2", "aitm"]


def setup(name: str, *overrides: str):
    """(cfg, model) of `name` on the tiny features with tasks ctr, cvr on ctr."""
    cfg = make_cfg(f"model={name}", *SMALL, *overrides)
    torch.manual_seed(0)
    return cfg, build_model(cfg, tiny_features(), tasks("ctr", "cvr"))


def quiet_trainer(model, cfg) -> Trainer:
    return Trainer(model, cfg, log=lambda s: None)


# --- sum: today's loss and step -----------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_sum_is_todays_training_step_bit_for_bit(name):
    overrides = ("tower.dual=true", "model.task_weights={ctr: 0.7, cvr: 1.3}", "train.weight_decay=0.01")
    cfg, model = setup(name, *overrides)
    _, today = setup(name, *overrides)
    trainer = quiet_trainer(model, cfg)
    assert type(trainer.balancer) is LossBalancer and list(trainer.balancer.parameters()) == []
    optimizer = build_optimizer(today, cfg["train"])  # what the trainer built before balancing existed
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(3):
        batch = tiny_batch(16, seed=step, tasks=("ctr", "cvr"))
        torch.manual_seed(step)  # the same dropout draws for both
        loss, parts = trainer.train_step(batch, params)
        torch.manual_seed(step)
        out = today(batch)
        task = today.task_losses(out, batch)
        expected = sum(today.task_weights[n] * task[n] for n in task)  # today's formula, written out
        for aux in out.aux_losses.values():
            expected = expected + aux * batch.row_scale
        expected = expected + today.regularization()
        optimizer.zero_grad(set_to_none=True)
        expected.backward()
        nn.utils.clip_grad_norm_(list(today.parameters()), cfg["train"]["grad_clip_norm"], foreach=True)
        optimizer.step()
        assert torch.equal(loss, expected), step
        assert set(parts) == set(task) | set(out.aux_losses) | {"regularization"}
        for a, b in zip(model.parameters(), today.parameters()):
            assert torch.equal(a, b)
    assert trainer.balancer.task_weights() == {"ctr": 0.7, "cvr": 1.3}


# --- uncertainty ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", FAMILIES)
def test_uncertainty_loss_is_sum_of_exp_minus_s_times_loss_plus_s(name):
    cfg, model = setup(name, "train.loss_balance=uncertainty", "tower.dual=true")
    balancer = build_balancer(cfg, model)
    assert isinstance(balancer, UncertaintyBalance)
    with torch.no_grad():
        balancer.log_variances.copy_(torch.tensor([0.3, -0.7]))
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    torch.manual_seed(1)
    out = model.train()(batch)
    total, parts = balancer.loss(model, out, batch)
    task = model.task_losses(out, batch)
    s = {"ctr": 0.3, "cvr": -0.7}
    expected = sum(math.exp(-s[n]) * task[n].item() + s[n] for n in ("ctr", "cvr"))
    expected += sum(v.item() for k, v in parts.items() if k not in task)  # aux terms and regularisation
    assert total.item() == pytest.approx(expected, rel=1e-6)
    # ∂/∂s_i = 1 − exp(−s_i) · L_i
    (grad,) = torch.autograd.grad(total, balancer.log_variances)
    torch.testing.assert_close(grad, torch.tensor([1 - math.exp(-0.3) * task["ctr"].item(),
                                                   1 - math.exp(0.7) * task["cvr"].item()]))
    assert balancer.task_weights() == pytest.approx({"ctr": math.exp(-0.3), "cvr": math.exp(0.7)})


def test_uncertainty_log_variances_are_trained_by_the_optimizer_without_weight_decay():
    cfg, model = setup("shared_bottom", "train.loss_balance=uncertainty", "train.weight_decay=0.1")
    trainer = quiet_trainer(model, cfg)
    groups = trainer.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["params"] == [trainer.balancer.log_variances]
    assert groups[0]["weight_decay"] == 0.1 and groups[1]["weight_decay"] == 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    trainer.train_step(tiny_batch(16, tasks=("ctr", "cvr")), params)
    assert (trainer.balancer.log_variances.detach() != 0).all()


# --- GradNorm -------------------------------------------------------------------------------------


def scale_ctr_loss(model, factor: float) -> None:
    """Make the ctr task's loss `factor` times larger (its gradient norms too)."""
    losses = model.task_losses
    model.task_losses = lambda out, batch: {k: v * (factor if k == "ctr" else 1.0) for k, v in losses(out, batch).items()}


def gradient_norms(balancer: GradNormBalance, model, batch, weights: torch.Tensor) -> dict[str, float]:
    """‖∇_W w_i · L_i‖ per task on `batch` for the task weights `weights`."""
    losses = model.task_losses(model(batch), batch)
    return {n: float(w) * float(balancer.shared_gradient_norm(losses[n])) for n, w in zip(balancer.task_names, weights)}


def test_gradnorm_weight_gradient_equals_hand_computation():
    cfg, model = setup("shared_bottom", "model.shared_units=[8]", "train.loss_balance=gradnorm", "tower.dropout=0")
    scale_ctr_loss(model, 10.0)
    balancer = build_balancer(cfg, model)
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    out = model.train()(batch)
    task = model.task_losses(out, batch)
    norms = {n: torch.linalg.vector_norm(torch.autograd.grad(task[n], model.shared.layers[0].weight,
                                                             retain_graph=True)[0]) for n in task}
    total, _ = balancer.loss(model, out, batch)
    torch.testing.assert_close(balancer.initial_losses, torch.stack([task["ctr"], task["cvr"]]).detach())
    # first step: every rate r_i = 1, so the target is the mean norm; ctr's (×10) is above it
    assert norms["ctr"] > norms["cvr"]
    torch.testing.assert_close(balancer._weight_grad, torch.stack([norms["ctr"], -norms["cvr"]]))
    # the network sees the weights as constants: Σ w_i L_i with w = 1, plus the regularisation (0)
    torch.testing.assert_close(total, task["ctr"] + task["cvr"])


def test_gradnorm_moves_the_weights_toward_equal_gradient_norms():
    cfg, model = setup("shared_bottom", "model.shared_units=[8]", "train.loss_balance=gradnorm",
                       "tower.dropout=0", "train.lr=0.01")
    scale_ctr_loss(model, 10.0)
    trainer = quiet_trainer(model, cfg)
    balancer = trainer.balancer
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(40):
        trainer.train_step(tiny_batch(32, seed=step % 4, tasks=("ctr", "cvr")), params)
    weights = balancer.task_weights()
    assert weights["ctr"] < 1.0 < weights["cvr"]  # the task with ×10 the loss weighs less
    assert sum(weights.values()) == pytest.approx(2.0)  # renormalised to the number of tasks
    # on the trained network, the learned weights bring the two gradient norms closer than equal weights do
    batch = tiny_batch(32, seed=9, tasks=("ctr", "cvr"))
    learned = gradient_norms(balancer, model, batch, balancer.weights.detach())
    equal = gradient_norms(balancer, model, batch, torch.ones(2))
    assert equal["ctr"] > equal["cvr"]
    gap = lambda g: abs(math.log(g["ctr"] / g["cvr"]))  # noqa: E731
    assert gap(learned) < 0.75 * gap(equal), (learned, equal)


def test_gradnorm_weights_stay_positive():
    cfg, model = setup("esmm", "train.loss_balance=gradnorm")
    balancer = build_balancer(cfg, model)
    with torch.no_grad():
        balancer.weights.copy_(torch.tensor([-0.5, 1.0]))
    balancer.after_step()
    torch.testing.assert_close(balancer.weights.detach(), torch.tensor([1e-3, 1.0]) * 2 / 1.001)


def test_last_shared_layer_of_every_family():
    _, sb = setup("shared_bottom", "model.shared_units=[8,6]")
    (w,) = last_shared_parameters(sb)
    assert w is sb.shared.layers[3].weight and w.shape == (6, 8)  # Linear, BatchNorm, ReLU+dropout, Linear
    _, mmoe = setup("mmoe", "model.num_experts=3", "expert.hidden_units=[8,5]")
    assert [p.shape for p in last_shared_parameters(mmoe)] == [(5, 8)] * 3
    _, ple = setup("ple", "model.num_shared_experts=2")
    assert len(last_shared_parameters(ple)) == 2
    assert all(any(p is q for q in ple.levels[-1].shared_experts.parameters()) for p in last_shared_parameters(ple))
    for name, overrides in (("shared_bottom", ()), ("esmm", ()), ("escm2", ()), ("aitm", ()),
                            ("ple", ("model.num_shared_experts=0",))):
        _, model = setup(name, *overrides)
        assert last_shared_parameters(model) == list(model.embedding.parameters()), name


def test_gradnorm_state_travels_in_the_checkpoint():
    cfg, model = setup("aitm", "train.loss_balance=gradnorm", "train.lr=0.01")
    trainer = quiet_trainer(model, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    for step in range(3):
        trainer.train_step(tiny_batch(16, seed=step, tasks=("ctr", "cvr")), params)
    state = trainer.checkpoint()
    assert set(state["balancer"]) == {"weights", "initial_losses"}
    _, fresh = setup("aitm", "train.loss_balance=gradnorm", "train.lr=0.01")
    other = quiet_trainer(fresh, cfg)
    other.restore(state, None)
    for key, value in state["balancer"].items():
        assert torch.equal(other.balancer.state_dict()[key], value), key
    assert not torch.equal(state["balancer"]["weights"], torch.ones(2))


# --- configuration errors ---------------------------------------------------------------------------


def test_every_loss_balance_choice_builds():
    for kind in allowed("train.loss_balance"):
        cfg, model = setup("esmm", f"train.loss_balance={kind}")
        assert isinstance(build_balancer(cfg, model), LossBalancer)


def test_learned_balancing_refuses_what_it_cannot_do():
    cfg = make_cfg("model=mlp", "train.loss_balance=uncertainty")
    with pytest.raises(ValueError, match=r"this run trains one \(ctr\); use train.loss_balance=sum"):
        build_balancer(cfg, build_model(cfg, tiny_features(), tasks("ctr")))
    cfg, model = setup("esmm", "train.loss_balance=gradnorm", "model.task_weights={cvr: 2}")
    with pytest.raises(ValueError, match="remove model.task_weights or use sum"):
        build_balancer(cfg, model)
    cfg, model = setup("esmm", "train.loss_balance=gradnorm")
    with pytest.raises(ValueError, match="run it without torchrun"):
        build_balancer(cfg, model, distributed.DistContext(rank=0, world_size=2))


# --- exact resume with uncertainty ------------------------------------------------------------------


class Crash(Exception):
    pass


def _scalars(run_dir, tag):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [(e.step, e.value) for e in EventAccumulator(str(run_dir)).Reload().Scalars(tag)]


def test_resume_with_uncertainty_weighting_continues_exactly(tmp_path, monkeypatch):
    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(root, tmp_path) + [
        "tasks=[ctr,cvr]", "model=escm2", "model.counterfactual=dr", "train.loss_balance=uncertainty",
        "tower.dropout=0.2", "train.epochs=4", "train.eval_every_steps=3", "train.patience=10", "train.lr=0.01"])
    whole = run_experiment(cfg, tmp_path / "whole", log=lambda s: None)
    assert whole["steps"] == 20

    step = Trainer.train_step

    def crash_at_step_11(self, batch, params):
        if self.global_step == 10:  # one step after the checkpoint of step 9
            raise Crash
        return step(self, batch, params)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_11)
    with pytest.raises(Crash):
        run_experiment(cfg, tmp_path / "cut", log=lambda s: None)
    at_cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert at_cut["step"] == 9 and (at_cut["balancer"]["log_variances"] != 0).all()  # learned, not initial
    monkeypatch.setattr(Trainer, "train_step", step)
    resumed = resume_run(tmp_path / "cut", log=lambda s: None)

    for key in ("valid", "test", "best_epoch", "epochs_run", "steps"):
        assert resumed[key] == whole[key], key
    last_whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    last_cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    assert torch.equal(last_whole["balancer"]["log_variances"], last_cut["balancer"]["log_variances"])
    for name, value in last_whole["model"].items():
        assert torch.equal(value, last_cut["model"][name]), name
    for task in ("ctr", "cvr"):
        tag = f"train/task_weight_{task}"
        assert _scalars(tmp_path / "cut", tag) == _scalars(tmp_path / "whole", tag) and _scalars(tmp_path / "whole", tag)
