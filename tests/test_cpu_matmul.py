"""mtl_final/nn/cpu_matmul.py: which backend the fused kernels' float32 matmuls take, and that oneDNN's
stays IEEE float32."""
from __future__ import annotations

import pytest
import torch

from mtl_final.config import ConfigError
from mtl_final.cpuinfo import cpu_info
from mtl_final.nn import cpu_matmul
from tests.model_fixtures import make_cfg


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


def test_onednn_mm_is_float32_exact_and_restores_the_precision():
    if cpu_matmul.medium_matmul_rounds():
        pytest.skip("oneDNN's float32 matmuls round to bfloat16 on this CPU (AMX)")
    gen = torch.Generator().manual_seed(1)
    a, b = torch.randn(1024, 400, generator=gen), torch.randn(400, 300, generator=gen)
    exact = a.double() @ b.double()
    cpu_matmul.use_cpu_matmul("onednn")
    torch.set_float32_matmul_precision("highest")
    got = cpu_matmul.mm(a, b)
    assert torch.get_float32_matmul_precision() == "highest"
    torch.set_float32_matmul_precision("medium")
    assert torch.equal(got, torch.mm(a, b))  # the call torch makes under medium, i.e. oneDNN's
    torch.set_float32_matmul_precision("highest")
    # float32 error: the 400-term sums of N(0, 1) products are ~20, float32 eps 1.2e-7
    assert (got.double() - exact).abs().max() < 1e-3
    torch.testing.assert_close(cpu_matmul.mm(a.t().contiguous().t(), b), got, rtol=1e-6, atol=1e-4)  # strided
    cpu_matmul.use_cpu_matmul("blas")
    assert torch.equal(cpu_matmul.mm(a, b), torch.mm(a, b))
