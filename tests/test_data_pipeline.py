"""Tests of mtl_final.data: schema, encoders, reader, encoded store and batches (tiny hand-written files)."""
from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from mtl_final.data import (
    BatchLoader,
    CategoricalEncoder,
    DataError,
    DatasetSchema,
    EncodedStore,
    FeatureEncoders,
    FeatureSpec,
    TensorSplit,
    iter_chunks,
    read_header,
)
from mtl_final.data import reader as reader_mod
from mtl_final.data.batches import epoch_seed
from tests.support.data_files import arrays, assert_message, build, schema_dict, write_csv


# ----------------------------------------------------------------------------- helpers
FUNNEL_TASKS = [{"name": "ctr", "label": "visit"}, {"name": "cvr", "label": "conversion", "on": "ctr"}]


@pytest.fixture
def toy(tmp_path: Path) -> Path:
    """train / valid / test CSVs with a categorical and a numeric column."""
    root = tmp_path / "data"
    root.mkdir()
    header = "click,c,x"
    write_csv(root / "train.csv", header, ["1,b,1", "0,a,2", "1,b,", "0,,6", "1,c,3", "0,b,4", "1,a,5", "0,d,0"])
    write_csv(root / "valid.csv", header, ["1,a,1", "0,e,10", "1,,2"])
    write_csv(root / "test.csv", header, ["0,d,3", "1,b,-1"])
    return root


# ----------------------------------------------------------------------------- schema
def test_schema_yaml_roundtrip_and_helpers(tmp_path: Path) -> None:
    path = tmp_path / "hillstrom.yaml"
    path.write_text(
        "name: hillstrom\n"
        "files: {train: train.csv, valid: valid.csv, test: test.csv}\n"
        "fields:\n"
        "  - {name: recency, type: numeric, norm: log1p}\n"
        "  - {name: zip_code, type: categorical}\n"
        "  - {name: history, type: numeric, norm: standard, fill_na: 0}\n"
        "tasks:\n"
        "  - {name: ctr, label: visit}\n"
        "  - {name: cvr, label: conversion, on: ctr}\n")
    s = DatasetSchema.from_yaml(path)
    assert [f.name for f in s.categorical] == ["zip_code"]
    assert [f.name for f in s.numeric] == ["recency", "history"]
    assert s.numeric[1].fill_na == 0.0 and s.numeric[0].fill_na is None
    assert s.label_columns == ["visit", "conversion"]
    assert DatasetSchema.from_dict(s.to_dict()) == s
    assert DatasetSchema.from_dict(json.loads(json.dumps(s.to_dict()))).to_dict() == s.to_dict()

    cvr_only = s.select_tasks(["cvr"])
    assert [t.name for t in cvr_only.tasks] == ["cvr"]
    assert [t.name for t in cvr_only.parent_tasks] == ["ctr"]
    assert cvr_only.label_columns == ["conversion", "visit"]
    assert cvr_only.parent_label("cvr") == "visit"
    assert s.select_tasks(["ctr"]).label_columns == ["visit"]
    with pytest.raises(ValueError, match=r"declared tasks: \['ctr', 'cvr'\]"):
        s.select_tasks(["ctcvr"])


@pytest.mark.parametrize("body, parts", [
    ({"name": "d", "fields": [{"name": "a", "type": "categorical", "vocab": 3}], "tasks": [{"name": "t", "label": "y"}]},
     ["unknown key 'vocab'"]),
    ({"name": "d", "fields": [{"name": "a", "type": "categorial"}], "tasks": [{"name": "t", "label": "y"}]},
     ["unknown type 'categorial'"]),
    ({"name": "d", "fields": [{"name": "a", "type": "numeric"}, {"name": "a", "type": "categorical"}],
      "tasks": [{"name": "t", "label": "y"}]}, ["duplicate field names ['a']"]),
    ({"name": "d", "fields": [{"name": "a", "type": "numeric"}], "tasks": [{"name": "t", "label": "y", "on": "ctr"}]},
     ["'ctr', which is not a declared task"]),
    ({"name": "d", "fields": [{"name": "a", "type": "numeric"}], "tasks": [{"name": "t", "label": "y"}], "split": 1},
     ["unknown key 'split'"]),
])
def test_schema_validation_errors_name_key_and_file(tmp_path: Path, body: dict, parts: list[str]) -> None:
    import yaml

    path = tmp_path / "bad_schema.yaml"
    path.write_text(yaml.safe_dump(body))
    with pytest.raises(DataError) as err:
        DatasetSchema.from_yaml(path)
    assert_message(err, "bad_schema.yaml", *parts)


