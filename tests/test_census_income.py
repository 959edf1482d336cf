"""The census-income benchmark: its schema on the real files, its grid configs, and a grid of two
independent tasks (no funnel) through the runner's CSV and report."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from mtl_final.benchmark import report, runner
from mtl_final.benchmark.__main__ import main
from mtl_final.config import load_config
from mtl_final.data.schema import DatasetSchema
from mtl_final.data.store import EncodedStore
from mtl_final.data.features import Batch
from mtl_final.models import build_model
from mtl_final.models.registry import MODELS
from tests.support.model_fixtures import Task, tiny_features

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA = REPO_ROOT / "configs" / "datasets" / "census_income.yaml"
MTL = REPO_ROOT / "configs" / "mtl"
GRID = [MTL / f"census_{m}.yaml" for m in ("shared_bottom", "mmoe", "ple")]  # aitm models a funnel: not these tasks
SINGLE = [MTL / "census_single_income.yaml", MTL / "census_single_never_married.yaml"]
TASKS = ("income", "never_married")
NUMERIC = ("age", "wage_per_hour", "capital_gains", "capital_losses", "stock_dividends", "num_emp", "weeks_worked")
CODES = ("det_ind_code", "det_occ_code", "own_or_self", "vet_benefits", "year")


def test_schema_fields_and_tasks() -> None:
    schema = DatasetSchema.from_yaml(SCHEMA)
    assert [t.name for t in schema.tasks] == list(TASKS) and all(t.on is None for t in schema.tasks)
    assert [t.label for t in schema.tasks] == list(TASKS)
    names = [f.name for f in schema.fields]
    assert len(names) == 39 and "instance_weight" not in names
    assert tuple(f.name for f in schema.numeric) == NUMERIC
    assert set(CODES) <= {f.name for f in schema.categorical}  # codes, not quantities
    assert {f.name: f.norm for f in schema.numeric} == {
        "age": "standard", "wage_per_hour": "log1p", "capital_gains": "log1p", "capital_losses": "log1p",
        "stock_dividends": "log1p", "num_emp": "standard", "weeks_worked": "standard"}


def test_store_builds_on_the_shared_files(shared_dataset, tmp_path: Path) -> None:
    root = shared_dataset("census_income")
    store = EncodedStore.build_or_load(DatasetSchema.from_yaml(SCHEMA), root, tmp_path / "cache", log=lambda s: None)
    rows = {split: store.report["splits"][split]["rows_kept"] for split in ("train", "valid", "test")}
    assert rows == {"train": 69_833, "valid": 9_976, "test": 19_953}  # the data README's table
    # positives: the README's rates (income 6.24%, never_married 43.25% of train)
    assert store.report["splits"]["train"]["positives"] == {"income": 4_359, "never_married": 30_201}
    spec = store.feature_spec
    assert spec.num_fields == 39 and spec.numeric == NUMERIC
    sizes = dict(spec.categorical)
    assert sizes["sex"] == 2 + 2 and sizes["year"] == 2 + 2 and sizes["det_ind_code"] == 52 + 2  # + padding, OOV
    train = store.split("train").to_tensors({t: t for t in TASKS})
    assert train.cat.shape == (69_833, 32) and train.num.shape == (69_833, 7)
    assert abs(float(train.num[:, spec.numeric.index("age")].mean())) < 1e-4  # z-scored on train
    assert float(train.num[:, spec.numeric.index("capital_gains")].max()) == pytest.approx(np.log1p(99_999), rel=1e-6)


@pytest.mark.parametrize("variant", list(runner.MTL_VARIANTS))
@pytest.mark.parametrize("path", GRID, ids=[p.name for p in GRID])
def test_grid_configs_load_with_every_variant_and_train_a_step(path: Path, variant: str) -> None:
    name = path.stem.removeprefix("census_")
    if name not in MODELS:
        pytest.skip(f"model {name!r} is not in this checkout yet")
    cfg = load_config(path, runner.variant_overrides(variant, name))
    assert cfg["model"]["name"] == name and cfg["tasks"] == list(TASKS)
    assert cfg["data"]["schema"] == "configs/datasets/census_income.yaml"
    assert cfg["data"]["root"] == "../shared/datasets/census_income"
    assert cfg["model"]["embedding_dim"] == 8
    assert (cfg["tower"]["hidden_units"], cfg["expert"]["hidden_units"]) == ([64], [128])
    assert (cfg["tower"]["dropout"], cfg["expert"]["dropout"]) == (0.1, 0.1)
    t = cfg["train"]
    assert (t["batch_size"], t["lr"], t["epochs"], t["patience"]) == (1024, 1e-3, 30, 2)
    assert t["monitor"] == "income.auc:1,never_married.auc:1"
    if name == "shared_bottom":
        assert cfg["model"]["shared_units"] == [128]  # one expert's width
    if name == "mmoe":
        assert cfg["model"]["num_experts"] == 4
    if name == "ple":  # 2 shared + 1 per task = MMoE's 4 experts per level
        m = cfg["model"]
        assert (m["num_levels"], m["num_shared_experts"], m["num_task_experts"]) == (2, 2, 1)
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(), [Task(t, t) for t in TASKS])
    model.train()
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.stack([torch.randint(1, s, (16,), generator=g) for s in (6, 9, 4)], dim=1),
                  torch.randn(16, 2, generator=g),
                  {t: (torch.rand(16, generator=g) < 0.5).float() for t in TASKS})
    out = model(batch)
    assert sorted(out.probs) == sorted(TASKS)  # independent tasks: no entire-space product
    loss, _ = model.loss(out, batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_single_task_baselines_have_the_per_task_path_of_the_grid() -> None:
    grid = load_config(MTL / "census_shared_bottom.yaml")
    for path, task in zip(SINGLE, TASKS):
        cfg = load_config(path)
        assert cfg["model"]["name"] == "mlp" and cfg["tasks"] == [task] and cfg["train"]["monitor"] == f"{task}.auc"
        assert cfg["block"]["hidden_units"] == grid["model"]["shared_units"] + grid["tower"]["hidden_units"]
        assert cfg["block"]["dropout"] == grid["tower"]["dropout"] and cfg["block"]["batch_norm"]
        for key in ("data", "train"):
            assert {k: v for k, v in cfg[key].items() if k != "monitor"} == \
                   {k: v for k, v in grid[key].items() if k != "monitor"}
        assert cfg["model"]["embedding_dim"] == grid["model"]["embedding_dim"]


def test_grid_plans_score_the_configs_tasks() -> None:
    cells = runner.plan_grid([MTL / "census_base.yaml", *GRID[:3]], "all", "2021,2022,2023")
    assert len(cells) == 3 * 3 * 3 and {c.scored for c in cells} == {TASKS}
    assert runner.grid_layout(cells).columns == (  # written out by hand: the CSV layout is an interface
        "model", "variant", "seed",
        "valid_income_auc", "test_income_auc", "test_income_logloss",
        "valid_never_married_auc", "test_never_married_auc", "test_never_married_logloss",
        "es_cvr_auc", "best_epoch", "seconds")
    single = runner.plan_grid(SINGLE[:1], "mlp", "2021")
    assert [(c.label, c.scored) for c in single] == [("single_income/mlp", ("income",))]
    with pytest.raises(runner.BenchmarkError, match="scores \\['income'\\] but .* scores \\['income', 'never_married'\\]"):
        runner.plan_grid([GRID[1], SINGLE[0]], "mlp", "1")
    with pytest.raises(runner.BenchmarkError, match="no towers or experts.*--variants mlp"):
        runner.plan_grid(SINGLE[:1], "mlp,final", "1")
    funnel = runner.plan_grid([MTL / "hillstrom_esmm.yaml"], "mlp", "1")
    assert runner.grid_layout(funnel).columns == runner.MTL_CSV_COLUMNS


def _fake_metrics(auc: float) -> dict:
    ms = {t: {"auc": auc, "logloss": 0.2, "rows": 60} for t in TASKS}
    return {"valid": ms, "test": ms, "best_epoch": 3, "train_seconds": 1.5}


def test_independent_task_grid_csv_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    aucs = iter([0.90, 0.92, 0.80])

    def fake_run(cfg, run_dir, log, resume=False):
        return _fake_metrics(next(aucs))

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    out = tmp_path / "results"

    def argv(variants: str, seeds: str) -> list[str]:
        return ["--grid", str(GRID[1]), "--name", "c", "--variants", variants, "--seeds", seeds,
                "--out", str(out), "--runs-dir", str(tmp_path / "runs")]

    assert main(argv("mlp", "1,2")) == 0
    assert main(argv("final", "1")) == 0
    with (out / "c.csv").open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][3:9] == ["valid_income_auc", "test_income_auc", "test_income_logloss",
                            "valid_never_married_auc", "test_never_married_auc", "test_never_married_logloss"]
    assert [r[:3] for r in rows[1:]] == [["mmoe", "mlp", "1"], ["mmoe", "mlp", "2"], ["mmoe", "final", "1"]]
    text = (out / "c.md").read_text()
    assert "| model | variant | n | seeds | test income AUC ×100 | test never_married AUC ×100 | best epoch | " \
           "train s |" in text
    assert "| mmoe | mlp | 2 | 1,2 | 91.000 ± 1.414 | 91.000 ± 1.414 | 3.0 | 1.5 |" in text
    assert "| mmoe | final | 1 vs 2 | -11.000 | -11.000 |" in text  # 80 - 91
    assert "Tasks income, never_married" in text and "clicked rows" not in text
    # a CSV of other tasks is refused before anything runs
    with pytest.raises(runner.BenchmarkError, match="expected"):
        runner.read_rows(out / "c.csv", layout=runner.MULTI_TASK)
    assert report.write_grid_report("c", out, log=None) == out / "c.md"
