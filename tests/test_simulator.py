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


# ----------------------------------------------------------------------------- version 1 is frozen


def test_version1_rows_and_cache_key_are_frozen(tmp_path: Path) -> None:
    # digest of every column of a 5,000-row seed-9 dataset as generated before version 2 existed
    out = sim.simulate_funnel(tmp_path, n_rows=5_000, seed=9, version=1)
    h = hashlib.sha256()
    for split in sim.SPLIT_NAMES:
        df = pd.read_parquet(out / f"{split}.parquet")
        for col in df.columns:
            h.update(col.encode())
            h.update(df[col].to_numpy().tobytes())
    assert h.hexdigest() == "600352d74588f71c817c360f6badb4eccba79cb16e2ffb4f0e10f304038d0dca"
    assert sim.simulation_key(2_000, 1) == sim.simulation_key(2_000, 1, version=1) == "1d8e085accac49cb"
    assert sim.simulation_key(2_000, 1, format="csv") == "36690a79c9ec8452"
    assert sim.simulation_key(2_000, 1, version=2) != sim.simulation_key(2_000, 1)
    assert sorted(p.name for p in out.iterdir()) == [
        "meta.json", "schema.yaml", "test.parquet", "train.parquet", "valid.parquet"]


# ----------------------------------------------------------------------------- version 2

SEQ = [n for n, _ in sim.SEQUENCE_FIELDS]


@pytest.fixture(scope="module")
def v2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return sim.simulate_funnel(tmp_path_factory.mktemp("sim2") / "a", n_rows=N_SMALL, seed=3,
                               chunk_rows=10_000, version=2)


@pytest.fixture(scope="module")
def v2_rows(v2: Path) -> pd.DataFrame:
    return pd.concat([_read(v2, s) for s in sim.SPLIT_NAMES], ignore_index=True)


def _tokens(cells: pd.Series) -> list[list[int]]:
    return [[int(t) for t in c.split("|")] if isinstance(c, str) and c else [] for c in cells]


def test_v2_files_columns_and_meta(v2: Path, v2_rows: pd.DataFrame) -> None:
    assert sorted(p.name for p in v2.iterdir()) == [
        "meta.json", "schema.yaml", "schema_attention.yaml", "schema_nohist.yaml",
        "test.parquet", "train.parquet", "valid.parquet"]
    assert list(v2_rows.columns) == FEATURES + SEQ + ["click", "conversion", "true_pctr", "true_pcvr",
                                                      "cvr_entire"]
    meta = json.loads((v2 / "meta.json").read_text())
    assert meta["generator_version"] == "funnel-sim-2" and meta["hist_max_len"] == 30
    assert meta["features"] == FEATURES + SEQ
    assert meta["truth_columns"] == ["true_pctr", "true_pcvr", "cvr_entire"]
    lengths = np.array([len(t) for t in _tokens(v2_rows["hist_items"])])
    assert meta["mean_hist_len"] == pytest.approx(lengths.mean())
    assert meta["empty_hist_rate"] == pytest.approx((lengths == 0).mean())
    assert meta["cvr_entire_rate"] == pytest.approx(v2_rows["cvr_entire"].mean())
    assert 0.03 <= meta["click_rate"] <= 0.07 and 0.10 <= meta["cvr_given_click"] <= 0.20


def test_v2_schemas_declare_the_sequence_fields(v2: Path) -> None:
    mean = yaml.safe_load((v2 / "schema.yaml").read_text())
    att = yaml.safe_load((v2 / "schema_attention.yaml").read_text())
    nohist = yaml.safe_load((v2 / "schema_nohist.yaml").read_text())
    assert [f["name"] for f in mean["fields"]] == FEATURES + SEQ == [f["name"] for f in att["fields"]]
    assert mean["fields"][-2:] == [
        {"name": "hist_items", "type": "sequence", "separator": "|", "max_len": 30,
         "share_embedding": "item_id", "pooling": "mean"},
        {"name": "hist_cats", "type": "sequence", "separator": "|", "max_len": 30,
         "share_embedding": "item_category", "pooling": "mean"}]
    assert att["fields"][-2:] == [
        {"name": "hist_items", "type": "sequence", "separator": "|", "max_len": 30,
         "share_embedding": "item_id", "pooling": "attention", "target": "item_id"},
        {"name": "hist_cats", "type": "sequence", "separator": "|", "max_len": 30,
         "share_embedding": "item_category", "pooling": "attention", "target": "item_category"}]
    assert mean["fields"][:-2] == att["fields"][:-2] == nohist["fields"]
    assert mean["files"] == att["files"] == nohist["files"] and mean["tasks"] == nohist["tasks"]
    from mtl_final.data.schema import DatasetSchema  # the library loads the schema without histories

    assert [f.name for f in DatasetSchema.from_yaml(v2 / "schema_nohist.yaml").fields] == FEATURES