# ----------------------------------------------------------------------------- encoders
def test_categorical_vocab_padding_oov_and_min_count(toy: Path, tmp_path: Path) -> None:
    # train c: b x3, a x2, c x1, d x1, one empty cell
    fields = [{"name": "c", "type": "categorical"}]
    store = build(schema_dict(fields), toy, tmp_path / "cache")
    enc = store.encoders.categorical[0]
    assert enc.vocab == ["b", "a", "c", "d"]  # by count desc, then value
    assert store.feature_spec == FeatureSpec(categorical=(("c", 6),), numeric=())
    np.testing.assert_array_equal(store.split("train").cat[0], [1, 2, 1, 0, 3, 1, 2, 4])
    np.testing.assert_array_equal(store.split("valid").cat[0], [2, 5, 0])  # 'e' unseen -> OOV 5, '' -> 0
    np.testing.assert_array_equal(store.split("test").cat[0], [4, 1])
    assert store.report["splits"]["train"]["fields"]["c"] == {"missing": 1, "oov": 0}
    assert store.report["splits"]["valid"]["fields"]["c"] == {"missing": 1, "oov": 1}

    rare = build(schema_dict([{"name": "c", "type": "categorical", "min_count": 2}]), toy, tmp_path / "cache")
    assert rare.encoders.categorical[0].vocab == ["b", "a"]
    assert rare.feature_spec.categorical == (("c", 4),)
    np.testing.assert_array_equal(rare.split("train").cat[0], [1, 2, 1, 0, 3, 1, 2, 3])  # c, d rare -> OOV 3
    assert rare.report["splits"]["train"]["fields"]["c"] == {"missing": 1, "oov": 2}


def test_categorical_encoder_direct() -> None:
    enc = CategoricalEncoder("u")
    enc.partial_fit(pd.Series(["7", "7", "3"])).partial_fit(pd.Series([3, 7, None])).finalize()  # ints seen as strings
    assert enc.vocab == ["7", "3"] and enc.counts == [3, 2]
    out = enc.transform(pd.Series(["3", "9", None, ""]))
    assert out.dtype == np.int32
    np.testing.assert_array_equal(out, [2, 3, 0, 0])
    assert (enc.n_missing, enc.n_oov) == (2, 1)


def test_numeric_normalisation_matches_hand_computation(toy: Path, tmp_path: Path) -> None:
    fields = [
        {"name": "x", "type": "numeric", "norm": "standard", "fill_na": 1},
    ]
    # train x = 1, 2, NaN->1, 6, 3, 4, 5, 0
    store = build(schema_dict(fields), toy, tmp_path / "c1")
    tr = np.array([1, 2, 1, 6, 3, 4, 5, 0], dtype=np.float64)
    mean, std = tr.sum() / 8, math.sqrt(((tr - tr.sum() / 8) ** 2).sum() / 8)
    enc = store.encoders.numeric[0]
    assert enc.mean == pytest.approx(22 / 8) and enc.std == pytest.approx(std)
    np.testing.assert_allclose(store.split("train").num[0], (tr - mean) / std, rtol=1e-6)
    np.testing.assert_allclose(store.split("valid").num[0], (np.array([1, 10, 2]) - mean) / std, rtol=1e-6)
    assert store.report["splits"]["train"]["fields"]["x"] == {"filled_na": 1}

    store = build(schema_dict([{"name": "x", "type": "numeric", "norm": "minmax"}]), toy, tmp_path / "c2")
    # NaN -> 0.0 (default); train min 0, max 6; valid 10 is not clipped
    np.testing.assert_allclose(store.split("train").num[0], np.array([1, 2, 0, 6, 3, 4, 5, 0]) / 6, rtol=1e-6)
    np.testing.assert_allclose(store.split("valid").num[0], np.array([1, 10, 2]) / 6, rtol=1e-6)

    store = build(schema_dict([{"name": "x", "type": "numeric", "norm": "log1p"}]), toy, tmp_path / "c3")
    np.testing.assert_allclose(store.split("test").num[0], [math.log(4.0), -math.log(2.0)], rtol=1e-6)

    store = build(schema_dict([{"name": "x", "type": "numeric"}]), toy, tmp_path / "c4")
    np.testing.assert_array_equal(store.split("valid").num[0], np.array([1, 10, 2], dtype=np.float32))


