"""Schema and encoder defects: required splits, infinite train values, ``1e-3`` floats, field dtypes."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mtl_final.data import CategoricalEncoder, DataError, DatasetSchema, FeatureEncoders, FieldSpec, TaskSpec
from mtl_final.data.encoders import categorical_keys
from mtl_final.data.store import cache_key
from tests.support.data_files import arrays, assert_message, build, schema_dict, write_csv

REPO = Path(__file__).resolve().parents[1]
SPLITS = ("train", "valid", "test")


def write_schema(path: Path, body: dict) -> Path:
    path.write_text(yaml.safe_dump(body, sort_keys=False))
    return path


def write_splits(root: Path, header: str, rows: dict[str, list[str]]) -> Path:
    """One CSV per split; splits missing from ``rows`` get the train rows."""
    root.mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        write_csv(root / f"{split}.csv", header, rows.get(split, rows["train"]))
    return root


# ----------------------------------------------------------------------------- 1. splits
@pytest.mark.parametrize("files, parts", [
    ({"train": "train.csv", "valid": "valid.csv"},
     ["lacks the split(s) ['test'] (got ['train', 'valid'])", "Fix: add 'test: <file>' under 'files'"]),
    ({"train": "train.csv", "val": "valid.csv", "test": "test.csv"},
     ["lacks the split(s) ['valid']", "Fix: rename 'val' to 'valid', or add 'valid: <file>'"]),
    ({"valid": "valid.csv", "test": "test.csv"}, ["lacks the split(s) ['train']", "encoders are fitted on it"]),
    ({}, ["lacks the split(s) ['train', 'valid', 'test'] (got [])"]),
])
def test_schema_requires_train_valid_test(tmp_path: Path, files: dict, parts: list[str]) -> None:
    path = write_schema(tmp_path / "splits.yaml", schema_dict([{"name": "c", "type": "categorical"}], files=files))
    with pytest.raises(DataError) as err:  # no data file exists: the schema alone is rejected
        DatasetSchema.from_yaml(path)
    assert err.value.file == str(path)
    assert_message(err, f"file {path}: 'files' lacks", *parts)


def test_schema_constructor_requires_splits() -> None:
    with pytest.raises(DataError, match=r"lacks the split\(s\) \['valid', 'test'\]"):
        DatasetSchema("d", (FieldSpec("c", "categorical"),), (TaskSpec("ctr", "y"),), files={"train": "t.csv"})


def test_extra_split_is_allowed_and_encoded(tmp_path: Path) -> None:
    root = write_splits(tmp_path / "d", "click,c", {"train": ["1,a", "0,b"]})
    write_csv(root / "holdout.csv", "click,c", ["1,b", "0,z"])
    files = {s: f"{s}.csv" for s in (*SPLITS, "holdout")}
    store = build(schema_dict([{"name": "c", "type": "categorical"}], files=files), root, tmp_path / "cache")
    assert store.splits == ["train", "valid", "test", "holdout"]
    np.testing.assert_array_equal(store.split("holdout").cat[0], [2, 3])


# ----------------------------------------------------------------------------- 2. infinite train values
@pytest.mark.parametrize("cell", ["inf", "-inf", "1e400", "Infinity"])
def test_infinite_train_value_is_located_like_valid(tmp_path: Path, cell: str) -> None:
    good = ["1,1", "0,2", "1,3", "0,4"]
    bad = good[:2] + [f"1,{cell}"] + good[2:]
    fields = [{"name": "x", "type": "numeric", "norm": "standard"}]
    messages = {}
    for split in ("train", "valid"):
        root = write_splits(tmp_path / split, "click,x", {"train": good, split: bad})
        with pytest.raises(DataError) as err:
            build(schema_dict(fields), root, tmp_path / f"cache_{split}")
        assert (err.value.file, err.value.column, err.value.line, err.value.value) == (
            str(root / f"{split}.csv"), "x", 4, cell)
        messages[split] = str(err.value).replace(str(root / f"{split}.csv"), "FILE")
    assert messages["train"] == messages["valid"]
    assert messages["train"].startswith(f"file FILE, column 'x', line 4, value '{cell}': non-numeric (or infinite)")


def test_train_problems_counted_over_chunks(tmp_path: Path) -> None:
    rows = ["1,1", "0,inf", "1,3", "0,4", "1,abc", "0,6", "1,-inf"]
    root = write_splits(tmp_path / "d", "click,x", {"train": rows, "valid": ["1,1"], "test": ["0,1"]})
    with pytest.raises(DataError) as err:
        build(schema_dict([{"name": "x", "type": "numeric"}]), root, tmp_path / "cache", chunk_rows=2)
    assert_message(err, "train.csv", "line 3", "value 'inf'", "3 row(s) in this file, first at line(s) [3, 6, 8]")
    assert not list((tmp_path / "cache").iterdir())


# ----------------------------------------------------------------------------- 3. scientific floats
@pytest.mark.parametrize("text, value", [("1e-3", 0.001), ("-2.5E+2", -250.0), ("+3e0", 3.0), (".5e1", 5.0)])
def test_fill_na_scientific_notation(tmp_path: Path, text: str, value: float) -> None:
    path = tmp_path / "s.yaml"
    path.write_text("name: d\nfields:\n"
                    f"  - {{name: x, type: numeric, fill_na: {text}}}\n"
                    "tasks:\n  - {name: cvr, label: y, on: ctr}\n  - {name: ctr, label: v}\n")
    schema = DatasetSchema.from_yaml(path)
    assert schema.fields[0].fill_na == value and isinstance(schema.fields[0].fill_na, float)
    assert schema.task("cvr").on == "ctr"


@pytest.mark.parametrize("text, got", [('"1e-3"', "'1e-3'"), ("1e400", "inf")])
def test_fill_na_quoted_or_infinite_is_rejected(tmp_path: Path, text: str, got: str) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(f"name: d\nfields:\n  - {{name: x, type: numeric, fill_na: {text}}}\n"
                    "tasks:\n  - {name: ctr, label: y}\n")
    with pytest.raises(DataError) as err:
        DatasetSchema.from_yaml(path)
    assert_message(err, "s.yaml", f"fill_na must be a finite number or null, got {got}.", "Fix:")


# ----------------------------------------------------------------------------- 4. dtype: schema
def test_dtype_defaults_and_accepted_values() -> None:
    assert FieldSpec("c", "categorical").dtype == "str"
    assert FieldSpec("x", "numeric").dtype == "float"
    assert FieldSpec("c", "categorical", dtype="int").dtype == "int"
    assert FieldSpec("x", "numeric", dtype="float") == FieldSpec("x", "numeric")


@pytest.mark.parametrize("field, parts", [
    ({"name": "x", "type": "numeric", "dtype": "str"},
     ["field 'x' (numeric) has dtype 'str'; allowed: float.", "declare the field categorical"]),
    ({"name": "x", "type": "numeric", "dtype": "int"}, ["field 'x' (numeric) has dtype 'int'; allowed: float."]),
    ({"name": "c", "type": "categorical", "dtype": "float"},
     ["field 'c' (categorical) has dtype 'float'; allowed: str, int.", "Fix: use dtype str or int"]),
    ({"name": "c", "type": "categorical", "dtype": "int64"}, ["has dtype 'int64'; allowed: str, int."]),
    ({"name": "c", "type": "categorical", "dtype": 1}, ["has dtype 1; allowed: str, int."]),
])
def test_bad_dtype_is_a_schema_error(tmp_path: Path, field: dict, parts: list[str]) -> None:
    path = write_schema(tmp_path / "dt.yaml", schema_dict([field]))
    with pytest.raises(DataError) as err:
        DatasetSchema.from_yaml(path)
    assert_message(err, f"file {path}: ", *parts)


def test_dtype_enters_the_cache_key_only_when_not_default(tmp_path: Path) -> None:
    def schema(**dtype: str) -> DatasetSchema:
        return DatasetSchema.from_dict(schema_dict([{"name": "c", "type": "categorical", **dtype},
                                                    {"name": "x", "type": "numeric"}]))

    plain, as_str, as_int = schema(), schema(dtype="str"), schema(dtype="int")
    assert plain.to_dict()["fields"][0] == {"name": "c", "type": "categorical", "min_count": 1, "fill_na": None,
                                            "norm": "none"}  # unchanged, so existing cache keys hold
    assert as_int.to_dict()["fields"][0]["dtype"] == "int"
    assert DatasetSchema.from_dict(as_int.to_dict()) == as_int
    sources = {s: write_csv(tmp_path / f"{s}.csv", "click,c,x", ["1,1,1"]) for s in SPLITS}
    assert cache_key(plain, "error", sources) == cache_key(as_str, "error", sources)
    assert cache_key(plain, "error", sources) != cache_key(as_int, "error", sources)

    first = build(plain, tmp_path, tmp_path / "cache")
    again = build(as_int, tmp_path, tmp_path / "cache")
    assert not again.from_cache and again.path != first.path
    assert build(as_str, tmp_path, tmp_path / "cache").path == first.path


def test_dataset_configs_keep_their_canonical_form() -> None:
    for path in sorted((REPO / "configs" / "datasets").glob("*.yaml")):
        for f in DatasetSchema.from_yaml(path).to_dict()["fields"]:
            assert list(f) == ["name", "type", "min_count", "fill_na", "norm"], (path.name, f)


# ----------------------------------------------------------------------------- 4. dtype: encoding
def test_categorical_keys_int_canonical_form() -> None:
    cells = pd.Series(["7", "07", "+7", "7.0", "7.", " 7 ", "-0", "-012", "", None, "NA", "null", "1.5", "1e3",
                       "x", "0x7", "\u0663", "123456789012345678901234567890"])
    keys, missing, bad = categorical_keys(cells, "int")
    ok = ~missing & ~bad
    assert keys[ok].tolist() == ["7"] * 6 + ["0", "-12", "123456789012345678901234567890"]
    assert missing.tolist() == [False] * 8 + [True] * 4 + [False] * 6
    assert bad.tolist() == [False] * 12 + [True] * 5 + [False]
    s_keys, s_missing, s_bad = categorical_keys(cells, "str")
    assert s_keys[2] == "+7" and s_missing.sum() == 2 and not s_bad.any()


def test_int_dtype_merges_spellings_str_keeps_them(tmp_path: Path) -> None:
    rows = ["1,7", "0,07", "1,7.0", "0,3", "1,+3", "0,", "1,NA", "0,7"]
    root = write_splits(tmp_path / "d", "click,u", {"train": rows, "valid": ["1,007", "0,5", "1,-0"]})
    as_int = build(schema_dict([{"name": "u", "type": "categorical", "dtype": "int"}]), root, tmp_path / "c")
    enc = as_int.encoders.categorical[0]
    assert (enc.dtype, enc.vocab, enc.counts) == ("int", ["7", "3"], [4, 2])
    np.testing.assert_array_equal(as_int.split("train").cat[0], [1, 1, 1, 2, 2, 0, 0, 1])
    np.testing.assert_array_equal(as_int.split("valid").cat[0], [1, 3, 3])  # 5 and 0 unseen -> OOV 3
    assert as_int.report["splits"]["train"]["fields"]["u"] == {"missing": 2, "oov": 0}

    as_str = build(schema_dict([{"name": "u", "type": "categorical"}]), root, tmp_path / "c")
    assert as_str.encoders.categorical[0].vocab == ["7", "+3", "07", "3", "7.0", "NA"]
    np.testing.assert_array_equal(as_str.split("train").cat[0], [1, 3, 5, 4, 2, 0, 6, 1])


@pytest.mark.parametrize("split", ["train", "test"])
def test_non_integer_cell_with_int_dtype_is_located(tmp_path: Path, split: str) -> None:
    good = ["1,7,1", "0,3,2", "1,7,3"]
    root = write_splits(tmp_path / "d", "click,u,x", {"train": good, split: good[:2] + ["1,7.5,3", "0,abc,4"]})
    fields = [{"name": "u", "type": "categorical", "dtype": "int"}, {"name": "x", "type": "numeric"}]
    with pytest.raises(DataError) as err:
        build(schema_dict(fields), root, tmp_path / "cache")
    assert (err.value.file, err.value.column, err.value.line, err.value.value) == (
        str(root / f"{split}.csv"), "u", 4, "7.5")
    assert_message(err, "non-integer value in a categorical field with dtype int. 2 row(s) in this file, "
                        "first at line(s) [4, 5].", "Fix: clean the column, or set dtype: str")


def test_encoder_rejects_non_integer_without_raw_traceback() -> None:
    enc = CategoricalEncoder("u", dtype="int").fit(pd.Series(["1", "2"]))
    with pytest.raises(DataError) as err:
        enc.transform(pd.Series(["1", "x1", "y"]))
    assert (err.value.column, err.value.value) == ("u", "x1")
    assert_message(err, "2 non-integer value(s) in a categorical field with dtype int.")


def test_parquet_honours_dtype_like_csv(tmp_path: Path) -> None:
    df = pd.DataFrame({"click": [1, 0, 1, 0, 1], "u": [7, 3, 7, 12, 3], "f": [1.0, np.nan, 2.0, 1.0, 1.0]})
    csv_root, pq_root = tmp_path / "csv", tmp_path / "pq"
    write_splits(csv_root, "click,u,f", {"train": ["1,7,1.0", "0,3,", "1,7,2.0", "0,12,1.0", "1,3,1.0"]})
    pq_root.mkdir()
    for split in SPLITS:
        df.to_parquet(pq_root / f"{split}.parquet", index=False)
    pq_files = {s: f"{s}.parquet" for s in SPLITS}
    for dtype in ("str", "int"):
        fields = [{"name": "u", "type": "categorical", "dtype": dtype},
                  {"name": "f", "type": "categorical", "dtype": "int"}]
        a = build(schema_dict(fields), csv_root, tmp_path / "cache")
        b = build(schema_dict(fields, files=pq_files), pq_root, tmp_path / "cache")
        assert a.encoders.to_dict() == b.encoders.to_dict()
        for split in SPLITS:
            ra, rb = arrays(a, split), arrays(b, split)
            for k in ra:
                np.testing.assert_array_equal(ra[k], rb[k], err_msg=f"{dtype} {k}")
    assert b.encoders.categorical[1].vocab == ["1", "2"]  # float 1.0 (Parquet) and "1.0" (CSV) are both 1


def test_encoders_json_keeps_dtype_and_reads_old_files(tmp_path: Path) -> None:
    schema = DatasetSchema.from_dict(schema_dict([{"name": "u", "type": "categorical", "dtype": "int"},
                                                  {"name": "c", "type": "categorical"}]))
    enc = FeatureEncoders.from_schema(schema).fit([pd.DataFrame({"u": ["1", "01", "2"], "c": ["01", "1", "1"]})])
    enc.save(tmp_path / "enc.json")
    back = FeatureEncoders.load(tmp_path / "enc.json")
    assert [e.dtype for e in back.categorical] == ["int", "str"] and back.fields == schema.fields
    frame = pd.DataFrame({"u": ["001", "2", "3"], "c": ["01", "1", "001"]})
    np.testing.assert_array_equal(back.transform(frame)[0], [[1, 2], [2, 1], [3, 3]])

    old = json.loads((tmp_path / "enc.json").read_text())
    for e in old["categorical"]:
        del e["dtype"]
    del old["fields"][0]["dtype"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert [e.dtype for e in FeatureEncoders.load(tmp_path / "old.json").categorical] == ["str", "str"]
