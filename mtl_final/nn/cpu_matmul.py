"""Which library multiplies float32 matrices on CPU while a model trains or scores: BLAS or oneDNN.

torch's CPU build multiplies float32 matrices with MKL, which on AMD CPUs runs well below what
oneDNN's kernels reach on the same cores (README: `train.cpu_matmul`, the `_epyc` speed rows). torch
hands a float32 matmul (mm, addmm/linear, bmm, matmul, einsum) to oneDNN only under float32 matmul
precision "medium", and there oneDNN may multiply bfloat16-rounded inputs: it does with AMX, not
without (`medium_matmul_rounds` checks this machine). So where medium does not round, `scope` takes
oneDNN by switching to medium while a forward/backward pass or a scoring loop runs: still IEEE
float32 products and sums, in oneDNN's order.

train.cpu_matmul: auto = oneDNN on AMD CPUs where medium does not round, else BLAS | blas | onednn.
Process-wide, like train.kernels; the choice depends only on the machine, so a resumed run on the same
machine takes the same path.
"""
from __future__ import annotations

from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Iterator

import torch

from mtl_final.config_spec import allowed
from mtl_final.cpuinfo import cpu_info

CHOICES = allowed("train.cpu_matmul")
_backend: str | None = None  # resolved from "auto" on first use, unless use_cpu_matmul chose


@cache
def medium_matmul_rounds() -> bool:
    """Whether float32 matmul precision "medium" multiplies bfloat16-rounded inputs on this CPU: a small
    and a FINAL-sized mm and an attention-sized bmm, each compared with the exact and the bfloat16-input
    product (rounded where either is nearer the latter). The setting is restored."""
    gen = torch.Generator().manual_seed(0)
    before = torch.get_float32_matmul_precision()
    try:
        shapes = (((256, 64), (64, 128)), ((1024, 400), (400, 400)), ((512, 10, 16), (512, 16, 10)))
        for a_shape, b_shape in shapes:
            a, b = torch.randn(a_shape, generator=gen), torch.randn(b_shape, generator=gen)
            torch.set_float32_matmul_precision("highest")
            exact, rounded = a @ b, a.bfloat16().float() @ b.bfloat16().float()
            torch.set_float32_matmul_precision("medium")
            medium = a @ b
            if (medium - rounded).abs().max() < (medium - exact).abs().max():
                return True
    finally:
        torch.set_float32_matmul_precision(before)
    return False


def cpu_vendor(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's vendor_id ("AuthenticAMD", "GenuineIntel", ...), or None where it cannot be read."""
    return cpu_info(cpuinfo).get("vendor_id")


def resolve(choice: str, strict: bool = True) -> str:
    """"blas" or "onednn" for a train.cpu_matmul choice on this machine. Where oneDNN would round to
    bfloat16, "onednn" raises ValueError (strict) or falls back to "blas"."""
    if choice not in CHOICES:
        raise ValueError(f"train.cpu_matmul={choice!r}: choose one of {', '.join(CHOICES)}")
    if choice == "blas":
        return "blas"
    if medium_matmul_rounds():
        if choice == "onednn" and strict:
            raise ValueError("train.cpu_matmul=onednn: on this CPU (as on AMX ones) torch's oneDNN float32 "
                             "matmuls round inputs to bfloat16; for that use train.matmul_precision=medium, "
                             "else keep train.cpu_matmul=auto or blas")
        return "blas"
    return "onednn" if choice == "onednn" or cpu_vendor() == "AuthenticAMD" else "blas"


def use_cpu_matmul(choice: str, strict: bool = True) -> str:
    """Select the backend `scope` takes for this process; returns the one chosen ("blas" or "onednn")."""
    global _backend
    _backend = resolve(choice, strict)
    return _backend


def backend() -> str:
    """The backend `scope` takes: the selected one, or "auto"'s choice for this machine."""
    return _backend if _backend is not None else use_cpu_matmul("auto")


@contextmanager
def scope(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block's CPU float32 matmuls on the selected backend: for oneDNN, float32 matmul precision
    "medium" while the block runs (the previous setting is restored). Nothing changes on other devices,
    where medium means TF32/bfloat16, or where the precision already is medium."""
    precision = torch.get_float32_matmul_precision()
    if torch.device(device).type != "cpu" or precision == "medium" or backend() == "blas":
        yield
        return
    torch.set_float32_matmul_precision("medium")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(precision)
