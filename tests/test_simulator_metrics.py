"""Tests of the entire-space CVR metrics against stored ground truth (mtl_final.data.simulator_metrics)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from mtl_final.data.schema import TaskSpec
from mtl_final.data.simulator_metrics import entire_space_metrics, has_ground_truth, label_seed

TASKS = (TaskSpec("ctr", "click"), TaskSpec("cvr", "conversion", on="ctr"))


def _write(path: Path, columns: dict[str, list]) -> Path:
    names = list(columns)
    rows = zip(*columns.values())
    path.write_text(",".join(names) + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_cross_entropy_to_the_true_probability_by_hand(tmp_path: Path) -> None:
    q, p = [0.2, 0.5, 0.9], np.array([0.1, 0.5, 0.8])
    test = _write(tmp_path / "test.csv", {"click": [1, 0, 0], "conversion": [0, 0, 0], "true_pctr": [0.3] * 3,
                                          "true_pcvr": q, "cvr_entire": [0, 1, 1]})
    m = entire_space_metrics({"ctr": np.full(3, 0.3), "cvr": p}, test, TASKS)
    # -(q ln p + (1 - q) ln(1 - p)) per row, averaged
    rows = [0.2 * math.log(0.1) + 0.8 * math.log(0.9),  # -0.5448054
            0.5 * math.log(0.5) + 0.5 * math.log(0.5),  # -0.6931472
            0.9 * math.log(0.8) + 0.1 * math.log(0.2)]  # -0.3617730
    assert m["cvr_logloss_true_pcvr"] == pytest.approx(-sum(rows) / 3) == pytest.approx(0.5332419, abs=1e-7)
    entropy = [0.2 * math.log(0.2) + 0.8 * math.log(0.8), math.log(0.5), 0.9 * math.log(0.9) + 0.1 * math.log(0.1)]
    assert m["cvr_oracle_logloss_true_pcvr"] == pytest.approx(-sum(entropy) / 3)
    assert m["cvr_oracle_logloss_true_pcvr"] < m["cvr_logloss_true_pcvr"]


def test_stored_cvr_entire_labels_and_unclicked_rows(tmp_path: Path) -> None:
    test = _write(tmp_path / "test.csv", {
        "click": [1, 1, 0, 0, 0], "conversion": [1, 0, 0, 0, 0], "true_pctr": [0.5] * 5,
        "true_pcvr": [0.7, 0.1, 0.6, 0.2, 0.3], "cvr_entire": [1, 0, 1, 0, 1]})
    p = np.array([0.9, 0.2, 0.4, 0.6, 0.1])
    m = entire_space_metrics({"ctr": np.full(5, 0.5), "cvr": p}, test, TASKS)
    # all rows: positives {0.9, 0.4, 0.1} vs negatives {0.2, 0.6}: 0.9 beats 2, 0.4 beats 1, 0.1 none -> 3/6
    assert m["cvr_auc"] == pytest.approx(3 / 6)
    # unclicked rows 3..5: positives {0.4, 0.1} vs negative {0.6} -> 0/2; oracle {0.6, 0.3} vs {0.2} -> 2/2
    assert m["cvr_auc_unclicked"] == 0.0 and m["cvr_oracle_auc_unclicked"] == 1.0
    # oracle, all rows: positives {0.7, 0.6, 0.3} vs negatives {0.1, 0.2}: every pair right
    assert m["cvr_oracle_auc"] == 1.0
    assert (m["rows"], m["rows_unclicked"], m["labels"], m["label_seed"]) == (5, 3, "cvr_entire", None)
    y = np.array([1, 0, 1, 0, 1.0])
    assert m["cvr_logloss"] == pytest.approx(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))
    assert m["cvr_corr_true_pcvr"] == pytest.approx(np.corrcoef(p, [0.7, 0.1, 0.6, 0.2, 0.3])[0, 1])
    assert entire_space_metrics({"ctr": p}, test, TASKS[:1]) == {}  # no task defined on another
    with pytest.raises(ValueError, match="5 rows but 4 test predictions"):
        entire_space_metrics({"cvr": p[:4]}, test, TASKS)


def test_drawn_labels_are_fixed_by_the_data(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    q = rng.uniform(0.05, 0.6, 400).round(4)
    cols = {"click": (rng.random(400) < 0.3).astype(int).tolist(), "conversion": [0] * 400,
            "true_pctr": [0.3] * 400, "true_pcvr": q.tolist()}
    test = _write(tmp_path / "test.csv", cols)
    (tmp_path / "meta.json").write_text(json.dumps({"seed": 7}))
    p = {"cvr": rng.random(400)}
    a = entire_space_metrics(p, test, TASKS)
    assert a == entire_space_metrics(p, test, TASKS) and a["labels"] == "drawn"
    assert a["label_seed"] == label_seed(test, 400)
    (tmp_path / "meta.json").write_text(json.dumps({"seed": 8}))  # another simulator seed: other labels
    assert label_seed(test, 400) != a["label_seed"] and label_seed(test, 401) != a["label_seed"]
    assert not has_ground_truth(_write(tmp_path / "plain.csv", {"click": [1], "true_pctr": [0.5]}))
    assert has_ground_truth(test)


def _entire_space(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text()).get("test_entire_space")


def test_runs_of_two_seeds_share_labels_and_data_root_runs_score(tmp_path: Path) -> None:
    from mtl_final.data.simulator import ensure_simulated
    from mtl_final.train.__main__ import main as train_main

    cache = tmp_path / "cache"
    root = ensure_simulated(cache, n_rows=3_000, seed=4)
    common = ["--tasks", "ctr,cvr", "model=esmm", f"data.cache_dir={cache}", "train.epochs=1",
              "train.batch_size=256", "train.progress=false", "train.tensorboard=false", "train.num_threads=1",
              "tower.hidden_units=[8]", "model.embedding_dim=4"]
    assert train_main(["--out", str(tmp_path / "sim"), *common, "data.simulator={n_rows: 3000, seed: 4}",
                       "seed=1"]) == 0
    assert train_main(["--out", str(tmp_path / "root"), *common, f"data.root={root}",
                       f"data.schema={root / 'schema.yaml'}", "seed=2"]) == 0
    a, b = _entire_space(tmp_path / "sim"), _entire_space(tmp_path / "root")
    assert a is not None and b is not None  # written for the data.root run on simulator files too
    assert a["labels"] == b["labels"] == "drawn" and a["label_seed"] == b["label_seed"] == label_seed(
        root / "test.parquet", 300)
    assert a["cvr_oracle_auc"] == b["cvr_oracle_auc"]  # the oracle sees only the labels: same labels
    assert a["cvr_auc"] != b["cvr_auc"]  # while the two runs' models differ
    assert a["rows"] == 300 and 0 < a["rows_unclicked"] < 300


def test_runs_without_ground_truth_write_no_entire_space_metrics(esmm_run) -> None:
    _, run, _ = esmm_run
    assert _entire_space(run) is None


def test_version2_run_scores_against_the_stored_labels(tmp_path: Path) -> None:
    from mtl_final.train.__main__ import main as train_main

    configs = Path(__file__).resolve().parents[1] / "configs" / "sequences"
    assert train_main(["--out", str(tmp_path / "run"), "--tasks", "ctr,cvr", "model=esmm",
                       f"data.cache_dir={tmp_path / 'cache'}", "data.simulator={n_rows: 4000, seed: 5, version: 2}",
                       f"data.schema={configs / 'sim2_schema_nohist.yaml'}", "train.epochs=1", "train.batch_size=256",
                       "train.progress=false", "train.tensorboard=false", "train.num_threads=1",
                       "tower.hidden_units=[8]", "model.embedding_dim=4"]) == 0
    es = _entire_space(tmp_path / "run")
    assert (es["labels"], es["label_seed"], es["rows"]) == ("cvr_entire", None, 400)
    assert 0 < es["rows_unclicked"] < 400 and es["cvr_oracle_auc"] > 0.5