def test_v2_is_deterministic_and_independent_of_chunk_rows(v2: Path, tmp_path: Path) -> None:
    again = sim.simulate_funnel(tmp_path / "b", n_rows=N_SMALL, seed=3, chunk_rows=10_000, version=2)
    assert _digest(again) == _digest(v2)
    other = sim.simulate_funnel(tmp_path / "c", n_rows=N_SMALL, seed=3, chunk_rows=7_001, version=2)
    for split in sim.SPLIT_NAMES:
        pd.testing.assert_frame_equal(_read(v2, split), _read(other, split))
    v1, train = _read(sim.simulate_funnel(tmp_path / "v1", n_rows=N_SMALL, seed=3), "train"), _read(v2, "train")
    assert (v1["item_id"].to_numpy() != train["item_id"].to_numpy()).mean() > 0.3  # interest candidates
    assert (v1["true_pctr"].to_numpy() != train["true_pctr"].to_numpy()).mean() > 0.9


def test_v2_csv_matches_parquet(tmp_path: Path) -> None:
    a = _read(sim.simulate_funnel(tmp_path / "p", n_rows=3_000, seed=5, version=2), "train")
    b = _read(sim.simulate_funnel(tmp_path / "c", n_rows=3_000, seed=5, format="csv", version=2), "train")
    assert list(a.columns) == list(b.columns)
    for col in SEQ:  # an empty history is an empty cell
        assert _tokens(a[col]) == _tokens(b[col])
    np.testing.assert_array_equal(a["cvr_entire"], b["cvr_entire"])


def test_v2_histories_follow_the_interest_model(v2_rows: pd.DataFrame) -> None:
    world = sim.make_world(3, version=2)
    items, cats = _tokens(v2_rows["hist_items"]), _tokens(v2_rows["hist_cats"])
    lengths = np.array([len(t) for t in items])
    assert lengths.max() == 30 and [len(t) for t in cats] == lengths.tolist()
    assert 0.0 < (lengths == 0).mean() < 0.15 and 0.3 < (lengths == 30).mean() < 0.8
    flat = np.concatenate([t for t in items if t])
    assert flat.min() >= 0 and flat.max() < 15_000
    np.testing.assert_array_equal(world.item_category[flat], np.concatenate([t for t in cats if t]))
    # multi-interest: a full history spans several categories, its own interests dominate
    full = [c for c in cats if len(c) == 30]
    n_cats = np.array([len(set(c)) for c in full])
    assert 2 < n_cats.mean() < 15
    top_share = np.array([pd.Series(c).value_counts().iloc[0] / 30 for c in full])
    assert 0.3 < top_share.mean() < 0.9
    # half of the candidates come from the user's interests: their category is often in the history
    in_hist = np.array([c in set(h) for c, h in zip(v2_rows["item_category"], cats)])
    assert 0.35 < in_hist[lengths == 30].mean() < 0.9


def test_v2_history_is_a_window_of_one_stream_per_user() -> None:
    world = sim.make_world(3, version=2)
    hw = world.history
    user = int(np.argmax(hw.rate))  # the heaviest user: its history grows during the log
    rows = np.arange(0, 400_000, 997, dtype=np.int64)
    hist = sim.user_histories(world, np.full(rows.shape, user), rows)
    h = hw.n0[user] + np.floor(hw.rate[user] * rows).astype(np.int64)
    assert h[-1] - h[0] > 30
    checked = 0
    for a in range(len(rows) - 1):  # h grows by d < 30: the later window is the earlier one shifted by d
        d = int(h[a + 1] - h[a])
        if 0 < d < 30 and h[a] >= 30:
            np.testing.assert_array_equal(hist[a + 1][:30 - d], hist[a][d:])
            checked += 1
    assert checked > 10
    new_user = int(np.flatnonzero(hw.n0 == 0)[0])  # no past click at the start of the log
    assert (sim.user_histories(world, np.array([new_user]), np.array([0])) == -1).all()


def test_v2_conversion_is_click_times_cvr_entire(v2_rows: pd.DataFrame) -> None:
    df = v2_rows
    np.testing.assert_array_equal(df["conversion"], df["click"] * df["cvr_entire"])
    q = df["true_pcvr"].to_numpy(np.float64)
    assert abs(df["cvr_entire"].mean() - q.mean()) < 4 * np.sqrt((q * (1 - q)).sum()) / len(q)


