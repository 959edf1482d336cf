"""Process-wide settings of a training run: torch threads and the glibc allocator (`configure_cpu`),
and the compute switches of the train config (`configure_runtime`)."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys
from dataclasses import dataclass
from typing import Any, Callable, Mapping

import torch

from mtl_final import kernels
from mtl_final.nn import cpu_matmul

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's upper bound on 64-bit


def keep_freed_memory() -> bool:
    """Stop glibc from returning freed activation buffers to the OS after every step.

    By default every tensor above 128 KiB gets fresh pages from mmap and gives them back on free,
    so each training step pays page faults to zero the same few MB again (~10% of a FINAL epoch on
    CPU). Raising the mmap and trim thresholds makes freed buffers reusable. No-op off glibc.
    Returns whether the setting took effect."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        ok = libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX) == 1
        return libc.mallopt(_M_TRIM_THRESHOLD, 1 << 30) == 1 and ok
    except (OSError, AttributeError):
        return False


def configure_cpu(num_threads: int) -> None:
    """torch threads (0 = keep torch's default) and the allocator setting above."""
    if num_threads:
        torch.set_num_threads(int(num_threads))
    keep_freed_memory()


@dataclass(frozen=True)
class RuntimeInfo:
    """What `configure_runtime` set for this process."""

    kernels: str  # train.kernels: "native" (fused C kernels where a layer allows) or "torch"
    cpu_matmul: str  # the backend of float32 CPU matmuls: "blas" (MKL) or "onednn"
    matmul_precision: str  # torch's float32 matmul precision


def _cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bfloat16 matmuls natively on this CPU (False when it cannot tell)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def configure_runtime(train_cfg: Mapping[str, Any], device: torch.device | str,
                      log: Callable[[str], None]) -> RuntimeInfo:
    """Set the process-wide switches of a train config section: train.kernels, train.cpu_matmul and
    train.matmul_precision; on a CPU `device`, log where train.precision=bf16 or
    train.matmul_precision=medium cannot help on this CPU. Call it before building a Trainer, which
    trains under whatever these switches are."""
    kernels.use_kernels(train_cfg["kernels"])
    backend = cpu_matmul.use_cpu_matmul(train_cfg["cpu_matmul"])
    torch.set_float32_matmul_precision(train_cfg["matmul_precision"])
    if torch.device(device).type == "cpu":
        if train_cfg["precision"] == "bf16" and not _cpu_has_native_bf16():
            log("warning: train.precision=bf16 on a CPU without native bfloat16 (AVX512-BF16 / AMX): "
                "it will be slower than fp32, not faster")
        if train_cfg["matmul_precision"] == "medium" and not cpu_matmul.medium_matmul_rounds():
            log("note: train.matmul_precision=medium does not round matmul inputs to bfloat16 on this CPU "
                "(it does with AMX): results keep float32 accuracy; any speed change comes from torch "
                "handing large matmuls to oneDNN instead of its default BLAS")
    return RuntimeInfo(train_cfg["kernels"], backend, train_cfg["matmul_precision"])
