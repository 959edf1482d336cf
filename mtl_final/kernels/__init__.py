"""Native CPU kernels, compiled on first use with the system C compiler and loaded with ctypes.

`library()` returns the loaded library, or None where kernels are switched off (`use_kernels("torch")`,
which train/runtime.py's `configure_runtime` calls with train.kernels) or could not be built (no
compiler: a warning says why, once, and every caller falls back to plain PyTorch ops).
The shared object is cached under $MTL_FINAL_CACHE (default ~/.cache/mtl_final)/kernels, keyed by a
hash of the source, the compiler and its flags, this CPU's feature flags (it is built with
-march=native) and the torch version.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shlex
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch

from mtl_final.config_spec import allowed
from mtl_final.cpuinfo import cpu_info

KERNEL_MODES = allowed("train.kernels")
_SOURCE = Path(__file__).with_name("cpu_kernels.c")
_FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=c11"]
if platform.machine().lower() in ("x86_64", "amd64"):
    # gcc vectorises with 256-bit registers on AVX-512 CPUs unless told otherwise; the dropout hash's
    # 64-bit multiplies run ~2x faster 512 bits wide. Per-column sums keep their row order, so the
    # results are bit-identical to the 256-bit build (tests/test_dense_tail.py checks one such pair).
    _FLAGS.append("-mprefer-vector-width=512")
_mode = "native"
_loaded: ctypes.CDLL | None = None
_failed: str | None = None

_P, _I64, _I, _D, _U32, _U64, _F = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_int, ctypes.c_double,
                                    ctypes.c_uint32, ctypes.c_uint64, ctypes.c_float)
_SIGNATURES = {
    "dense_tail_forward_train": (_I, [_P, _P, _P, _P, _I64, _I64, _I, _D, _U32, _F, _U64, _P, _P, _P, _P, _P, _I]),
    "dense_tail_forward_eval": (None, [_P, _P, _P, _P, _I64, _I64, _I, _P, _I]),
    "dense_tail_backward": (_I, [_P, _P, _P, _P, _P, _P, _P, _I64, _I64, _I, _F, _P, _P, _P, _P, _I]),
    "embedding_backward": (_I64, [_P, _P, _I64, _I64, _I64, _P, _P, _P, _I]),
    "field_attention_forward": (_I, [_P, _P, _P, _P, _I64, _I64, _I64, _I64, _F, _P, _P, _I]),
    "field_attention_backward": (_I, [_P, _P, _P, _P, _P, _P, _I64, _I64, _I64, _I64, _F, _P, _P, _P, _P, _I]),
}


def use_kernels(mode: str) -> None:
    """'native' (default): fused C kernels where a layer allows them; 'torch': PyTorch ops only."""
    global _mode
    if mode not in KERNEL_MODES:
        raise ValueError(f"kernels must be one of {list(KERNEL_MODES)}, got {mode!r}")
    _mode = mode


def _cache_dir() -> Path:
    root = os.environ.get("MTL_FINAL_CACHE") or Path.home() / ".cache" / "mtl_final"
    return Path(root) / "kernels"


def find_compiler() -> list[str]:
    """The C compiler command: $CC, else cc, else gcc on PATH; [] where there is none."""
    return shlex.split(os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc") or "")


def build(target: Path, compiler: list[str], flags: list[str]) -> None:
    """Compile the kernels' source into the shared object `target` (atomically)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(suffix=".so", dir=target.parent)
    os.close(fd)
    try:
        done = subprocess.run([*compiler, *flags, str(_SOURCE), "-o", tmp, "-lm"],
                              capture_output=True, text=True)
        if done.returncode:
            raise OSError(f"{' '.join(compiler)} failed: {done.stderr.strip()[-800:]}")
        os.replace(tmp, target)  # atomic: concurrent processes never load a half-written file
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def load(path: Path) -> ctypes.CDLL:
    """A built kernel library with its functions' signatures set. Its libgomp.so.1 resolves to the
    one torch already loaded."""
    lib = ctypes.CDLL(str(path))
    for name, (restype, argtypes) in _SIGNATURES.items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = restype, argtypes
    return lib


def library() -> ctypes.CDLL | None:
    """The fused-kernel library, or None (kernels off, or not buildable here)."""
    global _loaded, _failed
    if _mode != "native" or _failed:
        return None
    if _loaded is None:
        try:
            compiler = find_compiler()
            if not compiler:
                raise OSError("no C compiler found (set CC, or install gcc)")
            parts = [_SOURCE.read_text(), *compiler, *_FLAGS, cpu_info().get("flags", ""), torch.__version__]
            key = hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]
            target = _cache_dir() / f"cpu_kernels-{key}.so"
            if not target.exists():
                build(target, compiler, _FLAGS)
            _loaded = load(target)
        except OSError as err:
            _failed = str(err)
            warnings.warn(f"mtl_final: fused CPU kernels unavailable, using PyTorch ops ({err})", stacklevel=2)
            return None
    return _loaded


def ptr(t: torch.Tensor) -> int:
    """Address of a tensor's first element, for a kernel argument. The caller keeps `t` alive
    (and contiguous, of the kernel's dtype) for the call."""
    return t.data_ptr()


def can_run(x: torch.Tensor) -> bool:
    """Whether a kernel may take input `x` here and now: a CPU float32 tensor, no CPU autocast, not
    while torch.export traces (a ctypes call cannot be traced), and the library is loaded."""
    return (x.device.type == "cpu" and x.dtype == torch.float32 and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_exporting() and library() is not None)
