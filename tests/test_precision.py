"""train.precision=bf16: every model trains under bfloat16 autocast with float32 weights, logits
and losses; the heads stay exact float32; fp32 stays the untouched default. train.matmul_precision:
set process-wide by configure_runtime, reset by the next call, validated, and warned about where it
cannot help."""
from __future__ import annotations

import pytest
import torch

from mtl_final import kernels
from mtl_final.config import ConfigError
from mtl_final.data.store import TensorSplit
from mtl_final.models import build_model
from mtl_final.models.registry import MODELS
from mtl_final.nn import cpu_matmul
from mtl_final.nn.dropout import ReLUDropout, keep_multiplier, keep_scale
from mtl_final.nn.logit_head import LogitHead
from mtl_final.train import runtime
from mtl_final.train.runtime import configure_runtime
from mtl_final.train.trainer import Trainer
from tests.support.model_fixtures import SEQUENCE_MODELS, SMALL, make_cfg, tasks, tiny_batch, tiny_features

# the models that need sequence fields take their bf16 step in tests/test_sequence_models.py (a
# TensorSplit for the predict below carries no sequences in this tree)
@pytest.mark.parametrize("name", sorted(set(MODELS) - SEQUENCE_MODELS))
def test_every_model_takes_a_bf16_step_with_float32_state(name):
    multi = MODELS[name].MULTI_TASK
    names = ("ctr", "cvr") if multi else ("ctr",)
    cfg = make_cfg(f"model={name}", "block=final", "block.hidden_units=[8,8]", "block.dropout=0.1",
                   "train.precision=bf16", *SMALL.get(name, []))
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(), tasks(*names))
    trainer = Trainer(model, cfg, log=lambda s: None)
    batch = tiny_batch(32, tasks=names)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    with trainer.autocast():
        out = model(batch)
    assert all(logit.dtype == torch.float32 for logit in out.logits.values())
    loss, _ = trainer.train_step(batch, [p for p in model.parameters() if p.requires_grad])
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    for pname, p in model.named_parameters():
        assert p.dtype == torch.float32, pname
        assert p.grad is None or (p.grad.dtype == torch.float32 and torch.isfinite(p.grad).all()), pname
    assert not torch.equal(before["embedding.table.weight"], model.state_dict()["embedding.table.weight"])
    probs = trainer.predict(TensorSplit(batch.cat, batch.num, batch.labels))
    assert all(p.dtype.name == "float32" and ((p > 0) & (p < 1)).all() for p in probs.values())


def test_bf16_runs_the_matmuls_in_bfloat16_and_fp32_does_not():
    seen = {}
    for precision in ("fp32", "bf16"):
        cfg = make_cfg("model=mlp", "block.hidden_units=[8]", f"train.precision={precision}")
        model = build_model(cfg, tiny_features(), tasks("ctr"))
        trainer = Trainer(model, cfg, log=lambda s: None)
        linear = model.block.layers[0]
        linear.register_forward_hook(lambda m, i, o: seen.__setitem__(precision, o.dtype))
        with trainer.autocast():
            model(tiny_batch(8))
    assert seen == {"fp32": torch.float32, "bf16": torch.bfloat16}


def test_logit_head_is_exact_float32_under_autocast():
    torch.manual_seed(1)
    head = LogitHead(16)
    x = torch.randn(64, 16).bfloat16()
    expected = x.float() @ head.weight.t() + head.bias  # float32, same inputs
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = head(x)
        plain = torch.nn.functional.linear(x.float(), head.weight, head.bias)
    assert got.dtype == torch.float32 and plain.dtype == torch.bfloat16
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-6)
    assert not torch.allclose(plain.float(), expected, rtol=1e-6, atol=1e-6)  # what the head avoids


def test_bf16_dropout_keeps_an_exact_float32_scale():
    torch.manual_seed(2)
    mult = keep_multiplier(torch.Size([100, 10]), 0.1, torch.device("cpu"), torch.bfloat16)
    assert mult.dtype == torch.float32
    assert mult.unique().tolist() == [0.0, pytest.approx(keep_scale(0.1), rel=1e-7)]
    x = torch.full((100, 10), 2.0, dtype=torch.bfloat16)
    torch.manual_seed(2)
    y = ReLUDropout(0.1).train()(x)
    assert y.dtype == torch.bfloat16
    assert torch.equal(y, (2.0 * mult).bfloat16())


def test_precision_choice_is_validated():
    with pytest.raises(ConfigError, match="train.precision"):
        make_cfg("train.precision=fp16")


def test_bf16_without_native_support_warns(monkeypatch):
    for native in (False, True):  # native bfloat16 (bf16 autocast) and AMX-rounded medium matmuls
        monkeypatch.setattr(runtime, "_cpu_has_native_bf16", lambda: native)
        monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: native)
        for overrides, bf16_warning, medium_warning in (
                (["train.precision=bf16"], True, False), (["train.precision=fp32"], False, False),
                (["train.matmul_precision=medium"], False, True), (["train.matmul_precision=high"], False, False)):
            cfg = make_cfg("model=mlp", "block.hidden_units=[4]", *overrides)
            lines: list[str] = []
            configure_runtime(cfg["train"], "cpu", lines.append)
            assert any("slower than fp32" in line for line in lines) == (bf16_warning and not native)
            assert any("matmul_precision=medium does not round" in line and "float32 accuracy" in line
                       for line in lines) == (medium_warning and not native)


def test_medium_matmul_probe_agrees_with_a_matmul_and_restores_the_setting():
    torch.set_float32_matmul_precision("high")
    try:
        rounds = cpu_matmul.medium_matmul_rounds()
        assert torch.get_float32_matmul_precision() == "high"
        a, b = torch.randn(2048, 400), torch.randn(400, 256)  # larger than the probe, other values
        torch.set_float32_matmul_precision("medium")
        medium = a @ b
    finally:
        torch.set_float32_matmul_precision("highest")
    exact, rounded = a @ b, a.bfloat16().float() @ b.bfloat16().float()
    assert bool((medium - rounded).abs().max() < (medium - exact).abs().max()) == rounds
    if not rounds:  # float32 accuracy: at most a different summation order
        torch.testing.assert_close(medium, exact, rtol=1e-5, atol=1e-4)


def test_configure_runtime_sets_the_float32_matmul_precision_process_wide():
    seen = []
    for precision in ("medium", "high", "highest"):
        cfg = make_cfg("model=mlp", "block.hidden_units=[4]", f"train.matmul_precision={precision}")
        info = configure_runtime(cfg["train"], "cpu", lambda s: None)
        seen.append(torch.get_float32_matmul_precision())
        assert info.matmul_precision == precision
    assert seen == ["medium", "high", "highest"]  # each call sets its own, "highest" undoing the others
    assert make_cfg()["train"]["matmul_precision"] == "highest"
    with pytest.raises(ConfigError, match="train.matmul_precision"):
        make_cfg("train.matmul_precision=low")


def test_a_trainer_leaves_the_process_switches_as_configure_runtime_set_them():
    configure_runtime(make_cfg("train.kernels=torch", "train.matmul_precision=medium")["train"], "cpu",
                      lambda s: None)
    try:
        cfg = make_cfg("model=mlp", "block.hidden_units=[4]")  # kernels native, precision highest
        Trainer(build_model(cfg, tiny_features(), tasks("ctr")), cfg, log=lambda s: None)
        assert kernels.library() is None and torch.get_float32_matmul_precision() == "medium"
    finally:
        kernels.use_kernels("native")
