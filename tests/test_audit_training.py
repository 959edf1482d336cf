"""Audit of training: undefined metrics, non-finite losses, the lr floor, patience 0, epochs_run of a
resumed finished run, and the checkpoint / metrics.json files."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import pytest
import torch

from mtl_final.config import load_config
from mtl_final.models import build_model
from mtl_final.models.base import RankingModel
from mtl_final.train.__main__ import main as train_main
from mtl_final.train.checkpoint import atomic_file, save_atomic
from mtl_final.train.run import resume_run, run_experiment
from mtl_final.train.trainer import NonFiniteLoss, UndefinedMonitor
from tests.support.model_fixtures import make_cfg, tasks, tiny_features
from tests.support.tiny_data import tiny_overrides, write_tiny_dataset
from tests.test_trainer import ScriptedTrainer


def _no_conversions(csv: Path) -> None:
    """Set the last column (conv) of every row of csv to 0: cvr then holds one class."""
    lines = csv.read_text().splitlines()
    csv.write_text("\n".join([lines[0]] + [line.rsplit(",", 1)[0] + ",0" for line in lines[1:]]) + "\n")


def _esmm_overrides(root: Path, tmp: Path) -> list[str]:
    return tiny_overrides(root, tmp) + ["tasks=[ctr,cvr]", "model=esmm", "train.epochs=1",
                                        "train.tensorboard=false", "train.num_threads=1"]


def test_undefined_test_metrics_are_null_in_metrics_json(tmp_path):
    root = write_tiny_dataset(tmp_path / "data", n=300)
    _no_conversions(root / "test.csv")  # test cvr (clicked rows) and ctcvr have one class: AUC undefined
    cfg = load_config(None, _esmm_overrides(root, tmp_path))
    metrics = run_experiment(cfg, tmp_path / "run", log=lambda s: None)
    assert math.isnan(metrics["test"]["cvr"]["auc"]) and math.isnan(metrics["test"]["ctcvr"]["auc"])
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["test"]["cvr"]["auc"] is None and written["test"]["ctcvr"]["auc"] is None
    assert written["test"]["cvr"]["logloss"] == pytest.approx(metrics["test"]["cvr"]["logloss"])
    assert written["test"]["ctr"]["auc"] == metrics["test"]["ctr"]["auc"]
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt", "config.yaml", "encoders.json", "last.pt", "metrics.json", "schema.yaml"]  # no temporary file


def test_an_undefined_valid_monitor_is_one_clear_error(tmp_path, capsys):
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]")
    trainer = ScriptedTrainer(build_model(cfg, tiny_features(), tasks("ctr")), cfg, log=lambda s: None,
                              script=[math.nan])
    with pytest.raises(UndefinedMonitor, match=r"train.monitor is nan on valid at epoch 1 step 0: \['ctr.auc'\]"):
        trainer._evaluate_and_schedule(None, 1, 0.5, 0.0)
    assert trainer.history == [] and trainer.optimizer.param_groups[0]["lr"] == 1e-3  # no silent miss

    root = write_tiny_dataset(tmp_path / "data", n=300)
    _no_conversions(root / "valid.csv")
    assert train_main(["--out", str(tmp_path / "run"), *_esmm_overrides(root, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: train.monitor is nan on valid at epoch 1 step 3: ['cvr.auc'] undefined")
    assert not (tmp_path / "run" / "metrics.json").exists()


def test_a_non_finite_loss_stops_training_with_a_clear_error(tmp_path, capsys, monkeypatch):
    root = write_tiny_dataset(tmp_path / "data", n=300)
    loss, calls = RankingModel.loss, []

    def nan_at_step_2(self, out, batch):
        total, parts = loss(self, out, batch)
        calls.append(1)
        return (total * math.nan if len(calls) == 2 else total), parts

    monkeypatch.setattr(RankingModel, "loss", nan_at_step_2)
    args = ["--out", str(tmp_path / "run"), *tiny_overrides(root, tmp_path), "model=mlp", "tasks=[ctr]",
            "train.batch_size=32", "train.tensorboard=false", "train.num_threads=1"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the train loss is nan at epoch 1 step 10: a step since the start had a "
                          "non-finite loss")
    assert "Input contains NaN" not in err and not (tmp_path / "run" / "last.pt").exists()
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]")
    trainer = ScriptedTrainer(build_model(cfg, tiny_features(), tasks("ctr")), cfg, log=lambda s: None,
                              script=[0.7])
    with pytest.raises(NonFiniteLoss, match="the train loss is inf"):
        trainer._evaluate_and_schedule(None, 1, math.inf, 0.0)


def test_the_lr_decay_floors_at_min_lr_but_never_raises_the_lr():
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]", "train.lr=1e-7", "train.min_lr=1e-6", "train.patience=5")
    trainer = ScriptedTrainer(build_model(cfg, tiny_features(), tasks("ctr")), cfg, log=lambda s: None,
                              script=[0.7, 0.6])
    trainer._evaluate_and_schedule(None, 1, 0.5, 0.0)
    trainer._evaluate_and_schedule(None, 2, 0.5, 0.0)  # a miss
    assert trainer.optimizer.param_groups[0]["lr"] == 1e-7  # was raised to min_lr = 1e-6


def test_patience_zero_stops_after_the_first_evaluation(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")  # 600 train rows / 128 = 5 steps per epoch
    cfg = load_config(None, tiny_overrides(root, tmp_path) + ["model=mlp", "tasks=[ctr]", "train.patience=0",
                                                                 "train.tensorboard=false"])
    metrics = run_experiment(cfg, tmp_path / "run", log=lambda s: None)
    # (it used to train nothing and score the initial weights, with no best.pt)
    assert (metrics["steps"], metrics["epochs_run"], metrics["best_epoch"]) == (5, 1, 1)
    assert (tmp_path / "run" / "best.pt").is_file()


def test_resuming_a_run_that_stopped_mid_epoch_keeps_epochs_run(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(root, tmp_path) + ["model=mlp", "tasks=[ctr]", "train.epochs=4",
                                                                 "train.max_steps=12", "train.tensorboard=false"])
    whole = run_experiment(cfg, tmp_path / "run", log=lambda s: None)
    assert (whole["steps"], whole["epochs_run"]) == (12, 3)  # stopped 2 steps into epoch 3
    again = resume_run(tmp_path / "run", log=lambda s: None)  # a finished run: metrics recomputed
    assert (again["steps"], again["epochs_run"], again["best_epoch"]) == (12, 3, whole["best_epoch"])
    assert again["test"] == whole["test"]


def test_checkpoints_are_atomic_with_plain_file_permissions(tmp_path, monkeypatch):
    mask = os.umask(0o022)
    os.umask(mask)
    save_atomic({"a": 1}, tmp_path / "x.pt")
    assert (tmp_path / "x.pt").stat().st_mode & 0o777 == 0o666 & ~mask  # mkstemp alone gives 0600

    def half_then_fail(obj, f):
        f.write(b"half")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(KeyboardInterrupt):
        save_atomic({"a": 2}, tmp_path / "x.pt")
    monkeypatch.undo()
    assert torch.load(tmp_path / "x.pt", weights_only=False) == {"a": 1}
    with pytest.raises(OSError), atomic_file(tmp_path / "m.json") as f:
        f.write(b"{")
        raise OSError("disk full")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.pt"]  # temporary files removed
