"""benchmarks/epoch_speed.py: the machine probe and the steal share recorded beside each epoch."""
from __future__ import annotations

import pytest

from tests.support.scripts import load_script


@pytest.fixture()
def epoch_speed():
    return load_script("benchmarks/epoch_speed.py")


def test_cpu_ticks_reads_steal_and_the_first_eight_columns(epoch_speed, tmp_path):
    stat = tmp_path / "stat"
    # user nice system idle iowait irq softirq steal guest guest_nice: guest is inside user already
    stat.write_text("cpu  100 2 30 800 5 1 2 60 40 0\ncpu0 50 1 15 400 2 0 1 30 20 0\n")
    assert epoch_speed.cpu_ticks(stat) == (60, 1000)
    stat.write_text("intr 1 2 3\n")
    assert epoch_speed.cpu_ticks(stat) is None
    assert epoch_speed.cpu_ticks(tmp_path / "missing") is None


def test_cpu_name_gives_the_model_and_the_bfloat16_flags(epoch_speed, tmp_path):
    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Platinum 8481C\n"
                    "flags\t\t: fpu sse avx512f avx512_bf16 amx_tile amx_bf16\n\n")
    assert epoch_speed.cpu_name(info) == "Intel(R) Xeon(R) Platinum 8481C (amx_bf16, avx512_bf16, avx512f)"
    info.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2\n")
    assert epoch_speed.cpu_name(info) == "AMD EPYC (none of amx_bf16/avx512_bf16/avx512f)"
    assert epoch_speed.cpu_name(tmp_path / "missing") is None


def test_steal_share_is_steal_over_all_ticks_between_readings(epoch_speed):
    assert epoch_speed.steal_share((60, 1000), (110, 1400)) == 0.125  # 50 of 400 ticks
    assert epoch_speed.steal_share(None, (110, 1400)) is None
    assert epoch_speed.steal_share((60, 1000), (60, 1000)) is None  # no ticks passed


def test_probe_counts_two_flops_per_multiply_add(epoch_speed, monkeypatch):
    clock = iter([10.0, 12.0])  # 2 s for 5 matmuls of 2·4096·400·400 flops each
    monkeypatch.setattr(epoch_speed.time, "perf_counter", lambda: next(clock))
    assert epoch_speed.probe_gflops(reps=5) == round(5 * 2 * 4096 * 400 * 400 / 2 / 1e9, 1) == 3.3


def test_probe_multiplies_at_highest_precision_and_restores_the_setting(epoch_speed, monkeypatch):
    seen = []
    real_mm = epoch_speed.torch.mm
    monkeypatch.setattr(epoch_speed.torch, "mm",
                        lambda a, b: seen.append(epoch_speed.torch.get_float32_matmul_precision()) or real_mm(a, b))
    epoch_speed.torch.set_float32_matmul_precision("medium")  # conftest puts "highest" back afterwards
    epoch_speed.probe_gflops(reps=2)
    assert seen == ["highest"] * 3 and epoch_speed.torch.get_float32_matmul_precision() == "medium"