def test_v2_selection_bias(v2_rows: pd.DataFrame) -> None:
    world = sim.make_world(3, version=2)
    bait = world.history.clickbait[v2_rows["item_id"].to_numpy()]
    df = v2_rows.assign(bait=np.sign(bait))
    by = df.groupby("bait")[["true_pctr", "true_pcvr"]].mean()
    assert by.loc[1.0, "true_pctr"] > 1.3 * by.loc[-1.0, "true_pctr"]  # clickbait: more clicks ...
    assert by.loc[1.0, "true_pcvr"] < 0.7 * by.loc[-1.0, "true_pcvr"]  # ... fewer conversions
    clicked = df["click"] == 1
    assert (df.loc[clicked, "bait"] == 1).mean() > 1.2 * (df["bait"] == 1).mean()  # over-sampled by clicks
    assert (df.loc[clicked, "bait"] == -1).mean() < 0.8 * (df["bait"] == -1).mean()  # niche: under-sampled


def test_v2_history_terms_matter_and_differ() -> None:
    world = sim.make_world(11, version=2)
    feats = sim.sample_features(world, np.random.default_rng(0), 20_000, first_row=100_000)
    comp = sim.logit_components(world, feats)["ctr"]
    z = world.ctr_bias + sum(comp.values())
    yy = (np.random.default_rng(1).random(z.shape[0]) < sim._sigmoid(z)).astype(int)
    hist = comp["history_mean"] + comp["history_target"]
    assert hist.std() > 0.7 * comp["second"].std()  # comparable to the 2nd-order terms
    assert _auc(yy, z) > _auc(yy, z - hist) + 0.02
    assert _auc(yy, z) > _auc(yy, z - comp["history_target"]) + 0.01
    # the target part is not a function of the mean part: binned on S it keeps much of its variance
    mean_part, target_part = sim.history_terms(world, feats)
    bins = np.quantile(mean_part, np.linspace(0, 1, 41))
    b = np.clip(np.searchsorted(bins, mean_part) - 1, 0, 39)
    fit = pd.Series(target_part).groupby(b).transform("mean").to_numpy()
    assert ((target_part - fit) ** 2).mean() > 0.2 * target_part.var()
    empty = (feats["hist_items"] < 0).all(1)
    assert empty.any() and (mean_part[empty] == 0).all() and (target_part[empty] == 0).all()


def test_v2_through_ensure_simulated_config_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from mtl_final.config import load_config

    cfg = load_config(None, ["data.simulator={n_rows: 1000, seed: 2, version: 2}"])
    root = sim.ensure_simulated(tmp_path / "cache", **cfg["data"]["simulator"])
    assert json.loads((root / "meta.json").read_text())["generator_version"] == "funnel-sim-2"
    assert root != sim.ensure_simulated(tmp_path / "cache", n_rows=1000, seed=2)
    mod = load_script("data_tools/simulate_funnel.py", name="simulate_funnel_cli")
    assert mod.main(["--out", str(tmp_path / "o"), "--rows", "1000", "--seed", "2", "--version", "2"]) == 0
    assert "wrote 1000 rows (funnel-sim-2)" in capsys.readouterr().out
    assert _digest(tmp_path / "o") == _digest(root)
    with pytest.raises(ValueError, match="version must be one of"):
        sim.simulate_funnel(tmp_path / "bad", n_rows=100, version=3)


def test_v2_benchmark_configs_and_schema_copies(v2: Path) -> None:
    from mtl_final.config import load_config

    folder = Path(__file__).resolve().parents[1] / "configs" / "sequences"
    for name in ("schema_nohist.yaml", "schema_attention.yaml"):  # the configs' copies of the simulator's
        assert (folder / f"sim2_{name}").read_text() == (v2 / name).read_text()
    schemas = {"nohist": "configs/sequences/sim2_schema_nohist.yaml", "mean": None,
               "attention": "configs/sequences/sim2_schema_attention.yaml"}
    for variant, schema in schemas.items():
        cfg = load_config(folder / f"sim2_esmm_{variant}.yaml")
        assert cfg["data"]["simulator"] == {"version": 2, "n_rows": 1_000_000, "seed": 7}
        assert cfg["data"]["schema"] == schema and cfg["data"]["root"] is None
        assert (cfg["model"]["name"], cfg["tower"]["kind"], cfg["tasks"]) == ("esmm", "final", ["ctr", "cvr"])
