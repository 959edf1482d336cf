"""Starting torchrun jobs from tests: the gloo skip mark and a 2-process launcher of tests/support/ddp_entry.py."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ENTRY = Path(__file__).parent / "ddp_entry.py"
gloo = pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                          reason="this torch build has no torch.distributed gloo backend")


def torchrun(*args: str, env: dict[str, str] | None = None, processes: int = 2) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc-per-node N tests/support/ddp_entry.py ARGS`, output captured."""
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
               str(ENTRY), *args]
    return subprocess.run(command, env=full_env, capture_output=True, text=True, timeout=300)
