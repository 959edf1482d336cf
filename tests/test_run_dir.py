"""The run directory a training writes: one run per folder, one live run at a time (its lock file),
and the benchmark runner's cell folders, which it reruns in place."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from mtl_final.benchmark import runner
from mtl_final.benchmark.__main__ import main as benchmark_main
from mtl_final.train.__main__ import main as train_main
from mtl_final.train.run_dir import LOCK_NAME, RunDirError, claim_run_dir, clear_run_dir
from mtl_final.train.trainer import Trainer
from tests.support.tiny_benchmark import benchmark_argv as _argv
from tests.support.tiny_data import tiny_overrides, write_tiny_dataset
from tests.support.torchrun import gloo, torchrun


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory) -> tuple[Path, Path]:
    """(data root, tmp) of the tiny dataset, written once per module (its encoded cache too)."""
    tmp = tmp_path_factory.mktemp("run_dir")
    return write_tiny_dataset(tmp / "data", n=300), tmp


def _train(tiny_data: tuple[Path, Path], out: Path, *extra: str) -> int:
    root, tmp = tiny_data
    return train_main(["--out", str(out), "--tasks", "ctr", *tiny_overrides(root, tmp), "model=mlp",
                       "train.epochs=1", "train.tensorboard=false", "train.num_threads=1", *extra])


def _dead_pid() -> int:
    """The pid of a process that has ended (and been reaped)."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def test_out_holding_a_finished_run_is_refused_and_left_as_it_was(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_data, out) == 0
    before = _files(out)
    capsys.readouterr()
    assert _train(tiny_data, out, "train.lr=0.1") == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: run directory {out} already holds a run (")
    assert "config.yaml" in err and "metrics.json" in err and f"--resume {out}" in err and "--out" in err
    assert _files(out) == before and LOCK_NAME not in before


def test_a_run_that_fails_on_its_data_writes_no_run_directory(tiny_data, tmp_path):
    out = tmp_path / "run"
    assert _train(tiny_data, out, f"data.root={tmp_path / 'missing'}") == 2  # stops at the data
    assert not out.exists()
    assert _train(tiny_data, out) == 0  # the same --out, data fixed: nothing to refuse


def test_out_of_a_run_that_stopped_before_its_first_checkpoint_is_refused(tiny_data, tmp_path, capsys,
                                                                         monkeypatch):
    out = tmp_path / "run"

    def fail(self, train, valid):
        raise ValueError("stopped before the first validation")

    monkeypatch.setattr(Trainer, "fit", fail)
    assert _train(tiny_data, out) == 2
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml", "encoders.json", "schema.yaml"]
    monkeypatch.undo()
    capsys.readouterr()
    assert _train(tiny_data, out) == 2
    assert capsys.readouterr().err.strip() == (
        f"error: run directory {out} already holds a run (config.yaml, encoders.json, schema.yaml); choose "
        "another --out (a new or empty folder) or delete this one (its run stopped before its first checkpoint, "
        "last.pt, so it cannot be resumed)")


def test_out_in_use_by_a_live_run_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    with claim_run_dir(out, resume=False):  # a run of this process is writing it
        assert _train(tiny_data, out) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: run directory {out} is in use by the run of pid {os.getpid()} on "
                              f"{socket.gethostname()} (lock file {out / LOCK_NAME}")
        assert "choose another --out" in err
        assert sorted(p.name for p in out.iterdir()) == [LOCK_NAME]  # nothing written
    assert not out.exists() or not any(out.iterdir())  # released: the lock file is gone


def test_two_trainings_into_one_out_leave_one_run(tiny_data, tmp_path, monkeypatch, capsys):
    """The second training starts while the first is training: it is refused, the first ends whole."""
    out = tmp_path / "run"
    fit = Trainer.fit
    seen: list[int] = []

    def fit_while_another_starts(self, *args, **kwargs):
        seen.append(_train(tiny_data, out, "train.lr=0.1", "model.embedding_dim=4"))
        return fit(self, *args, **kwargs)

    monkeypatch.setattr(Trainer, "fit", fit_while_another_starts)
    assert _train(tiny_data, out) == 0
    assert seen == [2] and "is in use by the run of pid" in capsys.readouterr().err
    cfg = (out / "config.yaml").read_text()
    assert "embedding_dim: 4" not in cfg and "lr: 0.1" not in cfg
    assert {"config.yaml", "best.pt", "last.pt", "metrics.json", "encoders.json"} <= set(os.listdir(out))
    assert not (out / LOCK_NAME).exists()


