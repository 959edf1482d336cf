"""The benchmark runner with the PyTorch-ops dropout drawing the fused kernel's dropout masks.

    python benchmarks/hash_mask_dropout.py --dataset frappe_x1 --models FINAL_1B --seeds 2021,2022 \
        --out DIR train.kernels=torch train.num_threads=1

The two code paths differ in two ways: float sums in another order, and the dropout masks (PyTorch
ops: 15-bit uniforms from PyTorch's generator, nn/dropout.py; fused kernels: a counter-based hash of
(key, element) with one key per layer call, kernels/cpu_kernels.c). This script keeps the PyTorch
ops and swaps in the kernel's masks (same key draws, same hash), so runs of it separate the two
effects: if they trained like the fused path, the masks would be what differs. Slow (the hash is
computed with tensor ops); a diagnostic, not a training path. Arguments: those of mtl_final.benchmark.
"""
from __future__ import annotations

import sys

import torch

import mtl_final.nn.dropout as dropout_module
from mtl_final.benchmark.__main__ import main

_M32 = 0xFFFFFFFF
_LEVELS = 1 << 24  # the kernel's threshold resolution (nn/dense_tail.py)


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The kernel's mix32 on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def kernel_keep_scale(p: float) -> float:
    return 1.0 / (1.0 - round(p * _LEVELS) / _LEVELS)


def kernel_keep_multiplier(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The fused kernel's dropout multiplier of one call: one int64 key from PyTorch's generator;
    element e (row-major) is kept when mix32(mix32(e + key_lo) ^ key_hi) >> 8 >= round(p·2^24)."""
    key = int(torch.empty((), dtype=torch.int64).random_())
    element = torch.arange(torch.Size(shape).numel(), dtype=torch.int64)
    u = _mix32(_mix32((element + (key & _M32)) & _M32) ^ ((key >> 32) & _M32)) >> 8
    kept = (u >= round(p * _LEVELS)).to(torch.promote_types(dtype, torch.float32))
    return kept.mul_(kernel_keep_scale(p)).view(shape).to(device)


def use_kernel_masks() -> None:
    """Make nn/dropout.py (ReLUDropout, Dropout) draw the kernel's masks."""
    dropout_module.keep_multiplier = kernel_keep_multiplier
    dropout_module.keep_scale = kernel_keep_scale


if __name__ == "__main__":
    use_kernel_masks()
    sys.exit(main(sys.argv[1:], entry="benchmarks/hash_mask_dropout.py"))
