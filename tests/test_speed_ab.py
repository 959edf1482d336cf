"""benchmarks/speed_ab.py: interleaved epoch timing of two revisions."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.scripts import REPO_ROOT, load_script


@pytest.fixture()
def speed_ab():
    return load_script("benchmarks/speed_ab.py")


def test_summary_is_the_paired_difference(speed_ab):
    # diffs 0.5 and 0.1: mean 0.3, sd 0.2828, t = 1.5 on 1 df, p = 1 - 2·atan(1.5)/π = 0.374
    out = speed_ab.summarise([4.0, 3.0], [4.5, 3.1])
    assert out == {"base_mean_s": 3.5, "head_mean_s": 3.8, "head_minus_base_mean_s": 0.3, "paired_t_p": 0.374}
    assert speed_ab.summarise([4.0], [4.2])["paired_t_p"] is None


def test_runs_alternate_base_then_head_and_the_worktree_is_removed(speed_ab, monkeypatch, tmp_path):
    if subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True).returncode:
        pytest.skip("not a git checkout")
    calls = []
    times = {False: iter([4.0, 4.0]), True: iter([3.0, 3.5])}  # keyed by "is this checkout"

    def fake_run(tree, config, threads, overrides):
        calls.append(tree)
        assert overrides == (["seed=1", "train.matmul_precision=medium"] if tree == REPO_ROOT else ["seed=1"])
        assert (tree / "benchmarks" / "epoch_speed.py").exists()  # a real tree of the revision
        seconds = next(times[tree == REPO_ROOT])
        return {"median_seconds_per_epoch": seconds, "git": "x", "train_samples_per_s_at_median": int(1000 / seconds),
                "peak_rss_mib": 500 if tree == REPO_ROOT else 400}

    monkeypatch.setattr(speed_ab, "one_epoch_run", fake_run)
    out = tmp_path / "ab.json"
    monkeypatch.setattr(sys, "argv", ["speed_ab.py", "--base", "HEAD", "--pairs", "2", "--config", "c.yaml",
                                      "--out", str(out), "--head-override", "train.matmul_precision=medium",
                                      "seed=1"])
    speed_ab.main()
    assert [tree == REPO_ROOT for tree in calls] == [False, True, False, True]
    assert not calls[0].exists()  # the temporary worktree is gone
    report = json.loads(out.read_text())
    assert report["base_s"] == [4.0, 4.0] and report["head_s"] == [3.0, 3.5]
    assert report["head_minus_base_mean_s"] == -0.75 and report["pairs"] == 2
    assert report["base_runs"] == [{"train_samples_per_s": 250, "peak_rss_mib": 400}] * 2
    assert report["head_runs"] == [{"train_samples_per_s": 333, "peak_rss_mib": 500},
                                   {"train_samples_per_s": 285, "peak_rss_mib": 500}]
    assert report["overrides"] == ["seed=1"] and report["head_overrides"] == ["train.matmul_precision=medium"]
    listed = subprocess.run(["git", "worktree", "list"], cwd=REPO_ROOT, capture_output=True, text=True).stdout
    assert str(calls[0]) not in listed
