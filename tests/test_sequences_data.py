"""Sequence fields on the data side: schema keys and errors, the sequence encoder (hand-computed ids,
truncation, shared vocabularies), Parquet list columns, the encoded store, batches and predict's encoding."""
from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from mtl_final.data import BatchLoader, DataError, DatasetSchema, FeatureEncoders, FieldSpec, TensorSplit
from mtl_final.data.encoders import SequenceEncoder, pad_last
from mtl_final.data.features import Batch, SequenceSpec
from mtl_final.data.store import cache_key
from tests.support.data_files import assert_message, build, schema_dict, write_csv

SPLITS = ("train", "valid", "test")
HIST = {"name": "hist", "type": "sequence", "max_len": 3, "share_embedding": "item", "pooling": "attention",
        "target": "item"}
TAGS = {"name": "tags", "type": "sequence", "separator": " ", "max_len": 2, "min_count": 2}
FIELDS = [{"name": "item", "type": "categorical"}, HIST, TAGS]
# train: item x3 y1; hist adds w3 (only in histories) x1 y2 v1; tags a3 b3 c1 (rare)
TRAIN = ["1,x,w|x|y|w,a b", "0,y,,a", "1,x,w||v,c b a", "0,x,y,b"]
VALID = ["1,z,x|u,a c", "0,x,w,"]


def write_splits(root: Path, rows: dict[str, list[str]], header: str = "click,item,hist,tags") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_csv(root / f"{split}.csv", header, rows.get(split, rows["train"]))
    return root


@pytest.fixture
def seq_store(tmp_path: Path):
    root = write_splits(tmp_path / "d", {"train": TRAIN, "valid": VALID})
    return build(schema_dict(FIELDS), root, tmp_path / "cache")


# ----------------------------------------------------------------------------- schema
def test_schema_sequence_keys_defaults_and_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(schema_dict([{"name": "item", "type": "categorical"}, HIST,
                                                {"name": "genres", "type": "sequence", "max_len": 6}])))
    s = DatasetSchema.from_yaml(path)
    hist, genres = s.sequences
    assert (hist.separator, hist.pooling, hist.attention_units, hist.attention_activation) == ("|", "attention", (36,),
                                                                                               "sigmoid")
    assert (genres.separator, genres.pooling, genres.target, genres.attention_units) == ("|", "mean", None, None)
    assert s.to_dict()["fields"][1] == {"name": "hist", "type": "sequence", "min_count": 1, "fill_na": None,
                                        "norm": "none", "separator": "|", "max_len": 3, "share_embedding": "item",
                                        "pooling": "attention", "target": "item", "attention_units": [36],
                                        "attention_activation": "sigmoid"}
    assert DatasetSchema.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    assert s.to_dict()["fields"][0] == {"name": "item", "type": "categorical", "min_count": 1, "fill_na": None,
                                        "norm": "none"}  # no sequence keys: cache keys of old schemas hold


