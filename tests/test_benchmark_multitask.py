"""Tests of the benchmark runner's multi-task grid mode (--grid): the configs/mtl configs with every
variant, the cells / CSV / resume on a tiny hand-written funnel dataset, and the grid report."""
from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from mtl_final.benchmark import report, runner
from mtl_final.benchmark.__main__ import main
from mtl_final.config import load_config
from mtl_final.models import build_model
from tests.support.benchmark_checks import assert_rerun_runs_nothing
from tests.support.model_fixtures import tasks, tiny_batch, tiny_features

REPO_ROOT = Path(__file__).resolve().parents[1]
# the funnel grids (ctr, cvr on ctr); the census grid is tested in tests/test_census_income.py
MTL_CONFIGS = sorted(p for p in (REPO_ROOT / "configs" / "mtl").glob("*.yaml")
                     if p.name.startswith(("hillstrom_", "sim_")))
COLUMNS = [  # written out by hand: the CSV layout is an interface
    "model", "variant", "seed",
    "valid_ctr_auc", "test_ctr_auc", "test_ctr_logloss",
    "valid_cvr_auc", "test_cvr_auc", "test_cvr_logloss",
    "valid_ctcvr_auc", "test_ctcvr_auc", "test_ctcvr_logloss",
    "es_cvr_auc", "best_epoch", "seconds",
]


