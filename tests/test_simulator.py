"""Tests of the deterministic ad-funnel simulator (mtl_final.data.simulator)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from mtl_final.data import simulator as sim
from tests.support.scripts import load_script

N_SMALL = 40_000  # > BLOCK_ROWS: spans two RNG blocks
FEATURES = [n for n, _ in sim.CATEGORICAL_FIELDS] + [n for n, _, _ in sim.NUMERIC_FIELDS]


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _read(folder: Path, split: str) -> pd.DataFrame:
    path = folder / f"{split}.parquet"
    return pd.read_parquet(path) if path.exists() else pd.read_csv(folder / f"{split}.csv")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim.simulate_funnel(tmp_path_factory.mktemp("sim") / "a", n_rows=N_SMALL, seed=3, chunk_rows=10_000)


@pytest.fixture(scope="module")
def rows50k(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """50k rows (all splits concatenated), seed 11."""
    out = sim.simulate_funnel(tmp_path_factory.mktemp("sim60k"), n_rows=50_000, seed=11)
    return pd.concat([_read(out, s) for s in sim.SPLIT_NAMES], ignore_index=True)


def test_same_seed_gives_identical_files(small: Path, tmp_path: Path) -> None:
    again = sim.simulate_funnel(tmp_path / "b", n_rows=N_SMALL, seed=3, chunk_rows=10_000)
    assert _digest(again) == _digest(small)
    assert sorted(p.name for p in small.iterdir()) == [
        "meta.json", "schema.yaml", "test.parquet", "train.parquet", "valid.parquet"]


def test_different_seed_differs(small: Path, tmp_path: Path) -> None:
    other = sim.simulate_funnel(tmp_path / "c", n_rows=N_SMALL, seed=4, chunk_rows=10_000)
    a, b = _read(small, "train"), _read(other, "train")
    assert a.shape == b.shape
    assert (a["user_id"].to_numpy() != b["user_id"].to_numpy()).mean() > 0.9
    assert not np.allclose(a["true_pctr"], b["true_pctr"])


def test_output_does_not_depend_on_chunk_rows(small: Path, tmp_path: Path) -> None:
    other = sim.simulate_funnel(tmp_path / "d", n_rows=N_SMALL, seed=3, chunk_rows=7_001)
    for split in sim.SPLIT_NAMES:
        pd.testing.assert_frame_equal(_read(small, split), _read(other, split))
    assert pq.ParquetFile(small / "train.parquet").metadata.num_row_groups == 4  # 32k rows / 10k
    assert pq.ParquetFile(other / "train.parquet").metadata.num_row_groups == 5  # 32k rows / 7001
    assert json.loads((small / "meta.json").read_text()) == json.loads((other / "meta.json").read_text())


def test_csv_matches_parquet(tmp_path: Path) -> None:
    pq_dir = sim.simulate_funnel(tmp_path / "p", n_rows=3_000, seed=5)
    csv_dir = sim.simulate_funnel(tmp_path / "c", n_rows=3_000, seed=5, format="csv")
    a, b = _read(pq_dir, "train"), _read(csv_dir, "train")
    assert list(a.columns) == list(b.columns)
    np.testing.assert_array_equal(a["user_id"], b["user_id"])
    np.testing.assert_array_equal(a["click"], b["click"])
    np.testing.assert_allclose(a["true_pctr"], b["true_pctr"], rtol=1e-6)
    np.testing.assert_array_equal(a["item_ctr_hist"].isna(), b["item_ctr_hist"].isna())
    assert "files: {train: train.csv, valid: valid.csv, test: test.csv}" in (csv_dir / "schema.yaml").read_text()


def test_schema_and_meta(small: Path) -> None:
    schema = yaml.safe_load((small / "schema.yaml").read_text())
    assert schema["files"] == {"train": "train.parquet", "valid": "valid.parquet", "test": "test.parquet"}
    assert [f["name"] for f in schema["fields"]] == FEATURES
    assert {f["type"] for f in schema["fields"][:11]} == {"categorical"}
    assert {f["type"] for f in schema["fields"][11:]} == {"numeric"}
    assert schema["tasks"] == [{"name": "ctr", "label": "click"},
                               {"name": "cvr", "label": "conversion", "on": "ctr"}]
    from mtl_final.data.schema import DatasetSchema  # the library's own loader accepts it

    loaded = DatasetSchema.from_yaml(small / "schema.yaml")
    assert [t.on for t in loaded.tasks] == [None, "ctr"]
    meta = json.loads((small / "meta.json").read_text())
    assert meta["rows"] == {"train": 32_000, "valid": 4_000, "test": 4_000}
    assert meta["n_rows"] == N_SMALL and meta["seed"] == 3
    assert meta["generator_version"] == sim.GENERATOR_VERSION
    train = _read(small, "train")
    assert list(train.columns) == FEATURES + ["click", "conversion", "true_pctr", "true_pcvr"]
    assert meta["per_split"]["train"]["click_rate"] == pytest.approx(train["click"].mean())


def test_labels_and_ground_truth(rows50k: pd.DataFrame) -> None:
    df = rows50k
    assert not ((df["conversion"] == 1) & (df["click"] == 0)).any()
    for col in ("true_pctr", "true_pcvr"):
        assert ((df[col] > 0) & (df[col] < 1)).all(), col
    p = df["true_pctr"].to_numpy(np.float64)
    se = np.sqrt((p * (1 - p)).sum()) / len(df)
    assert abs(df["click"].mean() - p.mean()) < 4 * se
    assert 0.04 <= p.mean() <= 0.06
    clicked = df[df["click"] == 1]
    q = clicked["true_pcvr"].to_numpy(np.float64)
    assert abs(clicked["conversion"].mean() - q.mean()) < 4 * np.sqrt((q * (1 - q)).sum()) / len(q)
    assert 0.10 <= clicked["conversion"].mean() <= 0.20
    # position bias: CTR falls with position, CVR does not depend on it
    by_pos = df.groupby("position")[["true_pctr", "true_pcvr"]].mean()
    assert by_pos["true_pctr"].iloc[0] > 2 * by_pos["true_pctr"].iloc[-1]
    assert abs(by_pos["true_pcvr"].iloc[0] - by_pos["true_pcvr"].iloc[-1]) < 0.01
    # a few missing numeric values, only in item_ctr_hist
    assert 0 < df["item_ctr_hist"].isna().mean() < 0.1
    assert not df[FEATURES].drop(columns="item_ctr_hist").isna().any().any()
    # Zipf-ish ids: the most frequent user / item is far above uniform
    assert df["user_id"].value_counts().iloc[0] > 50 * len(df) / 20_000
    assert df["item_id"].value_counts().iloc[0] > 50 * len(df) / 15_000


def _auc(y: np.ndarray, s: np.ndarray) -> float:
    """ROC AUC of scores s [n] for 0/1 labels y [n] (rank formula, ties averaged)."""
    ranks = pd.Series(s).rank().to_numpy()
    pos = y == 1
    n_pos, n_neg = pos.sum(), (~pos).sum()
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def test_planted_interactions_matter(rows50k: pd.DataFrame) -> None:
    from scipy import sparse
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import OneHotEncoder

    df = rows50k
    cats = [n for n, _ in sim.CATEGORICAL_FIELDS]
    x_cat = OneHotEncoder(handle_unknown="ignore").fit_transform(df[cats].to_numpy())
    num = np.log(df[["item_price", "user_activity"]].to_numpy(np.float64))
    num = (num - num.mean(0)) / num.std(0)
    x = sparse.hstack([x_cat, sparse.csr_matrix(num)]).tocsr()
    y = df["click"].to_numpy()
    tr, te = slice(0, 38_000), slice(38_000, None)
    lr = LogisticRegression(C=0.05, solver="liblinear", tol=1e-3).fit(x[tr], y[tr])
    auc_lr = _auc(y[te], lr.predict_proba(x[te])[:, 1])
    auc_truth = _auc(y[te], df["true_pctr"].to_numpy()[te])
    assert auc_truth > auc_lr + 0.05, (auc_truth, auc_lr)

    # The higher-order terms alone carry signal: dropping them from the true logit costs AUC.
    world = sim.make_world(11)
    feats = sim.sample_features(world, np.random.default_rng(0), 20_000)
    comp = sim.logit_components(world, feats)["ctr"]
    z = world.ctr_bias + sum(comp.values())
    yy = (np.random.default_rng(1).random(z.shape[0]) < sim._sigmoid(z)).astype(int)
    assert _auc(yy, z) > _auc(yy, z - comp["higher"]) + 0.02
    assert comp["higher"].std() > 0.3 * z.std()


def test_ensure_simulated_caches(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first = sim.ensure_simulated(tmp_path, n_rows=2_000, seed=1)
    assert first.parent == tmp_path and first.name.startswith("sim-")
    assert (first / "meta.json").is_file()
    stamp = (first / "train.parquet").stat().st_mtime_ns

    def boom(*args: object, **kwargs: object) -> Path:
        raise AssertionError("regenerated")

    monkeypatch.setattr(sim, "simulate_funnel", boom)
    assert sim.ensure_simulated(tmp_path, n_rows=2_000, seed=1, chunk_rows=500) == first  # chunk_rows not in key
    assert (first / "train.parquet").stat().st_mtime_ns == stamp
    with pytest.raises(AssertionError, match="regenerated"):
        sim.ensure_simulated(tmp_path, n_rows=2_000, seed=2)  # another key does generate
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temp folder left behind
    assert sim.simulation_key(2_000, 1, format="csv") != sim.simulation_key(2_000, 1)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    mod = load_script("data_tools/simulate_funnel.py", name="simulate_funnel_cli")
    assert mod.main(["--out", str(tmp_path / "o"), "--rows", "1000", "--seed", "2", "--format", "csv"]) == 0
    assert "wrote 1000 rows" in capsys.readouterr().out
    assert (tmp_path / "o" / "test.csv").is_file()


def test_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="splits"):
        sim.simulate_funnel(tmp_path, n_rows=100, splits=(0.5, 0.2, 0.2))
    with pytest.raises(ValueError, match="format"):
        sim.simulate_funnel(tmp_path, n_rows=100, format="json")  # type: ignore[arg-type]
