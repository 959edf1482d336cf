"""Calibration: PCOC and ECE by hand, the isotonic and Platt calibrators (fit, numpy, calibration.json,
ONNX nodes), calibrated runs (metrics.json, predict, export, reliability diagrams, TensorBoard) and the
benchmark reports' calibration table."""
from __future__ import annotations

import json
import math
import shutil
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch
from onnx import TensorProto, helper

from mtl_final.benchmark import report, runner
from mtl_final.benchmark.__main__ import main as benchmark_main
from mtl_final.calibration import (CALIBRATION_FILE, CALIBRATORS, Calibration, Isotonic, Platt, calibrate_onnx_file,
                                   fit_calibration, load_calibration)
from mtl_final.config import ConfigError, load_config
from mtl_final.config_spec import allowed
from mtl_final.data.encoders import FeatureEncoders
from mtl_final.export import export_run
from mtl_final.predict import predict
from mtl_final.reliability import missing_plotter
from mtl_final.train.metrics import ece, equal_mass_bins, pcoc, task_metrics
from mtl_final.train.run_dir import clear_run_dir, run_files
from tests.support.tiny_data import train_tiny_esmm

torch.set_num_threads(1)

TASKS = [SimpleNamespace(name="ctr", on=None), SimpleNamespace(name="cvr", on="ctr")]
OUTPUTS = ("ctr", "cvr", "ctcvr")
SCORES = {"auc", "logloss", "pcoc", "ece", "rows"}
RUN_KEYS = {"valid", "test", "best_epoch", "epochs_run", "train_seconds", "steps", "parameters", "world_size",
            "data_report"}


# ------------------------------------------------------------------------------------ PCOC and ECE
def test_pcoc_and_ece_by_hand_with_a_tie_across_bins_and_an_uneven_remainder():
    y = np.array([0, 1, 0, 0, 1, 1, 1], dtype=np.float32)
    p = np.array([0.1, 0.8, 0.3, 0.2, 0.3, 0.9, 0.6], dtype=np.float32)
    # PCOC = (0.1 + 0.8 + 0.3 + 0.2 + 0.3 + 0.9 + 0.6) / 4 = 3.2 / 4
    assert pcoc(y, p) == pytest.approx(0.8, abs=1e-7)
    # sorted by p, ties in row order: rows 0 (0.1), 3 (0.2), 2 (0.3, y 0), 4 (0.3, y 1), 6, 1, 5.
    # 7 rows in 3 bins: 3, 2, 2. bin 1 rows 0, 3, 2: mean p 0.2, mean y 0; bin 2 rows 4, 6: 0.45, 1;
    # bin 3 rows 1, 5: 0.85, 1. ECE = (3·0.2 + 2·0.55 + 2·0.15) / 7 = 2 / 7
    n, mean_p, mean_y = equal_mass_bins(y, p, bins=3)
    np.testing.assert_array_equal(n, [3, 2, 2])
    np.testing.assert_allclose(mean_p, [0.2, 0.45, 0.85], atol=1e-7)
    np.testing.assert_array_equal(mean_y, [0.0, 1.0, 1.0])
    assert ece(y, p, bins=3) == pytest.approx(2 / 7, abs=1e-7)
    # (row 4 before row 2 would give (3·|0.2 − 1/3| + 2·0.05 + 2·0.15) / 7 = 0.8 / 7)


def test_ece_of_twenty_bins_by_hand():
    # 22 rows p_i = i / 100, y_i = 1 for odd i; 20 bins: the first 2 hold 2 rows, the other 18 one row
    p, y = np.arange(22) / 100, (np.arange(22) % 2).astype(float)
    n, _, _ = equal_mass_bins(y, p)
    assert n.tolist() == [2, 2] + [1] * 18
    # bin 0 rows 0, 1: |0.005 − 0.5| · 2 = 0.99; bin 1 rows 2, 3: |0.025 − 0.5| · 2 = 0.95;
    # rows 4..20 even: Σ i/100 = 1.08; rows 5..21 odd: Σ (1 − i/100) = 9 − 1.17 = 7.83
    assert ece(y, p) == pytest.approx((0.99 + 0.95 + 1.08 + 7.83) / 22, abs=1e-12)
    # fewer rows than bins: one row per bin, ECE = mean |p − y|
    assert ece(np.array([1.0, 0.0, 1.0]), np.array([0.5, 0.25, 0.75])) == pytest.approx((0.5 + 0.25 + 0.25) / 3)


