"""Trainer protocol (lr decay on plateau, patience, best-weights reload) and end-to-end runs."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_final.config import load_config
from mtl_final.data.features import FeatureSpec
from mtl_final.models import build_model
from mtl_final.train.__main__ import main as train_main
from mtl_final.train.run import run_experiment
from mtl_final.train.trainer import Trainer
from tests.model_fixtures import make_cfg, tasks, tiny_features


def write_tiny_dataset(root: Path, n: int = 600, seed: int = 0) -> Path:
    """Three categorical fields and one numeric; the label depends on a pairwise interaction."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", n), ("valid", n // 3), ("test", n // 3)):
        a, b, c = rng.integers(0, 8, rows), rng.integers(0, 6, rows), rng.integers(0, 4, rows)
        x = rng.normal(size=rows).round(3)
        logit = 1.5 * ((a % 2) == (b % 2)) - 0.75 + 0.5 * x
        click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        conv = click * (rng.random(rows) < 0.4 + 0.2 * (c == 1)).astype(int)
        lines = ["a,b,c,x,click,conv"] + [f"{a[i]},{b[i]},{c[i]},{x[i]},{click[i]},{conv[i]}" for i in range(rows)]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "schema.yaml").write_text(
        "name: tiny\nfields:\n  - {name: a, type: categorical}\n  - {name: b, type: categorical}\n"
        "  - {name: c, type: categorical}\n  - {name: x, type: numeric, norm: standard}\n"
        "tasks:\n  - {name: ctr, label: click}\n  - {name: cvr, label: conv, on: ctr}\n")
    return root


def tiny_overrides(root: Path, tmp: Path) -> list[str]:
    return [f"data.schema={root / 'schema.yaml'}", f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
            "train.batch_size=128", "train.epochs=3", "train.progress=false", "block.hidden_units=[16]",
            "tower.hidden_units=[8]", "expert.hidden_units=[8]"]


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
    assert {"auc", "logloss"} <= set(metrics["test"]["ctr"])
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
    assert {"valid/ctr/auc", "valid/cvr/auc", "valid/ctcvr/auc", "lr", "train/loss"} <= tags
    assert any(tag.startswith("train/loss_kd") for tag in tags)


def test_cli_reports_bad_config_without_traceback(tmp_path, capsys):
    assert train_main(["train.lr_rate=0.1"]) == 2
    assert "did you mean 'train.lr'" in capsys.readouterr().err
    root = write_tiny_dataset(tmp_path / "data")
    assert train_main(["--tasks", "ctr,ctx", *tiny_overrides(root, tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "ctx" in err and "cvr" in err  # names the unknown task and lists declared ones