@pytest.fixture(autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------------ configs/mtl


def test_variants_are_defined_once_with_expert_models() -> None:
    assert runner.MTL_VARIANTS == {
        "mlp": ("tower=mlp",),
        "final": ("tower=final",),
        "final_dual_kd": ("tower=final", "tower.dual=true", "tower.kd=true"),
    }
    assert runner.variant_overrides("final", "esmm") == ["tower=final"]
    assert runner.variant_overrides("final_dual_kd", "mmoe") == [
        "tower=final", "tower.dual=true", "tower.kd=true", "expert=final"]
    assert runner.variant_overrides("mlp", "ple") == ["tower=mlp", "expert=mlp"]
    assert runner.parse_variants("all") == ["mlp", "final", "final_dual_kd"]
    with pytest.raises(runner.BenchmarkError, match="final_dual_kd"):
        runner.parse_variants("mlp,nope")
    assert runner.grid_model_id("configs/mtl/hillstrom_shared_bottom.yaml") == "shared_bottom"
    assert runner.grid_model_id("sim_esmm.yaml") == "esmm" and runner.grid_model_id("esmm.yaml") == "esmm"
    assert runner.is_base_config("x/hillstrom_base.yaml") and runner.is_base_config("base.yaml")
    assert not runner.is_base_config("hillstrom_esmm.yaml")


def test_mtl_configs_exist() -> None:
    names = {p.name for p in MTL_CONFIGS}
    for prefix in ("hillstrom", "sim"):
        for model in ("base", "shared_bottom", "esmm", "mmoe", "ple"):
            assert f"{prefix}_{model}.yaml" in names


@pytest.mark.parametrize("variant", list(runner.MTL_VARIANTS))
@pytest.mark.parametrize("path", MTL_CONFIGS, ids=[p.name for p in MTL_CONFIGS])
def test_every_mtl_config_loads_with_every_variant(path: Path, variant: str) -> None:
    name = load_config(path)["model"]["name"]
    cfg = load_config(path, runner.variant_overrides(variant, name))
    t = cfg["tower"]
    assert t["kind"] == ("mlp" if variant == "mlp" else "final")
    assert t["dual"] is (variant == "final_dual_kd")
    if variant == "final_dual_kd":
        assert t["kd"] is True
    if name in ("mmoe", "ple"):
        assert cfg["expert"]["kind"] == t["kind"]
    assert cfg["tasks"] == ["ctr", "cvr"]
    assert cfg["train"]["monitor"] == "ctr.auc:1,ctcvr.auc:1" and cfg["train"]["patience"] == 2
    if path.name.startswith("hillstrom_"):
        assert cfg["data"]["schema"] == "configs/datasets/hillstrom.yaml"
        assert cfg["data"]["root"] == "../shared/datasets/hillstrom"
        assert cfg["model"]["embedding_dim"] == 8 and t["hidden_units"] == [64, 32]
        assert (cfg["train"]["batch_size"], cfg["train"]["lr"], cfg["train"]["epochs"]) == (1024, 1e-3, 30)
    else:
        assert cfg["data"]["simulator"] == {"n_rows": 200000, "seed": 7} and cfg["data"]["root"] is None
    if runner.is_base_config(path):
        return
    # a config's grid id is its model's name, with "_dr" for ESCM²'s doubly-robust variant
    dr = name == "escm2" and cfg["model"]["counterfactual"] == "dr"
    assert runner.grid_model_id(path) == name + ("_dr" if dr else "")
    if name == "shared_bottom":
        assert cfg["model"]["shared_units"] == []  # same architecture as ESMM: only the loss differs
    # the model of every (config, variant) builds and takes a training step with ctr + cvr on ctr
    torch.manual_seed(0)
    model = build_model(cfg, tiny_features(), tasks("ctr", "cvr"))
    model.train()
    batch = tiny_batch(16, tasks=("ctr", "cvr"))
    loss, _ = model.loss(model(batch), batch)
    loss.backward()
    assert torch.isfinite(loss)


def test_grid_plan_skips_base_configs_and_checks_keys(tmp_path: Path) -> None:
    hill = [REPO_ROOT / "configs" / "mtl" / f"hillstrom_{m}.yaml" for m in ("base", "esmm", "mmoe", "ple",
                                                                             "shared_bottom")]
    cells = runner.plan_grid(hill, "mlp,final,final_dual_kd", "2021,2022,2023")
    assert len(cells) == 4 * 3 * 3
    assert [c.label for c in cells[:4]] == ["esmm/mlp"] * 3 + ["esmm/final"]
    assert cells[0].seed == 2021 and cells[2].seed == 2023
    with pytest.raises(runner.BenchmarkError, match="tower.hiden_units"):
        runner.plan_grid(hill, "mlp", "1", overrides=["tower.hiden_units=[8]"])
    with pytest.raises(runner.BenchmarkError, match="share model id"):
        runner.plan_grid([hill[1], REPO_ROOT / "configs" / "mtl" / "sim_esmm.yaml"], "mlp", "1")
    with pytest.raises(runner.BenchmarkError, match="missing grid config"):
        runner.plan_grid([tmp_path / "x_esmm.yaml"], "mlp", "1")


# ------------------------------------------------------------------------ tiny funnel dataset


def _write_split(path: Path, n: int, rng: np.random.Generator) -> None:
    a, b, c = rng.integers(1, 6, n), rng.integers(1, 9, n), rng.integers(1, 4, n)
    x = rng.normal(size=n).round(3)
    click = (rng.random(n) < 1 / (1 + np.exp(-(a - 3) * 0.8))).astype(int)
    conv = click * (rng.random(n) < 0.3 + 0.3 * (c == 1)).astype(int)  # conv ⊂ click
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["f1", "f2", "f3", "x", "click", "conv"])
        w.writerows(zip(a, b, c, x, click, conv))
    # every task's AUC must be defined: both classes among all rows and among clicked rows
    assert 0 < click.sum() < n and 0 < conv.sum() < click.sum()


