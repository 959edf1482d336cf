"""Data-parallel training (mtl_final/distributed.py): sharding, launch errors, and real 2-process
torchrun jobs (gloo) checked against one process and against an uninterrupted run."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mtl_final import distributed
from mtl_final.data.batches import BatchLoader
from mtl_final.data.features import Batch, BatchShare
from mtl_final.models import build_model
from mtl_final.data.store import TensorSplit
from mtl_final.train.__main__ import main as train_main
from tests.support.model_fixtures import make_cfg, tasks, tiny_batch, tiny_features
from tests.support.scripts import load_script
from tests.support.torchrun import ENTRY, gloo, torchrun
from tests.support.tiny_data import resume_overrides, tiny_overrides, write_tiny_dataset


def test_shard_bounds_split_rows_contiguously_with_the_remainder_first():
    assert [distributed.shard_bounds(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [distributed.shard_bounds(2, r, 3) for r in range(3)] == [(0, 1), (1, 2), (2, 2)]
    assert [distributed.shard_bounds(8, r, 2) for r in range(2)] == [(0, 4), (4, 8)]
    assert distributed.shard_bounds(7, 0, 1) == (0, 7)


def _split(n: int) -> TensorSplit:
    rows = torch.arange(n)
    return TensorSplit(rows[:, None].repeat(1, 2), rows[:, None].float(), {"ctr": (rows % 2).float()})


def test_sharded_loader_gives_each_rank_a_disjoint_share_of_the_same_global_batches():
    data = _split(23)
    whole = BatchLoader(data, 8, shuffle=True, seed=5)
    ranks = [BatchLoader(data, 8, shuffle=True, seed=5, shard=(r, 3)) for r in range(3)]
    for loader in (whole, *ranks):
        loader.set_epoch(2)
    assert len(whole) == len(ranks[0]) == 3 and ranks[0].dropped_rows == 0
    for step, batch in enumerate(whole):
        shares = [list(loader.batches())[step] for loader in ranks]
        assert torch.equal(torch.cat([s.cat for s in shares]), batch.cat)  # disjoint, in order, complete
        assert torch.equal(torch.cat([s.labels["ctr"] for s in shares]), batch.labels["ctr"])
        assert [len(s) for s in shares] == ([3, 3, 2] if step < 2 else [3, 2, 2])
    # a last batch of 5 rows has fewer than 2 per rank for 3 ranks: it is left out, and counted
    short = BatchLoader(_split(21), 8, shuffle=False, shard=(0, 3), min_share=2)
    assert len(short) == 2 and short.dropped_rows == 5
    assert len(BatchLoader(_split(21), 8, shuffle=False, min_share=2)) == 3  # one process keeps it
    # one process: only a last batch of 1 row is left out in training; evaluation keeps it
    train = BatchLoader(_split(17), 8, shuffle=True, min_share=2)
    assert (len(train), train.dropped_rows) == (2, 1)
    assert len(BatchLoader(_split(17), 8, shuffle=False)) == 3
    with pytest.raises(ValueError, match="batch_size=5 is too small for 3 processes.*at least 2 rows.*at least 6"):
        BatchLoader(data, 5, shuffle=False, shard=(1, 3), min_share=2)
    with pytest.raises(ValueError, match=r"batch_size=1 is too small: every process needs at least 2 rows"):
        BatchLoader(data, 1, shuffle=True, min_share=2)
    with pytest.raises(ValueError, match="0 <= rank < world"):
        BatchLoader(data, 8, shuffle=False, shard=(3, 3))


def test_shards_carry_the_global_batch_counts():
    data = _split(23)
    ranks = [BatchLoader(data, 8, shuffle=True, seed=5, shard=(r, 3)) for r in range(3)]
    whole = BatchLoader(data, 8, shuffle=True, seed=5)
    for loader in (whole, *ranks):
        loader.set_epoch(1)
    for step, batch in enumerate(whole):
        assert batch.share is None
        for loader in ranks:
            share = list(loader.batches())[step].share
            assert share == BatchShare(3, len(batch), {"ctr": int(batch.labels["ctr"].sum())})
    assert ranks[0].batches(start=2).__next__().share.rows == 7  # 23 = 8 + 8 + 7


def test_shard_means_average_to_the_global_batch_mean_by_hand():
    # global batch: values 1..5, parent label 1 0 1 1 0 -> mean 3, mean over parent rows (1+3+4)/3 = 8/3
    values, parent = torch.arange(1.0, 6.0), torch.tensor([1.0, 0, 1, 1, 0])
    whole = Batch(torch.zeros(5, 0), torch.zeros(5, 0), {"ctr": parent})
    assert whole.row_scale == 1.0 and whole.mean_where(values, "ctr").item() == pytest.approx(8 / 3)
    share = BatchShare(world_size=2, rows=5, positives={"ctr": 3})
    r0 = Batch(torch.zeros(3, 0), torch.zeros(3, 0), {"ctr": parent[:3]}, share)  # rows 1 2 3
    r1 = Batch(torch.zeros(2, 0), torch.zeros(2, 0), {"ctr": parent[3:]}, share)  # rows 4 5
    assert (r0.row_scale, r1.row_scale) == pytest.approx((1.2, 0.8))  # 3·2/5, 2·2/5
    assert (values[:3].mean().item() * r0.row_scale, values[3:].mean().item() * r1.row_scale) == pytest.approx((2.4, 3.6))
    assert (r0.mean_where(values[:3], "ctr").item(), r1.mean_where(values[3:], "ctr").item()) == pytest.approx(
        (8 / 3, 8 / 3))  # (1+3)·2/3 and 4·2/3: DDP's average is the global 8/3
    none = Batch(torch.zeros(2, 0), torch.zeros(2, 0), {"ctr": torch.zeros(2)})
    assert none.mean_where(torch.ones(2), "ctr").item() == 0.0


@pytest.mark.parametrize("overrides", [
    ("model=shared_bottom", "model.shared_units=[8]", "tower.dual=true", "tower.kd=true"),  # masked cvr + KD
    ("model=esmm", "tower.dual=true", "tower.kd=true"),  # entire-space product loss
    ("model=final", "block.kind=final", "model.num_blocks=2", "model.kd=true", "model.block2.hidden_units=[8]",
     "model.block2.dropout=0"),
])
def test_shard_losses_average_to_the_one_process_loss(overrides):
    cfg = make_cfg(*overrides, "tower.hidden_units=[8]", "tower.batch_norm=false", "tower.dropout=0",
                   "block.hidden_units=[8]", "block.batch_norm=false", "model.embedding_regularizer=0.1")
    names = ("ctr",) if "model=final" in overrides else ("ctr", "cvr")
    model = build_model(cfg, tiny_features(), tasks(*names)).train()
    torch.manual_seed(0)
    with torch.no_grad():  # away from the initial near-constant output, so rows' losses differ
        for param in model.parameters():
            param.normal_(0.0, 0.5)
    batch = tiny_batch(23, seed=3, tasks=names)
    whole, whole_parts = model.loss(model(batch), batch)
    share = BatchShare(3, 23, {t: int((y > 0.5).sum()) for t, y in batch.labels.items()})
    shards = []
    for r in range(3):
        lo, hi = distributed.shard_bounds(23, r, 3)  # 8, 8, 7 rows
        part = Batch(batch.cat[lo:hi], batch.num[lo:hi], {t: y[lo:hi] for t, y in batch.labels.items()}, share)
        shards.append(model.loss(model(part), part))
    assert sum(loss for loss, _ in shards).item() / 3 == pytest.approx(whole.item(), rel=1e-6)
    for name, value in whole_parts.items():  # every part, the kd terms and the regularisation included
        assert sum(parts[name] for _, parts in shards).item() / 3 == pytest.approx(value.item(), rel=1e-6), name
    assert len(whole_parts) >= 4 if len(names) == 2 else len(whole_parts) == 3


def test_launch_environment_errors_name_the_fix():
    cpu = torch.device("cpu")
    assert distributed.init_from_env("auto", cpu, env={}) is distributed.SINGLE
    assert distributed.init_from_env("auto", cpu, env={"WORLD_SIZE": "1"}) is distributed.SINGLE
    with pytest.raises(distributed.DistributedError, match="MASTER_ADDR, MASTER_PORT not set.*torchrun"):
        distributed.init_from_env("auto", cpu, env={"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0"})
    with pytest.raises(distributed.DistributedError, match="WORLD_SIZE='two' is not an integer"):
        distributed.init_from_env("auto", cpu, env={"WORLD_SIZE": "two"})
    full = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(distributed.DistributedError, match="nccl needs CUDA devices; use gloo"):
        distributed.init_from_env("nccl", cpu, env=full)
    assert distributed.rank_seed(2021, 1) != distributed.rank_seed(2021, 2)


def test_benchmark_refuses_to_run_under_torchrun(monkeypatch, capsys):
    from mtl_final.benchmark.__main__ import main as benchmark_main

    monkeypatch.setenv("WORLD_SIZE", "2")
    assert benchmark_main(["--dataset", "frappe_x1", "--models", "MLP", "--seeds", "2021"]) == 2
    assert "start it with python, not torchrun" in capsys.readouterr().err


def _load(path: Path) -> dict:
    return torch.load(path, weights_only=False)


@gloo
@pytest.mark.parametrize("batch_norm", ["tower.batch_norm=false", "distributed.sync_batchnorm=true"])
def test_two_processes_take_exactly_the_steps_of_one(tmp_path, batch_norm):
    # no dropout (per-rank draws), and BatchNorm either off or synced over ranks (per-rank statistics
    # would differ): the only difference left is the order of float sums. SGD, unlike Adam, would also
    # see gradients summed instead of averaged.
    # Batches of 65 rows give shards of 33 and 32 (the last batch of 15: 8 and 7), and cvr is averaged
    # over clicked rows only, which the two shards hold in different numbers: exact only if every
    # loss term divides by the global batch's count, the dual towers' self-distillation terms included.
    root = write_tiny_dataset(tmp_path / "data")
    args = [*tiny_overrides(root, tmp_path), "model=shared_bottom", "--tasks", "ctr,cvr",
            "model.shared_units=[16]", batch_norm, "tower.dropout=0", "tower.dual=true",
            "tower.kd=true", "train.optimizer=sgd", "train.lr=0.05", "model.embedding_regularizer=0.01",
            "train.batch_size=65", "train.patience=5", "train.tensorboard=false", "train.num_threads=1"]
    two = torchrun("--out", str(tmp_path / "two"), *args)
    assert two.returncode == 0, two.stderr[-3000:]
    assert train_main(["--out", str(tmp_path / "one"), *args]) == 0

    m1 = json.loads((tmp_path / "one" / "metrics.json").read_text())
    m2 = json.loads((tmp_path / "two" / "metrics.json").read_text())
    assert (m2["world_size"], m1["world_size"]) == (2, 1)
    assert m2["steps"] == m1["steps"] == 30 and m2["best_epoch"] == m1["best_epoch"]  # 600 rows / 65: 10 steps
    assert m2["valid"]["ctr"]["rows"] == 200  # every valid row was scored, half on each rank
    for split in ("valid", "test"):
        for task in ("ctr", "cvr"):
            assert m2[split][task]["logloss"] == pytest.approx(m1[split][task]["logloss"], abs=1e-6)
    w1, w2 = _load(tmp_path / "one" / "best.pt")["model"], _load(tmp_path / "two" / "best.pt")["model"]
    assert w1.keys() == w2.keys()
    for name in w1:
        torch.testing.assert_close(w2[name], w1[name], atol=1e-6, rtol=1e-5, msg=name)

    last1, last2 = _load(tmp_path / "one" / "last.pt"), _load(tmp_path / "two" / "last.pt")
    h1, h2 = last1["history"], last2["history"]
    assert [h["train_loss"] for h in h2] == pytest.approx([h["train_loss"] for h in h1], rel=1e-6)
    # each rank summed the losses of its own shards (so they differ) and their mean is one process's sum
    (sum0, n0), (sum1, n1) = (r["epoch_loss"] for r in last2["ranks"])
    assert n0 == n1 == last1["epoch_loss"][1] == 10
    assert abs(sum0 - sum1) > 1e-3
    assert (sum0 + sum1) / 2 == pytest.approx(last1["epoch_loss"][0], rel=1e-6)


@gloo
def test_two_process_run_resumes_exactly_after_a_crash(tmp_path, capsys):
    # FINAL 2B+KD with BatchNorm and dropout, validated every 3 of 5 steps per epoch (as the one-process
    # resume test): rank 1 crashes before step 11, one step after the checkpoint of step 9
    root = write_tiny_dataset(tmp_path / "data")
    args = resume_overrides(root, tmp_path) + ["train.num_threads=1"]
    whole = torchrun("--out", str(tmp_path / "whole"), *args)
    assert whole.returncode == 0, whole.stderr[-3000:]
    assert whole.stdout.count("epoch 1 step 3:") == 1  # rank 0 alone speaks
    files = {p.name for p in (tmp_path / "whole").iterdir()}
    assert {"config.yaml", "encoders.json", "best.pt", "last.pt", "metrics.json"} <= files
    assert not [name for name in files if name.startswith(".")]  # no temp files left by any rank

    cut = torchrun("--out", str(tmp_path / "cut"), *args, env={"MTL_CRASH_RANK": "1", "MTL_CRASH_STEP": "11"})
    assert cut.returncode != 0 and "injected crash on rank 1 before step 11" in cut.stderr
    assert not (tmp_path / "cut" / "metrics.json").exists()
    last = _load(tmp_path / "cut" / "last.pt")
    assert last["step"] == 9 and last["world_size"] == 2 and len(last["ranks"]) == 2
    assert not torch.equal(last["ranks"][0]["rng"], last["ranks"][1]["rng"])  # own dropout streams

    assert train_main(["--resume", str(tmp_path / "cut")]) == 2  # one process cannot continue it exactly
    assert "trained by 2 process(es) and this resume has 1" in capsys.readouterr().err
    resumed = torchrun("--resume", str(tmp_path / "cut"))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resumed" in resumed.stdout and "at step 9 (epoch 2" in resumed.stdout

    m_whole = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    m_cut = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    for key in ("valid", "test", "best_epoch", "epochs_run", "steps"):
        assert m_cut[key] == m_whole[key], key
    best_whole, best_cut = _load(tmp_path / "whole" / "best.pt"), _load(tmp_path / "cut" / "best.pt")
    for name, value in best_whole["model"].items():
        assert torch.equal(value, best_cut["model"][name]), name
    # the best weights may predate the crash; the last ones and every later evaluation do not
    last_whole, last_cut = _load(tmp_path / "whole" / "last.pt"), _load(tmp_path / "cut" / "last.pt")
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(last_cut["history"]) == strip(last_whole["history"]) and len(last_whole["history"]) == 6
    for name, value in last_whole["model"].items():
        assert torch.equal(value, last_cut["model"][name]), name


@gloo
def test_epoch_speed_measures_a_two_process_epoch(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    config = tmp_path / "run.yaml"
    config.write_text(f"model: {{name: mlp}}\ntasks: [ctr]\ndata: {{schema: {root / 'schema.yaml'}, root: {root}, "
                      f"cache_dir: {tmp_path / 'cache'}}}\nblock: {{hidden_units: [16]}}\ntrain: {{batch_size: 64}}\n")
    script = Path(__file__).parents[1] / "benchmarks" / "epoch_speed.py"
    done = subprocess.run([sys.executable, str(script), "--config", str(config), "--threads", "1", "--epochs", "1",
                           "--processes", "2"], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout)  # rank 0's report alone
    assert result["processes"] == 2 and result["train_rows"] == 600 and len(result["all_epochs_s"]) == 1
    assert result["peak_rss_mib"] < result["peak_rss_mib_all_ranks"] <= 2 * result["peak_rss_mib"]


@gloo
def test_every_model_family_trains_data_parallel_and_ranks_stay_identical(tmp_path):
    script = Path(__file__).parent / "support" / "ddp_families.py"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", str(script),
               str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    cases = load_script("benchmarks/export_coverage.py").cases()
    ok = [line for line in done.stdout.splitlines() if line.startswith("ok ")]
    assert len(ok) == len(cases) == 30 and all("steps 3 |" in line for line in ok), done.stdout


def test_data_parallel_report_rows_and_summary_by_hand():
    report = load_script("benchmarks/data_parallel.py")
    metrics = {"world_size": 2, "valid": {"ctr": {"auc": 0.98}}, "test": {"ctr": {"auc": 0.97, "logloss": 0.2}},
               "best_epoch": 7, "epochs_run": 9, "train_seconds": 12.5}
    first = report.row("configs/x/final_1b.yaml", 2021, metrics)
    assert first == {"config": "final_1b", "seed": 2021, "processes": 2, "valid_auc": 0.98, "test_auc": 0.97,
                     "test_logloss": 0.2, "best_epoch": 7, "epochs_run": 9, "train_seconds": 12.5}
    second = {**first, "seed": 2022, "valid_auc": 0.99, "test_auc": 0.98, "test_logloss": 0.3, "epochs_run": 5,
              "best_epoch": 3}
    table = report.summary_markdown([first, second], "python benchmarks/data_parallel.py ...", "abc1234")
    # means 98.5 / 97.5, sample std of (98, 99) = 0.7071; logloss 0.25 ± 0.07071
    assert "| final_1b | 2 | 2021, 2022 | 98.500 ± 0.707 | 97.500 ± 0.707 | 0.25000 ± 0.07071 | 9 (7), 5 (3) |" in table
    assert "Code: `abc1234`" in table