def test_an_empty_folder_is_fine_and_a_stale_lock_is_taken_over(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    dead = _dead_pid()
    (out / LOCK_NAME).write_text(json.dumps({"pid": dead, "host": socket.gethostname()}))
    assert _train(tiny_data, out) == 0
    stdout = capsys.readouterr().out
    assert f"taking over the stale lock {out / LOCK_NAME} of pid {dead}" in stdout
    assert (out / "metrics.json").is_file() and not (out / LOCK_NAME).exists()


def test_lock_is_released_when_the_run_fails(tiny_data, tmp_path, monkeypatch):
    out = tmp_path / "run"

    def boom(self, *args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(Trainer, "fit", boom)
    with pytest.raises(RuntimeError, match="boom"):
        _train(tiny_data, out)
    assert (out / "config.yaml").is_file() and not (out / LOCK_NAME).exists()


def test_resume_takes_the_lock_too(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert _train(tiny_data, out) == 0
    with claim_run_dir(out, resume=True):
        assert train_main(["--resume", str(out)]) == 2
        assert f"run directory {out} is in use by the run of pid {os.getpid()}" in capsys.readouterr().err
    assert train_main(["--resume", str(out)]) == 0  # a finished run: its metrics recomputed
    assert not (out / LOCK_NAME).exists()


def test_a_lock_of_another_host_or_an_unreadable_lock_is_not_taken_over(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere"}))
    with pytest.raises(RunDirError, match=r"in use by the run of pid 1 on elsewhere .* if no run is using it, "
                                          r"delete the lock file"):
        claim_run_dir(out, resume=False)
    (out / LOCK_NAME).write_text("")
    with pytest.raises(RunDirError, match=r"lock file .* cannot be read .*delete the lock file"):
        claim_run_dir(out, resume=False)
    assert (out / LOCK_NAME).read_text() == ""


def test_claim_is_exclusive_and_release_only_drops_its_own_lock(tmp_path):
    out = tmp_path / "a" / "run"  # parents are made
    lock = claim_run_dir(out, resume=False)
    with pytest.raises(RunDirError, match="is in use"):
        claim_run_dir(out, resume=True)
    held = (out / LOCK_NAME).read_text()
    assert json.loads(held)["pid"] == os.getpid() and json.loads(held)["host"] == socket.gethostname()
    lock.release()
    lock.release()  # idempotent
    assert not (out / LOCK_NAME).exists()
    with claim_run_dir(out, resume=False) as again:
        (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": "elsewhere"}))
        again.release()  # not its lock any more: left in place
        assert (out / LOCK_NAME).exists()


def test_clear_run_dir_deletes_the_run_files_only(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    for name in ("config.yaml", "last.pt", "best.pt", "metrics.json", "encoders.json", "schema.yaml",
                 "events.out.tfevents.1.host.2.0", "notes.txt"):
        (out / name).write_text("x")
    (out / "export").mkdir()
    logs: list[str] = []
    clear_run_dir(out, log=logs.append)
    assert sorted(p.name for p in out.iterdir()) == ["export", "notes.txt"]
    assert logs == [f"replacing the earlier run in {out}"]
    clear_run_dir(out, log=logs.append)  # nothing to replace: nothing logged
    clear_run_dir(tmp_path / "none", log=logs.append)
    assert len(logs) == 1 and not (tmp_path / "none").exists()
    with claim_run_dir(out, resume=False):
        with pytest.raises(RunDirError, match="is in use"):
            clear_run_dir(out, log=logs.append)


@gloo
def test_under_torchrun_rank_0_alone_claims_the_run_dir(tiny_data, tmp_path):
    root, tmp = tiny_data
    out = tmp_path / "run"
    args = ["--out", str(out), "--tasks", "ctr", *tiny_overrides(root, tmp), "model=mlp", "train.epochs=1",
            "train.tensorboard=false", "train.num_threads=1"]
    first = torchrun(*args)
    assert first.returncode == 0, first.stderr[-3000:]  # rank 1 took no lock, so rank 0's did not stop it
    assert (out / "metrics.json").is_file() and not (out / LOCK_NAME).exists()
    again = torchrun(*args)
    assert again.returncode != 0
    assert f"error: run directory {out} already holds a run (" in again.stderr
    assert "error: rank 0 failed, so rank 1 stops: RunDirError: run directory" in again.stderr


def test_benchmark_cell_in_use_fails_and_is_rerun_in_place_later(tiny, capsys):  # noqa: F811
    argv = _argv(tiny, models="LR", seeds="1")
    cell = runner.run_dir_of(tiny["runs"], "tiny", "LR", 1)
    assert benchmark_main(argv) == 0
    (tiny["out"] / "tiny.csv").unlink()  # run the finished cell again
    with claim_run_dir(cell, resume=True):
        assert benchmark_main(argv) == 1
        assert f"FAILED tiny LR seed 1: RunDirError: run directory {cell} is in use" in capsys.readouterr().out
    assert (cell / "metrics.json").is_file()  # the refused rerun deleted nothing
    assert benchmark_main(argv) == 0
    assert f"replacing the earlier run in {cell}" in capsys.readouterr().out
    assert len(runner.read_rows(tiny["out"] / "tiny.csv")) == 1 and not (cell / LOCK_NAME).exists()
