"""CrossRankBatchNorm1d (nn/cross_rank_batchnorm.py): conversion in place, and on 2 gloo ranks the
one-process BatchNorm of the whole batch (tests/support/ddp_batchnorm.py)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from mtl_final.nn.blocks import build_block
from mtl_final.nn.cross_rank_batchnorm import CrossRankBatchNorm1d, convert_batchnorm


def test_conversion_keeps_the_tensors_the_mode_and_the_state_dict_keys():
    block = build_block("final", 6, hidden_units=[8, 4], dropout=0.1)
    bns = [m for m in block.modules() if type(m) is nn.BatchNorm1d]
    tensors = [(bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked) for bn in bns]
    keys = list(block.state_dict())
    block.eval()
    assert convert_batchnorm(block) == 2 and convert_batchnorm(block) == 0
    converted = [m for m in block.modules() if isinstance(m, nn.BatchNorm1d)]
    assert all(type(m) is CrossRankBatchNorm1d and not m.training for m in converted)
    assert all(t is u for bn, old in zip(converted, tensors) for t, u in
               zip((bn.weight, bn.bias, bn.running_mean, bn.running_var, bn.num_batches_tracked), old))
    assert list(block.state_dict()) == keys


def test_converted_stack_leaves_the_fused_path_and_matches_plain_batchnorm_in_one_process():
    torch.manual_seed(0)
    plain = build_block("mlp", 6, hidden_units=[8, 4])
    synced = build_block("mlp", 6, hidden_units=[8, 4])
    synced.load_state_dict(plain.state_dict())
    assert plain.layers.fused_units is not None
    convert_batchnorm(synced)
    assert synced.layers.fused_units is None  # the fused kernel would normalise with the local rows
    x = torch.randn(16, 6)
    torch.testing.assert_close(synced(x), plain(x))  # no process group: it is nn.BatchNorm1d
    torch.testing.assert_close(synced.state_dict(), plain.state_dict())


@pytest.mark.skipif(not (torch.distributed.is_available() and torch.distributed.is_gloo_available()),
                    reason="this torch build has no torch.distributed gloo backend")
def test_two_ranks_normalise_with_the_whole_batch():
    script = Path(__file__).parent / "support" / "ddp_batchnorm.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    ok = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert len(ok) == 5, done.stdout
    assert "needs at least 2 rows over all ranks in training, got 1" in ok[-1]
