"""Process-level CPU settings for training: torch threads and the glibc allocator."""
from __future__ import annotations

import ctypes
import ctypes.util
import sys

import torch

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