@pytest.fixture
def tiny(tmp_path: Path) -> dict[str, Path]:
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 180), ("valid", 60), ("test", 60)):
        _write_split(data / f"{split}.csv", n, rng)
    schema = tmp_path / "funnel_schema.yaml"
    schema.write_text(
        "name: tiny_funnel\nfiles: {train: train.csv, valid: valid.csv, test: test.csv}\n"
        "fields:\n  - {name: f1, type: categorical}\n  - {name: f2, type: categorical}\n"
        "  - {name: f3, type: categorical}\n  - {name: x, type: numeric, norm: standard}\n"
        'tasks:\n  - {name: ctr, label: click}\n  - {name: cvr, label: conv, "on": ctr}\n'
    )
    configs = tmp_path / "configs"
    configs.mkdir()
    (configs / "tiny_base.yaml").write_text(
        "tasks: [ctr, cvr]\n"
        f"data: {{schema: {schema}, root: {tmp_path / 'no_such_folder'}, cache_dir: {tmp_path / 'cache'}}}\n"
        "model: {embedding_dim: 4}\n"
        "tower: {hidden_units: [8], dropout: 0.0}\nexpert: {hidden_units: [8], dropout: 0.0}\n"
        "train: {epochs: 1, batch_size: 64, tensorboard: false, monitor: 'ctr.auc:1,ctcvr.auc:1', "
        "num_threads: 1, device: cpu}\n"
    )
    (configs / "tiny_esmm.yaml").write_text("include: tiny_base.yaml\nmodel: {name: esmm}\n")
    (configs / "tiny_mmoe.yaml").write_text("include: tiny_base.yaml\nmodel: {name: mmoe, num_experts: 2}\n")
    return {"data": data, "configs": configs, "out": tmp_path / "results", "runs": tmp_path / "runs"}


def _argv(t: dict[str, Path], variants: str = "mlp,final_dual_kd", seeds: str = "1") -> list[str]:
    grid = [str(t["configs"] / f"tiny_{m}.yaml") for m in ("base", "esmm", "mmoe")]
    # data.root in tiny_base.yaml points nowhere: the override must reach every run. It follows
    # the config paths (as after a shell glob), so the CLI must move it from --grid to the overrides.
    return ["--name", "tiny", "--variants", variants, "--seeds", seeds, "--out", str(t["out"]),
            "--runs-dir", str(t["runs"]), "--grid", *grid, f"data.root={t['data']}"]


def _fake_metrics(auc: float = 0.75, entire_space: bool = False) -> dict:
    ms = {t: {"auc": auc, "logloss": 0.5, "rows": 60} for t in ("ctr", "cvr", "ctcvr")}
    out = {"valid": ms, "test": ms, "best_epoch": 1, "train_seconds": 0.25}
    if entire_space:
        out["test_entire_space"] = {"cvr_auc": 0.61, "cvr_logloss": 0.3, "cvr_oracle_auc": 0.7,
                                    "cvr_corr_true_pcvr": 0.5, "rows": 60}
    return out