def test_undefined_pcoc_and_ece_are_nan():
    assert math.isnan(pcoc(np.zeros(4), np.full(4, 0.5)))  # no positive label
    assert math.isnan(pcoc(np.zeros(0), np.zeros(0))) and math.isnan(ece(np.zeros(0), np.zeros(0)))
    assert ece(np.zeros(4), np.full(4, 0.25)) == pytest.approx(0.25)


def test_task_metrics_score_cvr_on_clicked_rows_and_ctcvr_on_all():
    click = np.array([1, 1, 0, 1, 0], dtype=np.float32)
    conv = np.array([1, 0, 0, 1, 0], dtype=np.float32)
    probs = {"ctr": np.array([0.5, 0.5, 0.5, 0.5, 0.5]), "cvr": np.array([0.5, 0.2, 0.9, 0.3, 0.9])}
    probs["ctcvr"] = probs["ctr"] * probs["cvr"]
    out = task_metrics(TASKS, probs, {"ctr": click, "cvr": conv})
    assert all(set(out[name]) == SCORES for name in OUTPUTS)
    assert out["ctr"]["pcoc"] == pytest.approx(2.5 / 3)
    assert out["cvr"]["pcoc"] == pytest.approx((0.5 + 0.2 + 0.3) / 2) and out["cvr"]["rows"] == 3
    assert out["ctcvr"]["pcoc"] == pytest.approx((0.25 + 0.1 + 0.45 + 0.15 + 0.45) / 2)


