"""mtl_final/nn/cpu_matmul.py: which backend the float32 matmuls of training and scoring take, that
oneDNN's stay IEEE float32, and that the trainer's steps and evaluation run inside the scope."""
from __future__ import annotations

import pytest
import torch

from mtl_final.config import ConfigError
from mtl_final.cpuinfo import cpu_info
from mtl_final.data.store import TensorSplit
from mtl_final.models import build_model
from mtl_final.nn import cpu_matmul
from mtl_final.train.runtime import configure_runtime
from mtl_final.train.trainer import Trainer
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features


@pytest.fixture(autouse=True)
def keep_backend():
    before = cpu_matmul.backend()
    yield
    cpu_matmul.use_cpu_matmul(before)


@pytest.mark.parametrize("vendor, rounds, choice, expected", [
    ("AuthenticAMD", False, "auto", "onednn"),  # an AMD EPYC: MKL slow, oneDNN exact float32
    ("GenuineIntel", False, "auto", "blas"),
    (None, False, "auto", "blas"),  # vendor unreadable
    ("AuthenticAMD", True, "auto", "blas"),  # oneDNN would round: never by default
    ("GenuineIntel", False, "onednn", "onednn"),
    ("AuthenticAMD", False, "blas", "blas"),
])
def test_auto_takes_onednn_on_amd_cpus_where_it_stays_float32(monkeypatch, vendor, rounds, choice, expected):
    monkeypatch.setattr(cpu_matmul, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: rounds)
    assert cpu_matmul.use_cpu_matmul(choice) == expected == cpu_matmul.backend()


def test_onednn_is_refused_where_it_would_round_but_scoring_falls_back(monkeypatch):
    monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: True)
    with pytest.raises(ValueError, match="cpu_matmul=onednn.*AMX.*matmul_precision=medium"):
        cpu_matmul.use_cpu_matmul("onednn")
    assert cpu_matmul.use_cpu_matmul("onednn", strict=False) == "blas"
    with pytest.raises(ValueError, match="choose one of auto, blas, onednn"):
        cpu_matmul.resolve("mkl")
    with pytest.raises(ConfigError, match="train.cpu_matmul"):
        make_cfg("train.cpu_matmul=mkl")
    assert make_cfg()["train"]["cpu_matmul"] == "auto"


def test_cpu_vendor_reads_vendor_id(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\n")
    assert cpu_matmul.cpu_vendor(info) == "AuthenticAMD"
    info.write_text("processor\t: 0\n")
    assert cpu_matmul.cpu_vendor(info) is None
    assert cpu_matmul.cpu_vendor(tmp_path / "missing") is None


def test_cpu_info_gives_the_first_processors_fields(tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("\nprocessor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2\nempty\t:\n\n"
                    "processor\t: 1\nvendor_id\t: other\n")
    assert cpu_info(info) == {"processor": "0", "vendor_id": "AuthenticAMD", "flags": "fpu avx2", "empty": ""}
    assert cpu_info(tmp_path / "missing") == {}


@pytest.fixture
def highest():
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(before)


def test_onednn_scope_is_float32_exact_and_restores_the_precision(highest):
    if cpu_matmul.medium_matmul_rounds():
        pytest.skip("oneDNN's float32 matmuls round to bfloat16 on this CPU (AMX)")
    gen = torch.Generator().manual_seed(1)
    a, b, bias = torch.randn(1024, 400, generator=gen), torch.randn(400, 300, generator=gen), torch.randn(300)
    q, k = torch.randn(256, 10, 16, generator=gen), torch.randn(256, 16, 10, generator=gen)
    products = {  # what the models multiply: mm (fused kernels), linear (nn.Linear), bmm (attention, CIN)
        "mm": lambda: a @ b, "linear": lambda: torch.nn.functional.linear(a, b.t(), bias),
        "bmm": lambda: torch.bmm(q, k), "strided mm": lambda: a.t().contiguous().t() @ b,
    }
    exact = {"mm": a.double() @ b.double(), "linear": a.double() @ b.double() + bias.double(),
             "bmm": q.double() @ k.double(), "strided mm": a.double() @ b.double()}
    cpu_matmul.use_cpu_matmul("onednn")
    with cpu_matmul.scope():
        assert torch.get_float32_matmul_precision() == "medium"
        got = {name: f() for name, f in products.items()}
    assert torch.get_float32_matmul_precision() == "highest"
    torch.set_float32_matmul_precision("medium")
    medium = {name: f() for name, f in products.items()}  # torch's calls under medium: oneDNN's
    torch.set_float32_matmul_precision("highest")
    blas = {name: f() for name, f in products.items()}
    for name in products:
        assert torch.equal(got[name], medium[name]), name
        # float32 error: the 400-term sums of N(0, 1) products are ~20, float32 eps 1.2e-7; a bfloat16
        # input (8 bits of mantissa) would be off by ~0.1 there
        assert (got[name].double() - exact[name]).abs().max() < 1e-3, name
        assert (blas[name].double() - exact[name]).abs().max() < 1e-3, name
    with pytest.raises(KeyError), cpu_matmul.scope():
        raise KeyError("inside")
    assert torch.get_float32_matmul_precision() == "highest"  # restored on the way out of an error too


@pytest.mark.parametrize("backend, device, before, inside", [
    ("blas", "cpu", "highest", "highest"),  # MKL: nothing to switch
    ("onednn", "cuda", "highest", "highest"),  # medium would mean TF32/bfloat16 on a GPU
    ("onednn", "cpu", "high", "medium"),
    ("onednn", "cpu", "medium", "medium"),  # the user's medium is left alone
])
def test_scope_switches_only_cpu_onednn_runs(monkeypatch, highest, backend, device, before, inside):
    monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: False)
    cpu_matmul.use_cpu_matmul(backend)
    torch.set_float32_matmul_precision(before)
    with cpu_matmul.scope(device):
        assert torch.get_float32_matmul_precision() == inside
    assert torch.get_float32_matmul_precision() == before


@pytest.mark.parametrize("choice, inside", [("onednn", "medium"), ("blas", "highest")])
def test_trainer_steps_and_evaluation_run_in_the_scope(monkeypatch, highest, choice, inside):
    """The precision torch sees in the forward pass, in the backward pass and while evaluating: every
    matmul of the model, fused or not (here CrossNetV2's nn.Linear layers), takes the chosen backend."""
    monkeypatch.setattr(cpu_matmul, "medium_matmul_rounds", lambda: False)
    cfg = make_cfg("model=crossnetv2", f"train.cpu_matmul={choice}", "train.tensorboard=false")
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    seen: list[tuple[str, str]] = []
    model.register_forward_hook(lambda *_: seen.append(("forward", torch.get_float32_matmul_precision())))
    param = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Linear))
    param.register_hook(lambda g: seen.append(("backward", torch.get_float32_matmul_precision())))
    assert configure_runtime(cfg["train"], "cpu", lambda s: None).cpu_matmul == choice
    trainer = Trainer(model, cfg, log=lambda s: None)
    batch = tiny_batch(16)
    trainer.train_step(batch, [p for p in model.parameters() if p.requires_grad])
    trainer.predict(TensorSplit(batch.cat, batch.num, dict(batch.labels)))
    assert seen == [("forward", inside), ("backward", inside), ("forward", inside)]
    assert torch.get_float32_matmul_precision() == "highest"