def test_grid_runs_cells_writes_csv_and_resumes(tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    csv_file = tiny["out"] / "tiny.csv"
    assert main(_argv(tiny)) == 0
    with csv_file.open(newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == COLUMNS
    assert [tuple(r[:3]) for r in rows[1:]] == [
        ("esmm", "mlp", "1"), ("esmm", "final_dual_kd", "1"), ("mmoe", "mlp", "1"), ("mmoe", "final_dual_kd", "1")]
    for r in rows[1:]:
        values = dict(zip(COLUMNS, r))
        for t in ("ctr", "cvr", "ctcvr"):
            for prefix in ("valid", "test"):
                assert 0.0 <= float(values[f"{prefix}_{t}_auc"]) <= 1.0
            assert float(values[f"test_{t}_logloss"]) > 0
        assert values["es_cvr_auc"] == ""  # real (non-simulated) data
        assert int(values["best_epoch"]) == 1 and float(values["seconds"]) >= 0
    # run dirs per cell; the variant's overrides reached the run (experts only for MMoE)
    for label in ("esmm/mlp", "esmm/final_dual_kd", "mmoe/mlp", "mmoe/final_dual_kd"):
        run_dir = tiny["runs"] / "tiny" / label / "seed1"
        assert (run_dir / "metrics.json").is_file()
        cfg = yaml.safe_load((run_dir / "config.yaml").read_text())
        final = label.endswith("final_dual_kd")
        assert cfg["tower"]["kind"] == ("final" if final else "mlp") and cfg["tower"]["dual"] is final
        assert cfg["expert"]["kind"] == ("final" if final and label.startswith("mmoe") else "mlp")
        assert cfg["data"]["root"] == str(tiny["data"]) and cfg["seed"] == 1
    assert (tiny["out"] / "tiny.md").is_file()
    logged = report.read_commands(tiny["out"], "tiny")
    assert len(logged) == 1 and "--grid" in logged[0][3]

    # second invocation: every cell is in the CSV, nothing may run, the CSV is untouched
    before = assert_rerun_runs_nothing(monkeypatch, csv_file, _argv(tiny))

    # delete one row: only that cell runs again, with its variant's overrides, and is appended
    lines = before.decode().splitlines(keepends=True)
    csv_file.write_text("".join(line for line in lines if not line.startswith("mmoe,final_dual_kd,1,")))
    calls = []

    def fake_run(cfg, run_dir, log, resume=False):
        calls.append((cfg["model"]["name"], cfg["tower"]["kind"], cfg["tower"]["dual"], cfg["expert"]["kind"],
                      cfg["seed"], cfg["train"]["progress"], Path(run_dir)))
        return _fake_metrics(entire_space=True)

    monkeypatch.setattr(runner, "run_experiment", fake_run)
    assert main(_argv(tiny)) == 0
    assert calls == [("mmoe", "final", True, "final", 1, False,
                      tiny["runs"] / "tiny" / "mmoe" / "final_dual_kd" / "seed1")]
    rows = runner.read_rows(csv_file, layout=runner.MULTI_TASK)
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("esmm", "mlp"), ("esmm", "final_dual_kd"), ("mmoe", "mlp"), ("mmoe", "final_dual_kd")]
    assert rows[-1]["test_cvr_auc"] == 0.75 and rows[-1]["es_cvr_auc"] == 0.61 and rows[0]["es_cvr_auc"] is None

    # a new variant only adds its cells
    calls.clear()
    assert main(_argv(tiny, variants="mlp,final,final_dual_kd")) == 0
    assert [(c[0], c[1], c[2]) for c in calls] == [("esmm", "final", False), ("mmoe", "final", False)]


def test_grid_failed_cell_is_reported_not_written_and_retried(tiny: dict[str, Path],
                                                              monkeypatch: pytest.MonkeyPatch,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    def flaky(cfg, run_dir, log, resume=False):
        if cfg["model"]["name"] == "mmoe" and cfg["tower"]["kind"] == "mlp":
            return {**_fake_metrics(), "test": {"ctr": {"auc": 0.7, "logloss": 0.5, "rows": 60}}}  # no cvr
        return _fake_metrics()

    monkeypatch.setattr(runner, "run_experiment", flaky)
    assert main(_argv(tiny)) == 1
    out = capsys.readouterr().out
    assert "FAILED tiny mmoe/mlp seed 1: KeyError" in out and "mmoe/mlp seed 1: KeyError" in out
    rows = runner.read_rows(tiny["out"] / "tiny.csv", layout=runner.MULTI_TASK)
    assert [(r["model"], r["variant"]) for r in rows] == [("esmm", "mlp"), ("esmm", "final_dual_kd"),
                                                          ("mmoe", "final_dual_kd")]
    calls = []
    monkeypatch.setattr(runner, "run_experiment",
                        lambda cfg, run_dir, log, resume=False: calls.append(str(run_dir)) or _fake_metrics())
    assert main(_argv(tiny)) == 0
    assert calls == [str(tiny["runs"] / "tiny" / "mmoe" / "mlp" / "seed1")]


def test_grid_cli_argument_errors(tiny: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    argv = _argv(tiny)
    assert main([a for a in argv if a not in ("--name", "tiny")]) == 2  # --grid needs --name
    assert main(["--dataset", "frappe_x1", *argv]) == 2
    assert main(argv[:3] + ["mlp,bogus"] + argv[4:]) == 2
    assert main(["--models", "LR", *argv]) == 2
    assert main(["--name", "tiny", "--out", str(tiny["out"])]) == 2  # no --grid, no --report-only
    err = capsys.readouterr().err
    assert "needs --name" in err and "bogus" in err and "final_dual_kd" in err and "single-task" in err
    assert not (tiny["out"] / "tiny.csv").exists() and not (tiny["out"] / "tiny.commands").exists()


def test_single_task_csv_refuses_grid_rows(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    runner.append_row(path, runner.mtl_metrics_row("esmm", "mlp", 1, _fake_metrics()), runner.MULTI_TASK)
    with pytest.raises(runner.BenchmarkError, match="expected"):
        runner.read_rows(path)
    row = runner.read_rows(path, layout=runner.MULTI_TASK)[0]
    assert row["es_cvr_auc"] is None and row["seed"] == 1 and row["test_ctcvr_auc"] == 0.75
    with pytest.raises(ValueError, match="non-finite"):
        runner.mtl_metrics_row("esmm", "mlp", 1, _fake_metrics(auc=math.nan))


# ---------------------------------------------------------------------------------- the report

# model, variant, seed, (ctr, cvr, ctcvr test AUC), es_cvr_auc
FAKE = [
    ("esmm", "mlp", 2021, (0.70, 0.60, 0.80), None),
    ("esmm", "mlp", 2022, (0.72, 0.61, 0.81), None),
    ("esmm", "mlp", 2023, (0.74, 0.65, 0.82), None),
    ("esmm", "final", 2021, (0.75, 0.62, 0.83), None),
    ("esmm", "final", 2022, (0.77, 0.64, 0.85), None),
    ("shared_bottom", "mlp", 2021, (0.71, 0.66, 0.79), 0.55),
    ("esmm", "mlp", 2021, (0.99, 0.99, 0.99), None),  # duplicate cell: ignored, like resume does
]


def _write_fake(out: Path, rows=FAKE) -> None:
    for model, variant, seed, (ctr, cvr, ctcvr), es in rows:
        row = {"model": model, "variant": variant, "seed": seed, "es_cvr_auc": es, "best_epoch": 4,
               "seconds": 12.0}
        for t, a in (("ctr", ctr), ("cvr", cvr), ("ctcvr", ctcvr)):
            row.update({f"valid_{t}_auc": a, f"test_{t}_auc": a, f"test_{t}_logloss": 0.1 + a / 10})
        runner.append_row(out / "grid.csv", row, runner.MULTI_TASK)


def _cells(text: str, section: str, model: str, variant: str) -> list[str]:
    part = text.split(f"## {section}")[1].split("\n## ")[0]
    line = next(line for line in part.splitlines() if line.startswith(f"| {model} | {variant} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_grid_report_means_by_hand_and_notes(tmp_path: Path) -> None:
    out = tmp_path / "results"
    _write_fake(out)
    path = report.write_grid_report("grid", out, command="python -m mtl_final.benchmark --name grid --report-only",
                                    log=None)
    text = path.read_text()
    assert "| model | variant | n | seeds | test ctr AUC ×100 | test cvr AUC ×100 (clicked rows) | " \
           "test ctcvr AUC ×100 | entire-space cvr AUC ×100 | best epoch | train s |" in text
    # esmm/mlp: ctr 70, 72, 74 -> 72.000 ± 2.000; cvr 60, 61, 65 -> 62.000 ± sqrt((4+1+9)/2) = 2.646;
    # ctcvr 80, 81, 82 -> 81.000 ± 1.000; no entire-space value
    assert _cells(text, "Test AUC", "esmm", "mlp") == [
        "esmm", "mlp", "3", "2021,2022,2023", "72.000 ± 2.000", "62.000 ± 2.646", "81.000 ± 1.000", "–",
        "4.0", "12.0"]
    # esmm/final: 75, 77 -> 76.000 ± 1.414; 62, 64 -> 63.000 ± 1.414; 83, 85 -> 84.000 ± 1.414
    assert _cells(text, "Test AUC", "esmm", "final")[2:7] == [
        "2", "2021,2022", "76.000 ± 1.414", "63.000 ± 1.414", "84.000 ± 1.414"]
    assert _cells(text, "Test AUC", "shared_bottom", "mlp")[4:8] == [
        "71.000 ± –", "66.000 ± –", "79.000 ± –", "55.000 ± –"]
    # logloss 0.1 + auc/10: esmm/mlp ctr 0.170, 0.172, 0.174 -> 0.1720 ± 0.0020
    assert _cells(text, "Test logloss", "esmm", "mlp")[3] == "0.1720 ± 0.0020"
    # difference to mlp: esmm/final - esmm/mlp = +4.000, +1.000, +3.000
    assert _cells(text, "Difference", "esmm", "final")[2:6] == ["2 vs 3", "+4.000", "+1.000", "+3.000"]
    # order: shared_bottom before esmm, mlp before final
    auc_part = text.split("## Test AUC")[1].split("\n## ")[0]
    order = [tuple(c.strip() for c in line.split("|")[1:3]) for line in auc_part.splitlines()
             if line.startswith("| ") and "---" not in line][1:]
    assert order == [("shared_bottom", "mlp"), ("esmm", "mlp"), ("esmm", "final")]
    assert "## Commands" in text and "`python -m mtl_final.benchmark --name grid --report-only`" in text

    notes = f"{report.NOTES_MARKER}\n## Notes\n\nhand-written: ple ran on a busy machine.\n"
    path.write_text(text.split(report.NOTES_MARKER)[0] + notes)
    _write_fake(out, [("esmm", "final", 2023, (0.76, 0.63, 0.84), None)])
    text = report.write_grid_report("grid", out, log=None).read_text()
    assert text.endswith(notes) and text.count(report.NOTES_MARKER) == 1
    assert _cells(text, "Test AUC", "esmm", "final")[2:5] == ["3", "2021,2022,2023", "76.000 ± 1.000"]


def test_grid_report_without_simulator_has_no_entire_space_column(tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "results"
    _write_fake(out, [r for r in FAKE if r[4] is None])
    assert main(["--name", "grid", "--out", str(out), "--report-only"]) == 0
    text = (out / "grid.md").read_text()
    assert "entire-space cvr AUC" not in text.split("## Test AUC")[1].split("\n## ")[0]
    assert "| esmm | mlp | 3 | 2021,2022,2023 | 72.000 ± 2.000 |" in text
    assert not report.read_commands(out, "grid")  # report-only logs nothing


def test_the_ground_truth_table_averages_each_runs_entire_space_metrics(tmp_path):
    from mtl_final.benchmark import report as report_mod

    truth = [{"ctr_oracle_auc": 0.80, "cvr_auc": 0.60, "cvr_oracle_auc": 0.75, "cvr_auc_unclicked": 0.58,
              "cvr_oracle_auc_unclicked": 0.74, "cvr_logloss_true_pcvr": 0.50, "cvr_oracle_logloss_true_pcvr": 0.40},
             {"ctr_oracle_auc": 0.80, "cvr_auc": 0.70, "cvr_oracle_auc": 0.75, "cvr_auc_unclicked": None,
              "cvr_oracle_auc_unclicked": 0.74, "cvr_logloss_true_pcvr": 0.54, "cvr_oracle_logloss_true_pcvr": 0.40}]
    dirs = []
    for i, entire in enumerate(truth):
        run = tmp_path / f"seed{i}"
        run.mkdir()
        (run / "metrics.json").write_text(json.dumps({"test_entire_space": entire}))
        dirs.append(run)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "metrics.json").write_text(json.dumps({"test_entire_space": {}}))
    lines = report_mod._ground_truth({("esmm", "final"): dirs, ("lr", "mlp"): [tmp_path / "empty"]},
                                     ["model", "variant"], tmp_path, None)
    row = next(line for line in lines if line.startswith("| esmm |"))
    # mean ± sample std by hand: cvr AUC (60, 70) -> 65 ± 7.071; unclicked only the first run's 58;
    # cross-entropy (0.50, 0.54) -> 0.52 ± 0.0283 (one value has no std: –)
    assert row == ("| esmm | final | 2 | 80.000 ± 0.000 | 65.000 ± 7.071 | 75.000 ± 0.000 | 58.000 ± – | "
                   "74.000 ± 0.000 | 0.5200 ± 0.0283 | 0.4000 ± 0.0000 |")
    assert not any(line.startswith("| lr |") for line in lines)  # no ground truth: no row
    assert report_mod._ground_truth({("lr", "mlp"): [tmp_path / "empty"]}, ["model", "variant"], tmp_path, None) == []