# ------------------------------------------------------------------------------------ calibrators
def _funnel(n: int = 4000, seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Over-confident float32 probabilities and labels of a ctr → cvr funnel."""
    rng = np.random.default_rng(seed)
    p_ctr, p_cvr = rng.random(n).astype(np.float32), rng.random(n).astype(np.float32)
    click = (rng.random(n) < p_ctr ** 2).astype(np.float32)
    conv = click * (rng.random(n) < 0.2 + 0.5 * p_cvr).astype(np.float32)
    return {"ctr": p_ctr, "cvr": p_cvr, "ctcvr": p_ctr * p_cvr}, {"ctr": click, "cvr": conv}


def _probe(calibration: Calibration, rows: int = 500) -> dict[str, np.ndarray]:
    """Probabilities to score: random, 0, 1, beyond [0, 1] and every isotonic breakpoint."""
    rng = np.random.default_rng(1)
    base = np.concatenate([[0.0, 1.0, -0.5, 1.5], rng.random(rows)]).astype(np.float32)
    knots = [c.x for c in calibration.calibrators.values() if isinstance(c, Isotonic)]
    ctr = np.concatenate([base, *knots]).astype(np.float32)
    cvr = np.roll(ctr, 7)
    return {"ctr": ctr, "cvr": cvr, "ctcvr": ctr * cvr}


def test_the_config_choices_are_the_calibrators():
    assert set(allowed("calibration")) == {"none", *CALIBRATORS}
    assert load_config(None, ["calibration=platt"])["calibration"] == "platt"
    assert load_config(None, [])["calibration"] == "none"
    with pytest.raises(ConfigError, match="calibration"):
        load_config(None, ["calibration=beta"])


def test_isotonic_fits_on_clicked_rows_and_maps_like_sklearn():
    from sklearn.isotonic import IsotonicRegression

    probs, labels = _funnel()
    cal = fit_calibration("isotonic", TASKS, probs, labels)
    clicked = labels["ctr"] > 0.5
    assert cal.rows == {"ctr": 4000, "cvr": int(clicked.sum())} and cal.products == {"ctcvr": ("ctr", "cvr")}
    x = _probe(cal)["ctr"].astype(np.float64)
    for name, (p, y) in {"ctr": (probs["ctr"], labels["ctr"]),
                         "cvr": (probs["cvr"][clicked], labels["cvr"][clicked])}.items():
        ref = IsotonicRegression(out_of_bounds="clip").fit(p.astype(np.float64), y.astype(np.float64))
        np.testing.assert_allclose(cal.calibrators[name].apply(x), ref.predict(x), rtol=0, atol=1e-12)
    out = cal.apply(probs)
    assert all(out[n].dtype == np.float32 for n in OUTPUTS)
    # the product of the calibrated parts, not a map of its own
    np.testing.assert_allclose(out["ctcvr"], out["ctr"].astype(np.float64) * out["cvr"], rtol=1e-6)
    # in-sample, isotonic regression keeps the label sum: PCOC 1
    assert pcoc(labels["ctr"], out["ctr"]) == pytest.approx(1.0, abs=1e-5)
    # one distinct probability: a constant map
    one = Isotonic.fit(np.full(5, 0.3), np.array([1.0, 0, 0, 1, 0]))
    np.testing.assert_allclose(one.apply(np.array([0.0, 0.3, 0.9])), [0.4, 0.4, 0.4])


def test_platt_recovers_a_known_map_and_stays_finite_on_one_class():
    rng = np.random.default_rng(3)
    p = rng.uniform(0.01, 0.99, 200_000)
    y = (rng.random(p.size) < 1 / (1 + np.exp(-(2.0 * np.log(p / (1 - p)) + 0.5)))).astype(np.float64)
    fitted = Platt.fit(p, y)
    assert fitted.a == pytest.approx(2.0, abs=0.03) and fitted.b == pytest.approx(0.5, abs=0.03)
    # the maximum of the smoothed-target likelihood: its gradient vanishes
    z = np.log(p / (1 - p))
    t = np.where(y > 0.5, (y.sum() + 1) / (y.sum() + 2), 1 / (len(y) - y.sum() + 2))
    q = fitted.apply(p)
    assert abs(np.sum(q - t)) < 1e-6 * len(p) and abs(np.sum((q - t) * z)) < 1e-6 * len(p)
    none = Platt.fit(p[:100], np.zeros(100))  # no positive row: a finite map near 1 / 102
    assert math.isfinite(none.a) and math.isfinite(none.b)
    assert none.apply(p[:100]).mean() == pytest.approx(1 / 102, rel=1e-3)


def test_fitting_a_task_without_rows_is_one_clear_error():
    probs, labels = _funnel(50)
    labels["ctr"][:] = 0
    with pytest.raises(ValueError, match="no rows .*parent's label 1.* task 'cvr'"):
        fit_calibration("platt", TASKS, probs, labels)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_json_round_trip(method, tmp_path):
    probs, labels = _funnel()
    cal = fit_calibration(method, TASKS, probs, labels)
    cal.save(tmp_path / CALIBRATION_FILE)
    again = load_calibration(tmp_path)
    assert again.to_dict() == cal.to_dict()
    assert json.loads((tmp_path / CALIBRATION_FILE).read_text())["method"] == method
    probe = _probe(cal)
    for name, values in cal.apply(probe).items():
        np.testing.assert_array_equal(again.apply(probe)[name], values)
    assert load_calibration(tmp_path / "elsewhere") is None
    (tmp_path / CALIBRATION_FILE).write_text('{"format": 1, "method": "beta", "tasks": {}, "products": {}}')
    with pytest.raises(ValueError, match=f"{CALIBRATION_FILE} .*unknown method 'beta'.*delete the file"):
        load_calibration(tmp_path)


def _tiny_graph() -> onnx.ModelProto:
    """in_ctr, in_cvr float32 [batch] → p_ctr, p_cvr and p_ctcvr = their product."""
    nodes = [helper.make_node("Identity", ["in_ctr"], ["p_ctr"]), helper.make_node("Identity", ["in_cvr"], ["p_cvr"]),
             helper.make_node("Mul", ["p_ctr", "p_cvr"], ["p_ctcvr"])]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch"]) for n in ("in_ctr", "in_cvr")],
        [helper.make_tensor_value_info(f"p_{n}", TensorProto.FLOAT, ["batch"]) for n in OUTPUTS])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 9
    return model


def _session(model: bytes | Path) -> ort.InferenceSession:
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_the_onnx_nodes_compute_the_numpy_map(method, tmp_path):
    cal = fit_calibration(method, TASKS, *_funnel())
    probe = _probe(cal)
    path = tmp_path / "g.onnx"
    onnx.save(_tiny_graph(), str(path))
    feeds = [{"in_ctr": probe["ctr"], "in_cvr": probe["cvr"]}, {"in_ctr": probe["ctr"][:1], "in_cvr": probe["cvr"][:1]}]
    doc = calibrate_onnx_file(path, cal, "p_", feeds, _session)
    assert doc["rows"] == [len(probe["ctr"]), 1] and max(doc["max_abs_diff"].values()) <= 1e-6
    got = dict(zip(["p_ctr", "p_cvr", "p_ctcvr"], _session(path).run(None, feeds[0])))
    want = cal.apply(probe)
    for name in OUTPUTS:
        assert got[f"p_{name}"].dtype == np.float32
        np.testing.assert_allclose(got[f"p_{name}"], want[name], rtol=0, atol=1e-6)
    # a calibration whose outputs are not the graph's is refused
    with pytest.raises(ValueError, match="maps outputs"):
        calibrate_onnx_file(path, Calibration(method, {"ctr": cal.calibrators["ctr"]}), "p_", feeds, _session)


# ------------------------------------------------------------------------------------ calibrated runs
@pytest.fixture(scope="module")
def runs(tmp_path_factory, esmm_run):
    """{none, isotonic, platt: (data root, run dir)}: the tiny ESMM run with each calibration, same seed."""
    out = {"none": esmm_run[:2]}
    for method in ("isotonic", "platt"):
        out[method] = train_tiny_esmm(tmp_path_factory.mktemp(method), f"calibration={method}")
    return out


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _uncalibrated_copy(run: Path, tmp: Path) -> Path:
    copy = tmp / f"{run.parent.name}-raw"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns(CALIBRATION_FILE, "export"))
    return copy


def test_calibration_none_changes_nothing_but_adds_pcoc_and_ece(runs):
    _, run = runs["none"]
    metrics = _metrics(run)
    assert set(metrics) == RUN_KEYS
    assert all(set(metrics[split][n]) == SCORES for split in ("valid", "test") for n in OUTPUTS)
    assert not (run / CALIBRATION_FILE).exists() and not list(run.glob("reliability_*.png"))


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_metrics_hold_calibrated_and_uncalibrated_entries(runs, method, tmp_path):
    root, run = runs[method]
    metrics, raw = _metrics(run), _metrics(runs["none"][1])
    assert set(metrics) == RUN_KEYS | {"valid_uncalibrated", "test_uncalibrated"}
    # the same training as the run without calibration: the same raw numbers
    assert metrics["valid_uncalibrated"] == raw["valid"] and metrics["test_uncalibrated"] == raw["test"]
    assert metrics["best_epoch"] == raw["best_epoch"] and metrics["steps"] == raw["steps"]
    assert metrics["valid"] != metrics["valid_uncalibrated"]
    assert all(set(metrics[split][n]) == SCORES for split in ("valid", "test") for n in OUTPUTS)
    # fitted on valid: the calibrated valid tasks predict as many events as observed
    for task in ("ctr", "cvr"):
        assert metrics["valid"][task]["pcoc"] == pytest.approx(1.0, abs=1e-5 if method == "isotonic" else 0.03)
    # metrics.json's test entry is of the calibrated outputs: the calibration applied to the raw model's scores
    predict(_uncalibrated_copy(run, tmp_path), root / "test.csv", tmp_path / "raw.parquet", log=None)
    scores = pd.read_parquet(tmp_path / "raw.parquet")
    labels = pd.read_csv(root / "test.csv")
    calibrated = load_calibration(run).apply({n: scores[f"p_{n}"].to_numpy() for n in OUTPUTS})
    want = task_metrics(TASKS, calibrated,
                        {"ctr": labels["click"].to_numpy(float), "cvr": labels["conv"].to_numpy(float)})
    for name in OUTPUTS:
        for score in ("auc", "logloss", "pcoc", "ece"):
            assert metrics["test"][name][score] == pytest.approx(want[name][score], abs=1e-6)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_predict_applies_the_runs_calibration(runs, method, tmp_path):
    root, run = runs[method]
    calibration = load_calibration(run)
    assert calibration.method == method and set(calibration.calibrators) == {"ctr", "cvr"}
    predict(run, root / "test.csv", tmp_path / "cal.parquet", log=None)
    predict(_uncalibrated_copy(run, tmp_path), root / "test.csv", tmp_path / "raw.parquet", log=None)
    cal, raw = pd.read_parquet(tmp_path / "cal.parquet"), pd.read_parquet(tmp_path / "raw.parquet")
    want = calibration.apply({n: raw[f"p_{n}"].to_numpy() for n in OUTPUTS})
    for name in OUTPUTS:
        np.testing.assert_allclose(cal[f"p_{name}"].to_numpy(), want[name], rtol=0, atol=1e-6)
    assert not np.allclose(cal["p_ctr"], raw["p_ctr"], atol=1e-3)
    np.testing.assert_allclose(cal["p_ctcvr"], cal["p_ctr"].to_numpy(np.float64) * cal["p_cvr"], rtol=1e-6)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_the_export_holds_the_calibration_in_both_graphs(runs, method, tmp_path):
    root, run = runs[method]
    manifest = export_run(run, tmp_path / "cal", check_rows=256, raw_inputs=True)
    assert manifest["calibration"]["method"] == method
    for name in ("model.onnx", "model_raw.onnx"):
        check = manifest["calibration"]["check"][name]
        assert check["rows"] == [256, 1] and max(check["max_abs_diff"].values()) <= 1e-6
    assert export_run(_uncalibrated_copy(run, tmp_path), tmp_path / "raw", check_rows=16)["calibration"] == "none"

    rows = pd.read_csv(root / "test.csv", dtype=str)
    encoders = FeatureEncoders.load(tmp_path / "cal" / "encoders.json")
    cat, num = encoders.transform(rows)
    feeds = {"categorical": cat.astype(np.int64), "numeric": num}
    names = ["p_ctr", "p_cvr", "p_ctcvr"]
    got = dict(zip(names, _session(tmp_path / "cal" / "model.onnx").run(names, feeds)))
    raw = dict(zip(names, _session(tmp_path / "raw" / "model.onnx").run(names, feeds)))
    want = load_calibration(run).apply({n[2:]: raw[n] for n in names})
    raw_graph = _session(tmp_path / "cal" / "model_raw.onnx")
    from_raw = dict(zip(names, raw_graph.run(names, {"a": rows["a"].to_numpy(object), "b": rows["b"].to_numpy(object),
                                                     "c": rows["c"].to_numpy(object),
                                                     "x": rows["x"].astype(float).to_numpy()})))
    for n in names:
        np.testing.assert_allclose(got[n], want[n[2:]], rtol=0, atol=1e-6)
        np.testing.assert_allclose(from_raw[n], got[n], rtol=0, atol=1e-6)


def test_reliability_diagrams_are_drawn_where_matplotlib_is(runs):
    pytest.importorskip("matplotlib")
    for method in ("isotonic", "platt"):
        run = runs[method][1]
        for name in OUTPUTS:
            assert (run / f"reliability_{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_without_matplotlib_the_diagrams_are_skipped_with_one_line(tmp_path, monkeypatch, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now raises ImportError
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    assert "matplotlib is not installed" in missing_plotter()
    _, run = train_tiny_esmm(tmp_path, "calibration=platt", "train.tensorboard=true")
    lines = [line for line in capsys.readouterr().out.splitlines() if "reliability diagrams" in line]
    assert len(lines) == 1 and lines[0].startswith("reliability diagrams skipped: matplotlib is not installed")
    assert (run / "metrics.json").is_file() and not list(run.glob("reliability_*.png"))
    # the new valid metrics reach TensorBoard beside the others
    tags = set(EventAccumulator(str(run)).Reload().Tags()["scalars"])
    assert {f"valid/{n}/{m}" for n in OUTPUTS for m in ("auc", "logloss", "pcoc", "ece")} <= tags

    # calibration.json and the diagrams are run files: clearing the folder for a new run (as the
    # benchmark runner does) takes them away, so no stale calibration is served with new weights
    (run / "reliability_ctr.png").write_bytes(b"stale")
    assert {CALIBRATION_FILE, "reliability_ctr.png"} <= set(run_files(run))
    clear_run_dir(run, log=lambda s: None)
    assert not (run / CALIBRATION_FILE).exists() and not list(run.glob("reliability_*.png"))
    assert train_tiny_esmm(tmp_path)[1] == run
    assert set(_metrics(run)) == RUN_KEYS


# ------------------------------------------------------------------------------------ reports
def _fake_run(path: Path, pcoc_value: float, ece_value: float, tasks=("ctr",), raw: float | None = None) -> None:
    path.mkdir(parents=True)
    test = {t: {"auc": 0.7, "logloss": 0.5, "pcoc": pcoc_value, "ece": ece_value, "rows": 10} for t in tasks}
    metrics = {"test": test}
    if raw is not None:
        metrics["test_uncalibrated"] = {t: {**v, "pcoc": raw} for t, v in test.items()}
    (path / "metrics.json").write_text(json.dumps(metrics))


def _cells(text: str, first: str) -> list[str]:
    part = text.split("## Calibration")[1].split("\n## ")[0]
    line = next(line for line in part.splitlines() if line.startswith(f"| {first} |"))
    return [c.strip() for c in line.strip("|").split("|")]


def test_single_task_report_has_a_calibration_table(tmp_path):
    out, runs_dir = tmp_path / "results", tmp_path / "runs"
    for model, seed, auc in (("MLP", 1, 0.97), ("MLP", 2, 0.972), ("LR", 1, 0.93)):
        runner.append_row(out / "frappe_x1.csv", {
            "model": model, "seed": seed, "valid_auc": auc, "valid_logloss": 0.2, "test_auc": auc, "test_logloss": 0.2,
            "best_epoch": 1, "seconds": 1.0})
    _fake_run(runner.run_dir_of(runs_dir, "frappe_x1", "MLP", 1), 1.1, 0.02, raw=1.3)
    _fake_run(runner.run_dir_of(runs_dir, "frappe_x1", "MLP", 2), 0.9, 0.04, raw=1.1)
    # LR seed 1 has no run directory: left out
    text = report.write_report("frappe_x1", out, log=None, runs_dir=runs_dir).read_text()
    assert "| model | outputs | n | test PCOC | test ECE |" in text
    # MLP: PCOC 1.1, 0.9 -> 1.000 ± 0.141; ECE 0.02, 0.04 -> 0.0300 ± 0.0141; raw PCOC 1.3, 1.1 -> 1.200 ± 0.141
    assert _cells(text, "MLP") == ["MLP", "as served", "2", "1.000 ± 0.141", "0.0300 ± 0.0141"]
    assert "| MLP | uncalibrated | 2 | 1.200 ± 0.141 | 0.0300 ± 0.0141 |" in text
    assert "| LR |" not in text.split("## Calibration")[1]
    assert "Not shown" in report.write_report("frappe_x1", out, log=None).read_text()


def test_grid_report_has_a_calibration_table_through_the_cli(tmp_path):
    out, runs_dir = tmp_path / "results", tmp_path / "runs"
    row = {"model": "esmm", "variant": "mlp", "seed": 1, "es_cvr_auc": None, "best_epoch": 1, "seconds": 1.0}
    for t in OUTPUTS:
        row.update({f"valid_{t}_auc": 0.7, f"test_{t}_auc": 0.7, f"test_{t}_logloss": 0.2})
    runner.append_row(out / "grid.csv", row, runner.MULTI_TASK)
    _fake_run(runner.run_dir_of(runs_dir, "grid", "esmm/mlp", 1), 1.25, 0.05, tasks=OUTPUTS)
    assert benchmark_main(["--name", "grid", "--out", str(out), "--runs-dir", str(runs_dir), "--report-only"]) == 0
    text = (out / "grid.md").read_text()
    assert "| model | variant | outputs | n | test ctr PCOC | test ctr ECE | test cvr PCOC (clicked rows) |" in text
    assert _cells(text, "esmm") == ["esmm", "mlp", "as served", "1"] + ["1.250 ± –", "0.0500 ± –"] * 3
