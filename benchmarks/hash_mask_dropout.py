"""The benchmark runner with the PyTorch-ops dropout drawing the fused kernel's dropout masks.

    python benchmarks/hash_mask_dropout.py --dataset frappe_x1 --models FINAL_1B --seeds 2021,2022 \
        --out DIR train.kernels=torch train.num_threads=1

The two code paths differ in two ways: float sums in another order, and the dropout masks (PyTorch
ops: 15-bit uniforms from PyTorch's generator, nn/dropout.py; fused kernels: a counter-based hash of
(key, element) with one key per layer call, kernels/cpu_kernels.c). This script keeps the PyTorch
ops and swaps in the kernel's masks (same key draws, same hash), so runs of it separate the two
effects: if they trained like the fused path, the masks would be what differs. Slow (the hash is
computed with tensor ops); a diagnostic, not a training path. Arguments: those of mtl_final.benchmark,
plus `--masks NAME`, the hash (MASKS): `splitmix64` (the default; the kernel's since
40fca9d: SplitMix64's finaliser of key + (e + 1)·golden) or `mix32` (the kernel's up to 4e6081c:
mix32(mix32(e + key_lo) ^ key_hi), 32-bit element ids), which reproduces runs made with the old kernel.
"""
from __future__ import annotations

import sys

import torch

import mtl_final.nn.dropout as dropout_module
from mtl_final.benchmark.__main__ import main
from mtl_final.nn.dense_tail import _THRESHOLD_LEVELS as _LEVELS  # the kernel's threshold resolution

_M32 = 0xFFFFFFFF


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """The old kernel's mix32 on int64 tensors holding uint32 values."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def kernel_keep_scale(p: float) -> float:
    return 1.0 / (1.0 - round(p * _LEVELS) / _LEVELS)


def mix32_keep_multiplier(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The fused kernel's dropout multiplier of one call up to 4e6081c: one int64 key from PyTorch's
    generator; element e (row-major) is kept when mix32(mix32(e + key_lo) ^ key_hi) >> 8 >= round(p·2^24)."""
    key = int(torch.empty((), dtype=torch.int64).random_())
    element = torch.arange(torch.Size(shape).numel(), dtype=torch.int64)
    u = _mix32(_mix32((element + (key & _M32)) & _M32) ^ ((key >> 32) & _M32)) >> 8
    return _multiplier(u, shape, p, device, dtype)


def _multiplier(u: torch.Tensor, shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """keep_scale where the 24-bit uniforms u [numel] reach round(p·2^24), else 0, as `shape`."""
    kept = (u >= round(p * _LEVELS)).to(torch.promote_types(dtype, torch.float32))
    return kept.mul_(kernel_keep_scale(p)).view(shape).to(device)


def _as_int64(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


_GOLDEN, _SM1, _SM2 = (_as_int64(c) for c in (0x9E3779B97F4A7C15, 0xBF58476D1CE4E5B9, 0x94D049BB133111EB))


def _shr(x: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 tensors holding uint64 bit patterns (torch's >> is arithmetic)."""
    return (x >> k) & ((1 << (64 - k)) - 1)


def splitmix64_keep_multiplier(shape: torch.Size, p: float, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """The fused kernel's dropout multiplier of one call: one int64 key from PyTorch's generator;
    element e (row-major) is kept when the top 24 bits of SplitMix64's finaliser of
    key + (e + 1)·0x9E3779B97F4A7C15 are >= round(p·2^24)."""
    key = int(torch.empty((), dtype=torch.int64).random_())
    z = (torch.arange(1, torch.Size(shape).numel() + 1, dtype=torch.int64) * _GOLDEN) + key  # wraps mod 2^64
    z = (z ^ _shr(z, 30)) * _SM1
    z = (z ^ _shr(z, 27)) * _SM2
    z = z ^ _shr(z, 31)
    return _multiplier(_shr(z, 40), shape, p, device, dtype)


MASKS = {"splitmix64": splitmix64_keep_multiplier, "mix32": mix32_keep_multiplier}  # the first is the kernel's


def use_kernel_masks(masks: str = "splitmix64") -> None:
    """Make nn/dropout.py (ReLUDropout, Dropout) draw the kernel's masks (or those of another MASKS entry)."""
    dropout_module.keep_multiplier = MASKS[masks]
    dropout_module.keep_scale = kernel_keep_scale


if __name__ == "__main__":
    args = sys.argv[1:]
    masks = "splitmix64"
    if "--masks" in args:
        at = args.index("--masks")
        masks = args[at + 1] if at + 1 < len(args) else ""
        del args[at:at + 2]
        if masks not in MASKS:
            sys.exit(f"hash_mask_dropout.py: --masks {masks!r}: choose one of {', '.join(MASKS)}")
    use_kernel_masks(masks)
    sys.exit(main(args, entry=["benchmarks/hash_mask_dropout.py", "--masks", masks]))