def test_encoders_save_load_roundtrip(tmp_path: Path) -> None:
    schema = DatasetSchema.from_dict(schema_dict([
        {"name": "c", "type": "categorical", "min_count": 2},
        {"name": "x", "type": "numeric", "norm": "standard", "fill_na": 0.1},
        {"name": "y", "type": "numeric", "norm": "minmax"},
    ]))
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"c": rng.choice(["a", "b", "c", "zz"], 50), "x": rng.normal(3.3, 1.7, 50),
                       "y": rng.uniform(-1, 1, 50)})
    enc = FeatureEncoders.from_schema(schema).fit([df.iloc[:20], df.iloc[20:]])
    enc.save(tmp_path / "enc.json")
    back = FeatureEncoders.load(tmp_path / "enc.json")
    assert back.to_dict() == enc.to_dict()
    assert back.feature_spec() == enc.feature_spec()
    for a, b in zip(enc.transform(df), back.transform(df)):
        np.testing.assert_array_equal(a, b)
    assert enc.numeric[0].mean == back.numeric[0].mean  # exact float round trip


# ----------------------------------------------------------------------------- reader
def test_iter_chunks_crlf_line_numbers(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", "a,b,c", [f"{i},v{i},{i}.5" for i in range(8)], crlf=True)
    assert read_header(path) == ["a", "b", "c"]
    chunks = list(iter_chunks(path, ["c", "a"], chunk_rows=3))
    assert [(line, len(df)) for line, df in chunks] == [(2, 3), (5, 3), (8, 2)]
    assert list(chunks[0][1].columns) == ["c", "a"]
    assert chunks[-1][1]["c"].tolist() == ["6.5", "7.5"]  # no stray '\r'


# ----------------------------------------------------------------------------- cache
def test_cache_reused_without_parsing_and_invalidated(toy: Path, tmp_path: Path, monkeypatch) -> None:
    cache = tmp_path / "cache"
    schema = DatasetSchema.from_dict(schema_dict([{"name": "c", "type": "categorical"},
                                                  {"name": "x", "type": "numeric", "norm": "standard"}]))
    logs: list[str] = []
    first = EncodedStore.build_or_load(schema, toy, cache, log=logs.append)
    assert not first.from_cache and len(logs) == 1 and "built" in logs[0]
    ref = arrays(first, "valid")
    meta = json.loads((first.path / "meta.json").read_text())
    assert meta["splits"]["train"]["n_rows"] == 8 and meta["key"] == first.key
    assert (first.path / "train" / "c.bin").stat().st_size == 8 * 4
    assert (first.path / "train" / "label__click.bin").exists()
    assert first.path.name == f"toy-{first.key[:16]}"
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # no temporary leftovers

    def boom(*a, **k):
        raise AssertionError("source files were parsed")

    with monkeypatch.context() as m:
        m.setattr(reader_mod, "iter_chunks", boom)
        m.setattr(reader_mod, "read_header", boom)
        second = EncodedStore.build_or_load(schema, toy, cache, log=logs.append)
    assert second.from_cache and second.key == first.key and "loaded" in logs[1]
    assert isinstance(second.split("valid").cat[0], np.memmap)
    for k, v in arrays(second, "valid").items():
        np.testing.assert_array_equal(v, ref[k])
    assert second.report == first.report and second.feature_spec == first.feature_spec

    changed = build(schema.select_tasks(["ctr"]).to_dict() | {"fields": [{"name": "c", "type": "categorical"}]},
                    toy, cache)
    assert not changed.from_cache and changed.key != first.key

    st = (toy / "valid.csv").stat()
    os.utime(toy / "valid.csv", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # touch
    touched = build(schema, toy, cache)
    assert not touched.from_cache and touched.key != first.key

    write_csv(toy / "valid.csv", "click,c,x", ["1,a,1", "0,b,10", "1,q,2"])
    modified = build(schema, toy, cache)
    assert not modified.from_cache and modified.key not in (first.key, touched.key)
    np.testing.assert_array_equal(modified.split("valid").cat[0], [2, 1, 5])
    assert build(schema, toy, cache).from_cache


def test_failed_build_leaves_no_cache(toy: Path, tmp_path: Path) -> None:
    write_csv(toy / "test.csv", "click,c,x", ["0,d,3", "1,b,oops"])
    cache = tmp_path / "cache"
    with pytest.raises(DataError):
        build(schema_dict([{"name": "x", "type": "numeric"}]), toy, cache)
    assert list(cache.iterdir()) == []


# ----------------------------------------------------------------------------- validation
def _bad_case(root: Path, case: str) -> tuple[dict, list[str], dict]:
    header = "click,c,x"
    good = ["1,b,1", "0,a,2", "1,b,3", "0,a,4", "1,c,5"]
    for split in ("train", "valid", "test"):
        write_csv(root / f"{split}.csv", header, good)
    fields = [{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]
    kw: dict = {}
    if case == "missing_field":
        write_csv(root / "valid.csv", "click,c", ["1,b", "0,a"])
        return schema_dict(fields), ["valid.csv", "'x'", "line 1", "add the column"], kw
    if case == "missing_label":
        write_csv(root / "test.csv", "clk,c,x", good)
        return schema_dict(fields), ["test.csv", "'click'", "line 1"], kw
    if case == "headers_differ":
        write_csv(root / "valid.csv", "click,c,x,extra", [r + ",9" for r in good])
        return schema_dict(fields), ["valid.csv", "'extra'", "line 1", "same columns"], kw
    if case == "non_numeric":
        write_csv(root / "valid.csv", header, good[:4] + ["1,b,abc", "0,a,7", "1,b,n/a?"])
        kw["chunk_rows"] = 2
        return schema_dict(fields), ["valid.csv", "'x'", "line 6", "'abc'", "2 row(s)"], kw
    if case == "non_numeric_train":
        write_csv(root / "train.csv", header, good[:2] + ["1,b,1e", "0,a,2"])
        return schema_dict(fields), ["train.csv", "'x'", "line 4", "'1e'", "1 row(s)"], kw
    if case == "label_empty":
        write_csv(root / "train.csv", header, good[:2] + [",b,3"])
        return schema_dict(fields), ["train.csv", "'click'", "line 4", "0/1"], kw
    if case == "label_not_binary":
        write_csv(root / "test.csv", header, ["1.0,b,1", "0.0,a,2", "2,a,2"])
        return schema_dict(fields), ["test.csv", "'click'", "line 4", "'2'"], kw
    if case == "empty_file":
        (root / "valid.csv").write_bytes(b"")
        return schema_dict(fields), ["valid.csv", "empty", "line 1"], kw
    if case == "header_only":
        write_csv(root / "test.csv", header, [])
        return schema_dict(fields), ["test.csv", "no data rows"], kw
    if case == "malformed_row":
        write_csv(root / "valid.csv", header, good[:2] + ["1,b,3,4"] + good[2:])
        return schema_dict(fields), ["valid.csv", "line 4", "expected 3 columns, got 4"], kw
    if case == "missing_file":
        (root / "test.csv").unlink()
        return schema_dict(fields), ["test.csv", "not found"], kw
    raise AssertionError(case)


@pytest.mark.parametrize("case", ["missing_field", "missing_label", "headers_differ", "non_numeric",
                                  "non_numeric_train", "label_empty", "label_not_binary", "empty_file",
                                  "header_only", "malformed_row", "missing_file"])
def test_bad_inputs_raise_data_error(tmp_path: Path, case: str) -> None:
    root = tmp_path / "data"
    root.mkdir()
    schema, parts, kw = _bad_case(root, case)
    with pytest.raises(DataError) as err:
        build(schema, root, tmp_path / "cache", **kw)
    assert_message(err, *parts, "Fix:")


def test_accepts_float_spelled_labels(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for split in ("train", "valid", "test"):
        write_csv(root / f"{split}.csv", "click,c", ["1.0,a", "0.0,b", "1,a", "0,b"])
    store = build(schema_dict([{"name": "c", "type": "categorical"}]), root, tmp_path / "cache")
    np.testing.assert_array_equal(store.split("test").labels["click"], [1, 0, 1, 0])
    assert store.split("test").labels["click"].dtype == np.float32


def _funnel_files(root: Path) -> None:
    header = "visit,conversion,g"
    write_csv(root / "train.csv", header, ["1,1,a", "0,1,b", "0,0,a", "0,1,a", "1,0,b", "0,0,b"])
    write_csv(root / "valid.csv", header, ["1,1,a", "0,0,b"])
    write_csv(root / "test.csv", header, ["0,0,a", "1,0,b"])


def test_funnel_rows_error_or_drop_and_count(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    _funnel_files(root)
    sd = schema_dict([{"name": "g", "type": "categorical"}], FUNNEL_TASKS)
    with pytest.raises(DataError) as err:
        build(sd, root, tmp_path / "cache")
    assert_message(err, "train.csv", "'conversion'", "line 3", "[3, 5]", "2 row(s)",
                   "data.invalid_funnel_rows=drop")

    store = build(sd, root, tmp_path / "cache", invalid_funnel_rows="drop")
    rep = store.report["splits"]["train"]
    assert rep["rows_read"] == 6 and rep["rows_kept"] == 4 and sum(rep["rows_dropped"].values()) == 2
    assert store.split("train").n_rows == 4
    t = store.tensors("train")
    np.testing.assert_array_equal(t.labels["ctr"].numpy(), [1, 0, 1, 0])
    np.testing.assert_array_equal(t.labels["cvr"].numpy(), [1, 0, 0, 0])
    np.testing.assert_array_equal(t.cat[:, 0].numpy(), [1, 1, 2, 2])  # a, a, b, b
    assert store.report["splits"]["valid"]["rows_dropped"] == {k: 0 for k in rep["rows_dropped"]}

    # cvr alone still loads (and checks) the visit column of its unselected parent
    schema = DatasetSchema.from_dict(sd).select_tasks(["cvr"])
    only = build(schema, root, tmp_path / "cache", invalid_funnel_rows="drop")
    assert [t.name for t in only.tasks] == ["cvr"] and only.task_labels == {"cvr": "conversion", "ctr": "visit"}
    assert set(only.split("train").labels) == {"conversion", "visit"}
    assert only.split("train").n_rows == 4


# ----------------------------------------------------------------------------- formats / chunks
def _mixed_frame() -> pd.DataFrame:
    return pd.DataFrame({
        "click": [1, 0, 0, 1, 1, 0, 1],
        "user": [5, 7, 5, 9, 7, 5, 11],
        "city": ["Rural", "Urban", None, "Rural", "Sub urban", "Urban", "Rural"],
        "hist": [1.5, np.nan, 3.25, -2.0, 100.0, 0.0, 7.125],
        "rec": [3, 4, 5, 6, 7, 8, 9],
    })


def _mixed_schema(tasks=None) -> dict:
    return schema_dict([
        {"name": "user", "type": "categorical"},
        {"name": "city", "type": "categorical"},
        {"name": "hist", "type": "numeric", "norm": "standard", "fill_na": 2},
        {"name": "rec", "type": "numeric", "norm": "log1p"},
    ])


def _write_mixed_csv(root: Path, df: pd.DataFrame) -> None:
    rows = [",".join("" if pd.isna(v) else (f"{v:g}" if isinstance(v, float) else str(v)) for v in r)
            for r in df.itertuples(index=False)]
    for split in ("train", "valid", "test"):
        write_csv(root / f"{split}.csv", ",".join(df.columns), rows, crlf=True)


def test_parquet_input_equals_csv_input(tmp_path: Path) -> None:
    df = _mixed_frame()
    csv_root, pq_root = tmp_path / "csv", tmp_path / "pq"
    csv_root.mkdir(), pq_root.mkdir()
    _write_mixed_csv(csv_root, df)
    for split in ("train", "valid", "test"):
        df.to_parquet(pq_root / f"{split}.parquet", index=False)
    a = build(_mixed_schema(), csv_root, tmp_path / "cache")
    b = build(_mixed_schema() | {"files": {s: f"{s}.parquet" for s in ("train", "valid", "test")}}, pq_root,
              tmp_path / "cache")
    assert a.key != b.key
    assert a.encoders.to_dict() == b.encoders.to_dict()
    for split in ("train", "valid", "test"):
        ra, rb = arrays(a, split), arrays(b, split)
        assert ra.keys() == rb.keys()
        for k in ra:
            np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)
    assert a.report["splits"]["train"]["fields"] == b.report["splits"]["train"]["fields"]
    assert a.report["splits"]["train"]["fields"]["city"] == {"missing": 1, "oov": 0}


def test_chunked_encoding_equals_single_chunk(tmp_path: Path) -> None:
    root = tmp_path / "csv"
    root.mkdir()
    _write_mixed_csv(root, _mixed_frame())
    one = build(_mixed_schema(), root, tmp_path / "c1")
    many = build(_mixed_schema(), root, tmp_path / "c3", chunk_rows=3)
    assert one.key == many.key  # chunk size does not change the result
    assert one.encoders.categorical[0].to_dict() == many.encoders.categorical[0].to_dict()
    assert one.report == many.report
    for split in ("train", "valid", "test"):
        ra, rb = arrays(one, split), arrays(many, split)
        for k in ra:
            if k.startswith("num:"):  # streaming mean/std merge may differ in the last float bit
                np.testing.assert_allclose(ra[k], rb[k], rtol=1e-6, atol=1e-7, err_msg=k)
            else:
                np.testing.assert_array_equal(ra[k], rb[k], err_msg=k)


# ----------------------------------------------------------------------------- tensors / batches
def _tensor_split(n: int = 10) -> TensorSplit:
    ids = torch.arange(n)
    return TensorSplit(cat=torch.stack([ids, ids * 2], 1), num=ids.float().unsqueeze(1) / 10,
                       labels={"ctr": (ids % 2).float(), "cvr": (ids % 3 == 0).float()})


def test_to_tensors_shapes_and_dtypes(toy: Path, tmp_path: Path) -> None:
    store = build(schema_dict([{"name": "c", "type": "categorical"}, {"name": "x", "type": "numeric"}]), toy,
                  tmp_path / "cache")
    t = store.split("train").to_tensors({"ctr": "click"})
    assert t.cat.dtype == torch.int64 and t.cat.shape == (8, 1)
    assert t.num.dtype == torch.float32 and t.num.shape == (8, 1)
    assert t.labels["ctr"].dtype == torch.float32 and t.labels["ctr"].tolist() == [1, 0, 1, 0, 1, 0, 1, 0]
    assert len(t) == 8


def test_batch_loader_covers_rows_deterministic_and_varies_by_epoch() -> None:
    data = _tensor_split(10)
    plain = BatchLoader(data, batch_size=3, shuffle=False)
    batches = list(plain)
    assert len(plain) == 4 and [len(b) for b in batches] == [3, 3, 3, 1]
    assert torch.cat([b.cat[:, 0] for b in batches]).tolist() == list(range(10))
    assert batches[0].cat.data_ptr() == data.cat.data_ptr()  # a view, no gather

    def order(loader: BatchLoader) -> list[int]:
        rows = []
        for b in loader:
            ids = b.cat[:, 0]
            assert torch.equal(b.cat[:, 1], ids * 2) and torch.equal(b.labels["ctr"], (ids % 2).float())
            assert torch.equal(b.labels["cvr"], (ids % 3 == 0).float()) and torch.allclose(b.num[:, 0], ids / 10)
            rows += ids.tolist()
        return rows

    shuf = BatchLoader(data, batch_size=3, shuffle=True, seed=7)
    e0 = order(shuf)
    assert sorted(e0) == list(range(10))
    assert order(shuf) == e0  # same epoch -> same order
    assert order(BatchLoader(data, batch_size=4, shuffle=True, seed=7)) == e0  # order independent of batch size
    shuf.set_epoch(1)
    e1 = order(shuf)
    assert sorted(e1) == list(range(10)) and e1 != e0
    shuf.set_epoch(0)
    assert order(shuf) == e0
    # each (seed, epoch) draws its own order: seed 8 in epoch 0 is not seed 7 in epoch 1 (as it was
    # when the generator was seeded with seed + epoch)
    assert order(BatchLoader(data, batch_size=3, shuffle=True, seed=8)) != e1
    gen = torch.Generator().manual_seed(int(np.random.SeedSequence([7, 1]).generate_state(1, dtype=np.uint64)[0]))
    assert e1 == torch.randperm(10, generator=gen).tolist()
    assert epoch_seed(-1, 0) == epoch_seed((1 << 64) - 1, 0)

    dl = BatchLoader(data, batch_size=3, shuffle=True, drop_last=True)
    assert len(dl) == 3 and [len(b) for b in dl] == [3, 3, 3]


# ----------------------------------------------------------------------------- real data
FRAPPE_FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]


def test_frappe_store_row_counts(shared_dataset, tmp_path: Path) -> None:
    root = shared_dataset("frappe_x1")
    schema = DatasetSchema.from_dict({"name": "frappe_x1",
                                      "fields": [{"name": f, "type": "categorical"} for f in FRAPPE_FIELDS],
                                      "tasks": [{"name": "ctr", "label": "label"}]})
    store = EncodedStore.build_or_load(schema, root, tmp_path / "cache", log=None)
    assert {s: store.split(s).n_rows for s in store.splits} == {"train": 202027, "valid": 57722, "test": 28860}
    assert int(np.asarray(store.split("train").labels["label"]).sum()) == 67604
    assert store.report["splits"]["train"]["positives"] == {"label": 67604}
    assert store.feature_spec.categorical[0] == ("user", 954 + 2)  # 3 of 957 users only in valid/test