@pytest.mark.parametrize("field, parts", [
    ({"share_embedding": "itme"}, ["field 'hist': share_embedding 'itme' is not a declared field",
                                   "Fix: set share_embedding: item."]),
    ({"share_embedding": "x"}, ["share_embedding 'x' is a numeric field", "must name a categorical field"]),
    ({"pooling": "attention", "target": "nope"}, ["target 'nope' is not a declared field"]),
    ({"pooling": "attention", "target": "item"}, ["target 'item' is not in the sequence's table space",
                                                  "Fix: set share_embedding: item on 'hist'"]),
    ({"pooling": "attention"}, ["has pooling attention but no target", "Fix: set target"]),
    ({"target": "item", "share_embedding": "item"}, ["sets target but its pooling is mean (attention only)"]),
    ({"attention_units": [8]}, ["sets attention_units but its pooling is mean"]),
    ({"max_len": None}, ["is a sequence without max_len"]),
    ({"max_len": 0}, ["max_len must be an integer >= 1, got 0"]),
    ({"separator": ""}, ["separator must be a non-empty string"]),
    ({"pooling": "avg"}, ["unknown pooling 'avg'", "mean, sum, max, attention"]),
    ({"share_embedding": "item", "min_count": 3}, ["shares the vocabulary of 'item' but sets min_count"]),
    ({"share_embedding": "item", "dtype": "int"}, ["(dtype int) shares the vocabulary of 'item' (dtype str)",
                                                   "Fix: set dtype: str on 'hist'."]),
    ({"fill_na": 0}, ["is sequence but sets fill_na (numeric only)"]),
    ({"pooling": "attention", "target": "item", "share_embedding": "item", "attention_activation": "tanh"},
     ["unknown attention_activation 'tanh'"]),
    ({"vocab": 3}, ["unknown key 'vocab' in fields[2]", "allowed keys:"]),
])
def test_schema_sequence_errors_name_file_and_key(tmp_path: Path, field: dict, parts: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    hist = {k: v for k, v in {"name": "hist", "type": "sequence", "max_len": 3, **field}.items() if v is not None}
    path.write_text(yaml.safe_dump(schema_dict([{"name": "item", "type": "categorical"},
                                                {"name": "x", "type": "numeric"}, hist])))
    with pytest.raises(DataError) as err:
        DatasetSchema.from_yaml(path)
    assert err.value.file == str(path)
    assert_message(err, *parts)


def test_sequence_keys_on_other_fields_are_errors() -> None:
    with pytest.raises(DataError) as err:
        FieldSpec("c", "categorical", max_len=3, separator=",")
    assert_message(err, "field 'c' is categorical but sets separator, max_len (sequence fields only)",
                   "declare it type: sequence")


# ----------------------------------------------------------------------------- encoder
def test_sequence_encoder_hand_computed_ids() -> None:
    enc = SequenceEncoder("s", max_len=2)
    enc.partial_fit(pd.Series(["b|a|c", "a"])).partial_fit(pd.Series(["", "a||b", None])).finalize()
    assert enc.vocab.vocab == ["a", "b", "c"] and enc.vocab.counts == [3, 2, 1]  # counts merged over chunks
    assert enc.vocab_size == 5 and enc.oov_index == 4
    out = enc.transform(pd.Series(["b|a|c", "a", "", "a||b", None, "z|a", "|"]))
    assert out.dtype == np.int64
    assert out.tolist() == [[1, 3],  # b a c: the last two, left-aligned
                            [1, 0],  # padding at the end
                            [0, 0],  # empty cell: all padding
                            [1, 2],  # the empty value is skipped
                            [0, 0],  # null
                            [4, 1],  # unseen z -> OOV
                            [0, 0]]  # only empty values
    assert enc.n == {"rows": 7, "values": 8, "truncated_rows": 1, "truncated_values": 1, "oov": 1,
                     "empty_rows": 3, "skipped_empty": 3}


def test_truncation_keeps_the_last_values_in_time_order() -> None:
    enc = SequenceEncoder("s", max_len=5)
    enc.partial_fit(pd.Series(["a|b|c|d|e|f|g"])).finalize()
    ids = {v: i + 1 for i, v in enumerate(enc.vocab.vocab)}
    out = enc.transform(pd.Series(["a|b|c", "a|b|c|d|e|f|g", "a|b|c|d|e"]))
    assert out.tolist() == [[ids["a"], ids["b"], ids["c"], 0, 0], [ids[v] for v in "cdefg"], [ids[v] for v in "abcde"]]
    assert (enc.n["truncated_rows"], enc.n["truncated_values"]) == (1, 2)
    rows = pad_last(np.arange(1, 11), np.array([3, 0, 7]), 4)
    assert rows.tolist() == [[1, 2, 3, 0], [0, 0, 0, 0], [7, 8, 9, 10]]


def test_min_count_and_int_dtype() -> None:
    rare = SequenceEncoder("s", max_len=3, min_count=2)
    rare.partial_fit(pd.Series(["a|b|a", "b|c"])).finalize()
    assert rare.vocab.vocab == ["a", "b"]
    assert rare.transform(pd.Series(["c|a|b"])).tolist() == [[3, 1, 2]]  # c rare -> OOV 3
    as_int = SequenceEncoder("s", max_len=4, dtype="int")
    as_int.partial_fit(pd.Series(["07|7.0|+7", "3| nan |3"])).finalize()
    assert as_int.vocab.vocab == ["7", "3"] and as_int.vocab.counts == [3, 2]
    assert as_int.transform(pd.Series(["3|07|NA"])).tolist() == [[2, 1, 0, 0]]
    assert as_int.n["skipped_empty"] == 1
    with pytest.raises(DataError) as err:
        as_int.transform(pd.Series(["1|2", "3|x"]))
    assert_message(err, "column 's'", "value '3|x'", "non-integer value in a sequence field with dtype int")


def test_shared_vocabulary_is_fitted_on_both_fields(seq_store) -> None:
    item = seq_store.encoders.categorical[0]
    assert dict(zip(item.vocab, item.counts)) == {"x": 4, "w": 3, "y": 3, "v": 1}  # item x3 y1 + hist w3 x1 y2 v1
    assert item.vocab == ["x", "w", "y", "v"]  # w is only in histories, yet in the owner's vocabulary
    hist, tags = seq_store.encoders.sequences
    assert hist.vocab is item and hist.vocab_size == item.vocab_size == 6
    assert tags.vocab.vocab == ["a", "b"]  # its own vocabulary, min_count 2 (c once)
    assert seq_store.feature_spec.sequences == (
        SequenceSpec("hist", 3, 6, "item", "attention", "item", (36,), "sigmoid"),
        SequenceSpec("tags", 2, 4, None, "mean", None))
    assert seq_store.feature_spec.num_fields == 3
    assert seq_store.feature_spec.field_names == ["item", "hist", "tags"]
    split = seq_store.split("train")
    np.testing.assert_array_equal(split.cat[0], [1, 3, 1, 1])
    assert split.seq["hist"].dtype == np.int32 and split.seq["hist"].shape == (4, 3)
    assert split.seq["hist"].tolist() == [[1, 3, 2], [0, 0, 0], [2, 4, 0], [3, 0, 0]]  # w|x|y|w keeps x y w
    assert split.seq["tags"].tolist() == [[1, 2], [1, 0], [2, 1], [2, 0]]  # c b a keeps b a
    valid = seq_store.split("valid")
    np.testing.assert_array_equal(valid.cat[0], [5, 1])  # z unseen
    assert valid.seq["hist"].tolist() == [[1, 5, 0], [2, 0, 0]]  # u unseen -> the owner's OOV 5
    assert valid.seq["tags"].tolist() == [[1, 3], [0, 0]]


def test_report_counts(seq_store) -> None:
    fields = seq_store.report["splits"]["train"]["fields"]
    assert fields["hist"] == {"rows": 4, "values": 7, "truncated_rows": 1, "truncated_values": 1, "oov": 0,
                              "empty_rows": 1, "skipped_empty": 1}
    assert fields["tags"] == {"rows": 4, "values": 7, "truncated_rows": 1, "truncated_values": 1, "oov": 0,
                              "empty_rows": 0, "skipped_empty": 0}
    assert fields["item"] == {"missing": 0, "oov": 0}
    valid = seq_store.report["splits"]["valid"]["fields"]
    assert valid["hist"]["oov"] == 1 and valid["tags"] == {"rows": 2, "values": 2, "truncated_rows": 0,
                                                            "truncated_values": 0, "oov": 1, "empty_rows": 1,
                                                            "skipped_empty": 0}
    assert seq_store.meta["report"] == seq_store.report


# ----------------------------------------------------------------------------- Parquet lists
def _parquet_splits(root: Path, hist: pa.Array) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        pq.write_table(pa.table({"click": [1, 0, 1, 0], "item": ["7", "8", "7", "7"], "hist": hist}),
                       root / f"{split}.parquet")
    return root


@pytest.mark.parametrize("hist", [
    pa.array([["5", "7", "8", "5"], None, ["5", "", "9"], ["8"]], type=pa.list_(pa.string())),
    pa.array([[5, 7, 8, 5], [], [5, None, 9], [8]], type=pa.list_(pa.int64())),
    pa.array([["5", "7", "8", "5"], [], ["5", None, "9"], ["8"]], type=pa.large_list(pa.large_string())),
])
def test_parquet_list_columns_equal_separated_strings(tmp_path: Path, hist: pa.Array) -> None:
    files = {s: f"{s}.parquet" for s in SPLITS}
    fields = [{"name": "item", "type": "categorical", "dtype": "int"}, {**HIST, "dtype": "int"}]
    lists = build(schema_dict(fields, files=files), _parquet_splits(tmp_path / "pq", hist), tmp_path / "c")
    text = _parquet_splits(tmp_path / "txt", pa.array(["5|7|8|5", None, "5||9", "8"]))
    strings = build(schema_dict(fields, files=files), text, tmp_path / "c")
    assert lists.encoders.to_dict() == strings.encoders.to_dict()
    np.testing.assert_array_equal(lists.split("test").seq["hist"], strings.split("test").seq["hist"])
    # vocabulary 7 (4 times with the item column) 5 8 9: 5|7|8|5 keeps 7 8 5
    assert lists.split("test").seq["hist"].tolist() == [[1, 3, 2], [0, 0, 0], [2, 4, 0], [3, 0, 0]]
    for split in SPLITS:
        assert lists.report["splits"][split]["fields"] == strings.report["splits"][split]["fields"]
    assert lists.report["splits"]["test"]["fields"]["hist"]["skipped_empty"] == 1


def test_nested_list_and_list_declared_categorical_name_file_and_column(tmp_path: Path) -> None:
    root = tmp_path / "d"
    root.mkdir()
    for split in SPLITS:
        pq.write_table(pa.table({"click": [1, 0], "item": ["a", "b"], "hist": pa.array([[["a"]], [["b", "c"]]])}),
                       root / f"{split}.parquet")
    files = {s: f"{s}.parquet" for s in SPLITS}
    with pytest.raises(DataError) as err:
        build(schema_dict([{"name": "item", "type": "categorical"}, HIST], files=files), root, tmp_path / "c")
    assert (err.value.file, err.value.column) == (str(root / "train.parquet"), "hist")
    assert_message(err, "list<element: list<element: string>>", "a nested list cannot be a sequence")
    with pytest.raises(DataError) as err:
        build(schema_dict([{"name": "item", "type": "categorical"}, {"name": "hist", "type": "categorical"}],
                          files=files), root, tmp_path / "c")
    assert (err.value.file, err.value.column) == (str(root / "train.parquet"), "hist")
    assert_message(err, "which has no text form", "flatten", "declare the field type: sequence")


def test_bad_int_value_in_a_sequence_names_file_column_and_line(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "d", {"train": ["1,7,7|8", "0,8,8"], "valid": ["1,7,7|8", "0,8,8|x|9", "1,7,y"]},
                        header="click,item,hist")
    fields = [{"name": "item", "type": "categorical", "dtype": "int"}, {**HIST, "dtype": "int"}]
    with pytest.raises(DataError) as err:
        build(schema_dict(fields), root, tmp_path / "c")
    assert (err.value.file, err.value.column, err.value.line, err.value.value) == (
        str(root / "valid.csv"), "hist", 3, "8|x|9")
    assert_message(err, "is not an integer. 2 row(s) in this file, first at line(s) [3, 4].")


# ----------------------------------------------------------------------------- store, batches, encoders.json
def test_store_round_trip_equals_transform(seq_store, tmp_path: Path) -> None:
    again = build(schema_dict(FIELDS), tmp_path / "d", tmp_path / "cache")
    assert again.from_cache and again.path == seq_store.path
    assert isinstance(again.split("train").seq["hist"], np.memmap)
    raw = pd.read_csv(tmp_path / "d" / "valid.csv", dtype=str, keep_default_na=False)
    rows = again.encoders.transform(raw)
    tensors = again.tensors("valid")
    assert set(tensors.seq) == {"hist", "tags"}
    for name, ids in rows.seq.items():
        assert tensors.seq[name].dtype == torch.int32 and tensors.seq[name].shape == ids.shape
        np.testing.assert_array_equal(tensors.seq[name].numpy(), ids)
    np.testing.assert_array_equal(tensors.cat.numpy(), rows.cat)


@pytest.mark.parametrize("change", [{"max_len": 4}, {"separator": ","}, {"pooling": "mean", "target": None}])
def test_cache_key_covers_sequence_keys(tmp_path: Path, change: dict) -> None:
    sources = {s: write_csv(tmp_path / f"{s}.csv", "click,item,hist", ["1,a,a"]) for s in SPLITS}
    base = DatasetSchema.from_dict(schema_dict([{"name": "item", "type": "categorical"}, HIST]))
    other = DatasetSchema.from_dict(schema_dict([{"name": "item", "type": "categorical"}, {**HIST, **change}]))
    assert cache_key(base, "error", sources) != cache_key(other, "error", sources)


def test_encoders_json_round_trip(seq_store, tmp_path: Path) -> None:
    stored = json.loads((seq_store.path / "encoders.json").read_text())
    hist, tags = stored["sequences"]
    assert hist == {"name": "hist", "max_len": 3, "separator": "|", "dtype": "str", "share_embedding": "item"}
    assert tags["share_embedding"] is None and tags["vocab"]["vocab"] == ["a", "b"]
    seq_store.encoders.save(tmp_path / "enc.json")
    back = FeatureEncoders.load(tmp_path / "enc.json")
    assert back.to_dict() == seq_store.encoders.to_dict() and back.feature_spec() == seq_store.feature_spec
    assert back.sequences[0].vocab is back.categorical[0]  # shared again, not a copy
    raw = pd.DataFrame({"item": ["x", "q"], "hist": ["w|v|q|x", None], "tags": ["b", "a a a"]})
    want, got = seq_store.encoders.transform(raw), back.transform(raw)
    cat, num = got  # still the (cat, num) pair
    np.testing.assert_array_equal(cat, want.cat)
    assert got.seq["hist"].tolist() == [[4, 5, 1], [0, 0, 0]] and got.seq["tags"].tolist() == [[2, 0], [1, 1]]
    assert all(np.array_equal(want.seq[k], got.seq[k]) for k in want.seq)


def _seq_split(n: int = 11) -> TensorSplit:
    ids = torch.arange(n)
    seq = torch.stack([ids * 10, ids * 10 + 1, torch.zeros(n, dtype=torch.long)], 1).int()
    return TensorSplit(ids[:, None], ids.float()[:, None], {"ctr": (ids % 2).float()}, {"s": seq})


def test_batch_loader_slices_seq_with_the_rows() -> None:
    data = _seq_split()

    def rows(loader: BatchLoader) -> list[int]:
        seen = []
        for b in loader:
            ids = b.cat[:, 0]
            assert b.seq["s"].dtype == torch.int64 and b.seq["s"].shape == (len(b), 3)
            assert torch.equal(b.seq["s"], data.seq["s"][ids].long())  # each row's own sequence
            seen += ids.tolist()
        return seen

    assert rows(BatchLoader(data, 4, shuffle=False)) == list(range(11))
    shuffled = BatchLoader(data, 4, shuffle=True, seed=3)
    assert rows(shuffled) == shuffled.order().tolist() != list(range(11))
    halves = [rows(BatchLoader(data, 4, shuffle=True, seed=3, shard=(r, 2))) for r in (0, 1)]
    assert sorted(halves[0] + halves[1]) == list(range(11))
    moved = next(iter(BatchLoader(data, 4, shuffle=False))).to("cpu")
    assert torch.equal(moved.seq["s"], data.seq["s"][:4].long())
    assert Batch(torch.zeros(2, 0), torch.zeros(2, 0)).seq == {}


# ----------------------------------------------------------------------------- predict
class _Recorder(torch.nn.Module):
    """Stands in for a model: records each batch and scores 0.5."""

    output_names = ["ctr"]

    def __init__(self) -> None:
        super().__init__()
        self.batches: list[Batch] = []

    def forward(self, batch: Batch) -> SimpleNamespace:
        self.batches.append(batch)
        return SimpleNamespace(probs={"ctr": torch.full((len(batch),), 0.5)})


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_predict_encodes_sequences_with_the_run_encoders(seq_store, tmp_path: Path, monkeypatch,
                                                         fmt: str) -> None:
    import mtl_final.predict as predict_mod

    model = _Recorder()
    monkeypatch.setattr(predict_mod, "load_run_model", lambda run: (model, seq_store.encoders, {}))
    rows = {"item": ["x", "q", "w"], "hist": ["w|x|y|v|q", "", "x||w"], "tags": ["a b c", "b", ""]}
    src = tmp_path / f"in.{fmt}"
    if fmt == "csv":
        pd.DataFrame(rows).to_csv(src, index=False)
    else:
        lists = {k: v for k, v in rows.items()}
        lists["hist"] = pa.array([["w", "x", "y", "v", "q"], [], ["x", "", "w"]])
        pq.write_table(pa.table(lists), src)
    summary = predict_mod.predict(tmp_path / "run", src, tmp_path / "out.csv", batch_size=2, log=None)
    seq = {k: torch.cat([b.seq[k] for b in model.batches]) for k in ("hist", "tags")}
    assert [len(b) for b in model.batches] == [2, 1] and seq["hist"].dtype == torch.int64
    want = seq_store.encoders.transform(pd.DataFrame(rows))
    assert all(np.array_equal(seq[k].numpy(), want.seq[k]) for k in seq)
    assert seq["hist"].tolist() == [[3, 4, 5], [0, 0, 0], [1, 2, 0]]  # w x y v q keeps y v q (q unseen: OOV 5)
    assert summary["oov"] == {"item": 1, "hist": 1, "tags": 1}
    assert summary["sequences"]["hist"] == {"rows": 3, "values": 7, "truncated_rows": 1, "truncated_values": 2,
                                            "oov": 1, "empty_rows": 1, "skipped_empty": 1}
    assert summary["sequences"]["tags"]["truncated_rows"] == 1 and summary["rows"] == 3
