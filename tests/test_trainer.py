"""Trainer protocol (lr decay on plateau and its floor, patience, best-weights reload, undefined monitors and
non-finite losses), end-to-end runs, resume, and the checkpoint and metrics.json files."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_final.config import load_config
from mtl_final.models import build_model
from mtl_final.models.base import RankingModel
from mtl_final.train.__main__ import main as train_main, parse_args
from mtl_final.train.checkpoint import atomic_file, save_atomic
from mtl_final.train.run import resume_run, run_experiment
from mtl_final.train.trainer import NonFiniteLoss, Trainer, UndefinedMonitor
from tests.support.model_fixtures import make_cfg, tasks, tiny_features
from tests.support.scripts import load_script
from tests.support.tiny_data import resume_overrides, tiny_overrides, write_tiny_dataset


class ScriptedTrainer(Trainer):
    """Trainer whose valid AUC follows a script, to test the schedule in isolation."""

    def __init__(self, *args, script, **kwargs):
        super().__init__(*args, **kwargs)
        self.script = list(script)

    def evaluate(self, data):
        return {"ctr": {"auc": self.script.pop(0), "logloss": 0.5, "rows": 1}}


def test_plateau_schedule_decays_lr_and_stops_after_patience():
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]", "train.patience=2", "train.min_lr=2e-6")
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    trainer = ScriptedTrainer(model, cfg, log=lambda s: None, script=[0.6, 0.7, 0.69, 0.72, 0.71, 0.70])
    lrs, stops = [], []
    for epoch in range(1, 7):
        stops.append(trainer._evaluate_and_schedule(None, epoch, 0.0, 0.0))
        lrs.append(trainer.optimizer.param_groups[0]["lr"])
    # improve, improve, miss (lr/10), improve (counter resets), miss (lr/10), miss -> stop
    assert lrs == pytest.approx([1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 2e-6])  # floor at min_lr
    assert stops == [False, False, False, False, False, True]
    assert trainer.best_epoch == 4 and trainer.best_value == pytest.approx(0.72)


@pytest.mark.parametrize("min_delta, best_epoch, lrs, stops", [
    # FuxiCTR's 1e-6: gains of 2e-7 are misses -> lr/10, then the second miss stops
    (1e-6, 1, [1e-3, 1e-4, 1e-5], [False, False, True]),
    (0.0, 4, [1e-3, 1e-3, 1e-3, 1e-3], [False, False, False, False]),  # every strict gain counts
])
def test_gains_up_to_min_delta_are_misses(min_delta, best_epoch, lrs, stops):
    cfg = make_cfg("model=mlp", "block.hidden_units=[4]", "train.patience=2", f"train.min_delta={min_delta}")
    model = build_model(cfg, tiny_features(), tasks("ctr"))
    trainer = ScriptedTrainer(model, cfg, log=lambda s: None, script=[0.8, 0.8000002, 0.8000004, 0.8000006])
    seen_lrs, seen_stops = [], []
    for epoch in range(1, len(lrs) + 1):
        seen_stops.append(trainer._evaluate_and_schedule(None, epoch, 0.0, 0.0))
        seen_lrs.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen_lrs == pytest.approx(lrs, rel=1e-9) and seen_stops == stops
    assert trainer.best_epoch == best_epoch


def test_a_last_batch_of_one_row_is_left_out_and_reported(tmp_path, capsys):
    root = write_tiny_dataset(tmp_path / "data")
    n_train = sum(1 for _ in open(root / "train.csv")) - 1
    out = tmp_path / "run"
    # batches of n - 1 rows: one full batch and a last one of 1 row, which BatchNorm cannot normalise
    assert train_main(["--out", str(out), *tiny_overrides(root, tmp_path), "model=mlp", "tasks=[ctr]",
                       f"train.batch_size={n_train - 1}", "train.epochs=2", "train.tensorboard=false"]) == 0
    assert "the last 1 train row(s) of every epoch's order are left out" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["steps"] == 2


@pytest.mark.parametrize("where", ["--out", "data.cache_dir"])
def test_a_run_or_cache_directory_that_is_a_file_is_one_clear_error(tmp_path, capsys, where):
    root = write_tiny_dataset(tmp_path / "data")
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    args = [*tiny_overrides(root, tmp_path), "model=mlp", "tasks=[ctr]", "train.tensorboard=false"]
    args = ["--out", str(blocker), *args] if where == "--out" else [
        "--out", str(tmp_path / "run"), *args, f"data.cache_dir={blocker}"]
    assert train_main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: File exists: ") and str(blocker) in err and "Traceback" not in err


def test_fit_reloads_best_weights(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(root, tmp_path) + ["model=mlp", "tasks=[ctr]", "train.epochs=4",
                                                                 "train.tensorboard=false"])
    from mtl_final.data.schema import DatasetSchema
    from mtl_final.data.store import EncodedStore

    schema = DatasetSchema.from_yaml(root / "schema.yaml").select_tasks(["ctr"])
    store = EncodedStore.build_or_load(schema, root, tmp_path / "cache", log=lambda s: None)
    train, valid = (store.split(s).to_tensors({"ctr": "click"}) for s in ("train", "valid"))
    model = build_model(cfg, store.feature_spec, list(schema.tasks))
    trainer = Trainer(model, cfg, run_dir=tmp_path / "run", log=lambda s: None)
    trainer.fit(train, valid)
    best = torch.load(tmp_path / "run" / "best.pt", weights_only=False)
    for name, value in model.state_dict().items():
        assert torch.equal(value, best["model"][name]), name
    assert trainer.evaluate(valid)["ctr"]["auc"] == pytest.approx(max(h["monitor"] for h in trainer.history))


def test_single_task_cli_run_writes_documented_files_and_reproduces(tmp_path):
    root = write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "run1"
    assert train_main(["--out", str(out), *tiny_overrides(root, tmp_path), "model=final", "block.kind=final",
                       "tasks=[ctr]", "model.num_blocks=2", "model.kd=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"ctr"} and set(metrics["valid"]) == {"ctr"}
    assert {"auc", "logloss", "pcoc", "ece"} <= set(metrics["test"]["ctr"])
    assert 1 <= metrics["best_epoch"] <= metrics["epochs_run"] <= 3 and metrics["train_seconds"] > 0
    for name in ("config.yaml", "encoders.json", "best.pt", "last.pt"):
        assert (out / name).is_file(), name
    assert list(out.glob("events.out.tfevents.*"))
    # re-running the resolved config reproduces the run exactly
    out2 = tmp_path / "run2"
    assert train_main(["--config", str(out / "config.yaml"), "--out", str(out2)]) == 0
    again = json.loads((out2 / "metrics.json").read_text())
    assert again["test"] == metrics["test"] and again["valid"] == metrics["valid"]


def test_multitask_cli_run_has_per_task_entries_and_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    root = write_tiny_dataset(tmp_path / "data")
    out = tmp_path / "mtl"
    assert train_main(["--out", str(out), "--tasks", "ctr,cvr", *tiny_overrides(root, tmp_path), "model=esmm",
                       "tower=final", "tower.dual=true"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["test"]) == {"ctr", "cvr", "ctcvr"}
    clicked = int(np.loadtxt(root / "test.csv", delimiter=",", skiprows=1)[:, 4].sum())
    assert metrics["test"]["cvr"]["rows"] == clicked and metrics["test"]["ctcvr"]["rows"] == 200
    events = EventAccumulator(str(out)).Reload()
    tags = set(events.Tags()["scalars"])
    assert {"valid/ctr/auc", "valid/cvr/auc", "valid/ctcvr/auc", "lr", "train/loss",
            "valid/ctr/pcoc", "valid/cvr/ece", "valid/ctcvr/pcoc"} <= tags
    assert any(tag.startswith("train/loss_kd") for tag in tags)


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    assert train_main(["train.lr_rate=0.1"]) == 2
    assert "did you mean 'train.lr'" in capsys.readouterr().err
    root = write_tiny_dataset(tmp_path / "data")
    assert train_main(["--tasks", "ctr,ctx", *tiny_overrides(root, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ctx" in err and "cvr" in err  # names the unknown task and lists declared ones


def test_cli_options_may_come_between_overrides():
    args = parse_args(["model=esmm", "--tasks", "ctr,cvr", "train.lr=0.01", "--out", "R", "tower=final"])
    assert (args.tasks, args.out) == ("ctr,cvr", "R")
    assert args.overrides == ["model=esmm", "train.lr=0.01", "tower=final"]


class Crash(Exception):
    pass


def _scalars(run_dir: Path, tag: str) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    return [(e.step, e.value) for e in EventAccumulator(str(run_dir)).Reload().Scalars(tag)]


def test_resumed_run_ends_exactly_like_an_uninterrupted_one(tmp_path, monkeypatch):
    from mtl_final.train.run import resume_run

    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, resume_overrides(root, tmp_path))
    whole = run_experiment(cfg, tmp_path / "whole", log=lambda s: None)
    assert whole["steps"] == 20 and whole["epochs_run"] == 4  # 600 rows / 128 = 5 steps per epoch

    step = Trainer.train_step

    def crash_at_step_11(self, batch, params):
        if self.global_step == 10:  # mid-epoch 3, one step after the checkpoint of step 9
            raise Crash
        return step(self, batch, params)

    monkeypatch.setattr(Trainer, "train_step", crash_at_step_11)
    with pytest.raises(Crash):
        run_experiment(cfg, tmp_path / "cut", log=lambda s: None)
    assert torch.load(tmp_path / "cut" / "last.pt", weights_only=False)["step"] == 9
    monkeypatch.setattr(Trainer, "train_step", step)
    logs: list[str] = []
    resumed = resume_run(tmp_path / "cut", log=logs.append)

    assert any("resumed" in line and "at step 9 (epoch 2" in line for line in logs), logs
    for key in ("valid", "test", "best_epoch", "epochs_run", "steps"):
        assert resumed[key] == whole[key], key
    best_whole = torch.load(tmp_path / "whole" / "best.pt", weights_only=False)
    best_cut = torch.load(tmp_path / "cut" / "best.pt", weights_only=False)
    assert best_whole["step"] == best_cut["step"]
    for name, value in best_whole["model"].items():
        assert torch.equal(value, best_cut["model"][name]), name
    last_whole = torch.load(tmp_path / "whole" / "last.pt", weights_only=False)
    last_cut = torch.load(tmp_path / "cut" / "last.pt", weights_only=False)
    strip = lambda history: [{k: v for k, v in h.items() if k != "seconds"} for h in history]  # noqa: E731
    assert strip(last_cut["history"]) == strip(last_whole["history"]) and len(last_whole["history"]) == 6
    # TensorBoard shows one curve: the scalars logged after the checkpoint and then redone are hidden
    assert _scalars(tmp_path / "cut", "valid/ctr/auc") == _scalars(tmp_path / "whole", "valid/ctr/auc")
    assert [s for s, _ in _scalars(tmp_path / "cut", "train/loss")] == [10, 20]

    # resuming a finished run trains nothing and reports the same metrics
    again = resume_run(tmp_path / "cut", log=lambda s: None)
    assert again["valid"] == whole["valid"] and again["steps"] == 20


def test_resume_refuses_what_it_cannot_continue(tmp_path, capsys):
    from mtl_final.train.run import can_resume, resume_run

    with pytest.raises(FileNotFoundError, match="no config.yaml"):
        resume_run(tmp_path / "nothing")
    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, resume_overrides(root, tmp_path) + ["train.epochs=1"])
    run_experiment(cfg, tmp_path / "run", log=lambda s: None)
    assert train_main(["--resume", str(tmp_path / "run"), "train.lr=0.1"]) == 2
    assert "takes no --config, --out, --tasks or key=value overrides" in capsys.readouterr().err
    assert not can_resume(tmp_path / "run", cfg)  # finished: a benchmark rerun trains it again
    (tmp_path / "run" / "metrics.json").unlink()
    assert can_resume(tmp_path / "run", cfg) and not can_resume(tmp_path / "run", {**cfg, "seed": 7})
    # a last.pt of the previous format (no resume state) is refused, not half-restored
    last = torch.load(tmp_path / "run" / "last.pt", weights_only=False)
    torch.save({k: v for k, v in last.items() if k not in ("format", "rng", "history")}, tmp_path / "run" / "last.pt")
    assert not can_resume(tmp_path / "run", cfg)
    with pytest.raises(ValueError, match=r"last.pt \(format None\) was written by another version"):
        resume_run(tmp_path / "run", log=lambda s: None)
    torch.save(last, tmp_path / "run" / "last.pt")
    # the train data changed since the run started: its encoders no longer match
    lines = (root / "train.csv").read_text().splitlines()
    (root / "train.csv").write_text("\n".join(lines + ["9,0,0,0.5,1,0"]) + "\n")
    with pytest.raises(ValueError, match=r"encoders fitted on today's train data differ from .*encoders.json"):
        resume_run(tmp_path / "run", log=lambda s: None)
    (tmp_path / "run" / "last.pt").unlink()
    assert train_main(["--resume", str(tmp_path / "run")]) == 2
    assert "no last.pt" in capsys.readouterr().err


def test_lr_schedule_report_reads_the_first_miss_from_tensorboard(tmp_path):
    report = load_script("benchmarks/lr_schedule_report.py")
    root = write_tiny_dataset(tmp_path / "data")
    cfg = load_config(None, tiny_overrides(root, tmp_path) + ["model=mlp", "tasks=[ctr]", "train.epochs=10",
                                                                 "train.patience=3", "train.lr=0.03"])
    metrics = run_experiment(cfg, tmp_path / "run", log=lambda s: None)
    history = torch.load(tmp_path / "run" / "last.pt", weights_only=False)["history"]
    misses = [h["epoch"] for h in history if h["lr"] < history[0]["lr"]]
    assert misses, "the tiny run must plateau at least once for this test to mean anything"
    got = report.schedule(tmp_path / "run")
    assert got["first_miss_epoch"] == misses[0] - 1  # the epoch whose validation missed
    assert got["valid_before"] == pytest.approx(max(h["monitor"] for h in history[: misses[0] - 1]))
    assert got["valid_best"] == pytest.approx(max(h["monitor"] for h in history))
    assert got["test_auc"] == metrics["test"]["ctr"]["auc"]


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
