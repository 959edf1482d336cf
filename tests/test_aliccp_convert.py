"""Tests of data_tools/aliccp_convert.py on the hand-written raw fixture in tests/fixtures/aliccp.

Fixture (\\x01 between entries, entry = field \\x02 feature_id \\x03 value):
  common_features_train: a1f0 -> 101:1001 124:3 125:7 109_14:500 127_14:7 109_14:501 129:44 127_14:8 127_14:7
                                 110_14:31 110_14:32 110_14:33  (history fields interleaved, a repeated id)
                         b2e1 -> 101:1002 129:45 124:2 109_14:600 150_14:4242
  sample_skeleton_train: 1 (1,0,a1f0) 205:9010 206:88 301:1 | 2 (1,1,b2e1) 205:9011 216:77 508:6001,6002
                         3 (0,0,a1f0) 205:9012 301:2 | 4 (0,0,ffff: unknown index) 205:9013
                         5 (1,0,b2e1) no features | 6 (0,0,b2e1) 205:9010 101:1999 207:55 109_14:901,900
  common_features_test:  c3d2 -> 101:1003 125:6 109_14:700,701
  sample_skeleton_test:  7 (1,1,c3d2) 205:9020 210:31 | 8 (0,0,c3d2) 205:9021 853:1.5e3 301:3
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests.support.scripts import load_script

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "aliccp"


ac = load_script("data_tools/aliccp_convert.py")

# Expected rows of the raw train / test splits: non-null field values, click, conversion.
TRAIN = [
    ({"101": "1001", "124": "3", "125": "7", "129": "44", "205": "9010", "206": "88", "301": "1"}, 1, 0),
    ({"101": "1002", "124": "2", "129": "45", "205": "9011", "216": "77", "508": "6001"}, 1, 1),
    ({"101": "1001", "124": "3", "125": "7", "129": "44", "205": "9012", "301": "2"}, 0, 0),
    ({"205": "9013"}, 0, 0),
    ({"101": "1002", "124": "2", "129": "45"}, 1, 0),
    ({"101": "1999", "124": "2", "129": "45", "205": "9010", "207": "55"}, 0, 0),  # own 101 wins
]
TEST = [
    ({"101": "1003", "125": "6", "205": "9020", "210": "31"}, 1, 1),
    ({"101": "1003", "125": "6", "205": "9021", "853": "1.5e3", "301": "3"}, 0, 0),
]


def _expected(rows: list[tuple[dict[str, str], int, int]], fields: tuple[str, ...]) -> pd.DataFrame:
    data = {f"f{f}": pd.Series([r[0].get(f) for r in rows], dtype=object) for f in fields}
    data["click"] = pd.Series([r[1] for r in rows], dtype=int)
    data["conversion"] = pd.Series([r[2] for r in rows], dtype=int)
    return pd.DataFrame(data)


def _read(path: Path) -> pd.DataFrame:
    if path.suffix == ".csv":
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        df = df.replace("", None)
    else:
        df = pd.read_parquet(path)
    df = df.astype(object).where(df.notna(), None)
    for col in ("click", "conversion"):
        df[col] = df[col].astype(int)
    return df


def _same(actual: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert list(actual.columns) == list(expected.columns)
    assert actual.to_dict("records") == expected.to_dict("records")


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_exact_values_default_fields(tmp_path: Path, fmt: str) -> None:
    rep = ac.convert_aliccp(FIXTURE, tmp_path, valid_fraction=0.0, format=fmt, chunk_rows=4)
    _same(_read(tmp_path / f"train.{fmt}"), _expected(TRAIN, ac.DEFAULT_FIELDS))
    _same(_read(tmp_path / f"test.{fmt}"), _expected(TEST, ac.DEFAULT_FIELDS))
    assert not (tmp_path / f"valid.{fmt}").exists()  # empty split: not written, not in the schema
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    assert schema["name"] == "aliccp"
    assert schema["files"] == {"train": f"train.{fmt}", "test": f"test.{fmt}"}
    assert schema["fields"] == [{"name": f"f{f}", "type": "categorical"} for f in ac.DEFAULT_FIELDS]
    assert schema["tasks"] == [{"name": "ctr", "label": "click"},
                               {"name": "cvr", "label": "conversion", "on": "ctr"}]
    assert rep.skeleton_rows_read == {"train": 6, "test": 2}
    assert rep.common_rows_read == {"train": 2, "test": 1}
    assert rep.samples_without_common == {"train": 1, "test": 0}
    assert rep.conversion_without_click == {"train": 0, "test": 0}
    assert {s: st.rows_written for s, st in rep.splits.items()} == {"train": 6, "valid": 0, "test": 2}
    assert (rep.splits["train"].clicks, rep.splits["train"].conversions) == (3, 1)
    assert rep.field_coverage["train"]["f205"] == pytest.approx(5 / 6)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["conversion_report.json", "schema.yaml", f"train.{fmt}", f"test.{fmt}"])


def test_first_id_of_multivalued_field_and_chunking(tmp_path: Path) -> None:
    fields = ("101", "109_14", "508")
    a = ac.convert_aliccp(FIXTURE, tmp_path / "a", fields=fields, valid_fraction=0.0, chunk_rows=1)
    ac.convert_aliccp(FIXTURE, tmp_path / "b", fields=fields, valid_fraction=0.0, chunk_rows=1000)
    train = _read(tmp_path / "a" / "train.parquet")
    # a history field keeps every id in order; the own ids of sample 6 win over its common ones
    assert train["f109_14"].tolist() == ["500|501", "600", "500|501", None, "600", "901|900"]
    assert train["f508"].tolist() == [None, "6001", None, None, None, None]  # 6001 before 6002
    _same(train, _read(tmp_path / "b" / "train.parquet"))
    assert a.skeleton_rows_read == {"train": 6, "test": 2}


def test_valid_split_is_deterministic_subset(tmp_path: Path) -> None:
    rep = ac.convert_aliccp(FIXTURE, tmp_path, valid_fraction=0.5, seed=3)
    is_valid = ac._unit_hash(np.arange(6, dtype=np.uint64), 3) < 0.5
    assert 0 < is_valid.sum() < 6  # the fixture exercises both sides
    expected = _expected(TRAIN, ac.DEFAULT_FIELDS)
    _same(_read(tmp_path / "train.parquet"), expected[~is_valid].reset_index(drop=True))
    _same(_read(tmp_path / "valid.parquet"), expected[is_valid].reset_index(drop=True))
    assert rep.splits["valid"].rows_written == int(is_valid.sum())
    assert yaml.safe_load((tmp_path / "schema.yaml").read_text())["files"]["valid"] == "valid.parquet"
    h = ac._unit_hash(np.arange(20_000, dtype=np.uint64), 3)
    assert 0.48 < (h < 0.5).mean() < 0.52  # the hash is uniform enough


BAD_SKELETON = [
    ("3,0,0,a1f0,2", "expected 6 comma-separated columns"),
    ("3,2,0,a1f0,1,205\x029012\x031.0", "click is not 0 or 1"),
    ("3,0,x,a1f0,1,205\x029012\x031.0", "conversion is not 0 or 1"),
    ("3,0,0,a1f0,3,205\x029012\x031.0\x01301\x022\x031.0", "num_features does not match"),
    ("3,0,0,a1f0,2,205\x0290121.0\x01301\x022\x031.0", "malformed feature entry"),
    ("3,0,0,a1f0,1,205\x029012\x03abc", "malformed feature entry"),
    ("3,0,0,a1f0,two,205\x029012\x031.0", "num_features is not a non-negative integer"),
]


@pytest.mark.parametrize("line,reason", BAD_SKELETON)
@pytest.mark.parametrize("chunk_rows", [2, 1000])
def test_malformed_skeleton_line(tmp_path: Path, line: str, reason: str, chunk_rows: int) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    skel = raw / "sample_skeleton_train.csv"
    lines = skel.read_bytes().split(b"\n")
    lines[2] = line.encode()  # line 3
    skel.write_bytes(b"\n".join(lines))
    with pytest.raises(ac.AliCCPFormatError, match=r"sample_skeleton_train\.csv:3: " + reason):
        ac.convert_aliccp(raw, tmp_path / "out", chunk_rows=chunk_rows)
    assert not any((tmp_path / "out").glob("*.parquet*"))  # nothing half-written is left


def test_malformed_common_line_and_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    common = raw / "common_features_train.csv"
    common.write_bytes(common.read_bytes() + b"d4\x02oops\n")
    with pytest.raises(ac.AliCCPFormatError, match=r"common_features_train\.csv:3: expected 3 comma"):
        ac.convert_aliccp(raw, tmp_path / "out")
    assert ac.main([str(raw), str(tmp_path / "out")]) == 2
    assert "common_features_train.csv:3" in capsys.readouterr().err
    assert ac.main([str(FIXTURE), str(tmp_path / "ok"), "--valid-fraction", "0"]) == 0
    out = capsys.readouterr().out
    assert "skeleton {'train': 6, 'test': 2}" in out and "train 6 rows" in out and "test 2 rows" in out


def test_duplicate_common_index(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    common = raw / "common_features_train.csv"
    common.write_bytes(common.read_bytes() + b"a1f0,1,101\x021\x031.0\n")
    with pytest.raises(ac.AliCCPFormatError, match=r"common_features_train\.csv:3: duplicate"):
        ac.convert_aliccp(raw, tmp_path / "out")


def test_schema_loads_with_library_loader(tmp_path: Path) -> None:
    from mtl_final.data.schema import DatasetSchema

    ac.convert_aliccp(FIXTURE, tmp_path, valid_fraction=0.5, seed=3)
    schema = DatasetSchema.from_yaml(tmp_path / "schema.yaml")
    assert [f.name for f in schema.categorical] == [f"f{f}" for f in ac.DEFAULT_FIELDS]
    assert [(t.name, t.label, t.on) for t in schema.tasks] == [("ctr", "click", None), ("cvr", "conversion", "ctr")]


def _raw_history(split: str, field_id: str) -> dict[str, list[str]]:
    """Brute force from the raw fixture: sample id -> the field's ids in raw order (own entries win)."""
    def ids(feature_list: str) -> list[str]:
        entries = [e.split("\x02") for e in feature_list.split("\x01") if e]
        return [rest.split("\x03")[0] for f, rest in entries if f == field_id]

    common = {}
    for ln in (FIXTURE / f"common_features_{split}.csv").read_text().splitlines():
        key, _, flist = ln.split(",", 2)
        common[key] = ids(flist)
    out = {}
    for ln in (FIXTURE / f"sample_skeleton_{split}.csv").read_text().splitlines():
        sid, _, _, key, _, flist = ln.split(",", 5)
        out[sid] = ids(flist) or common.get(key, [])
    return out


@pytest.mark.parametrize("fmt", ["parquet", "csv"])
def test_history_fields_round_trip_as_sequences(tmp_path: Path, fmt: str) -> None:
    fields = ("101", *ac.HISTORY_FIELDS, "205")
    rep = ac.convert_aliccp(FIXTURE, tmp_path, fields=fields, valid_fraction=0.0, format=fmt, chunk_rows=2)
    for split, raw_split in (("train", "train"), ("test", "test")):
        out = _read(tmp_path / f"{split}.{fmt}")
        for f in ac.HISTORY_FIELDS:
            raw = _raw_history(raw_split, f)
            cells = [c.split("|") if c else [] for c in out[f"f{f}"]]
            assert cells == list(raw.values()), f  # every raw id, in raw order, none dropped
            assert rep.sequence_values[raw_split][f"f{f}"] == sum(len(v) for v in raw.values())
            assert rep.sequence_max_len[raw_split][f"f{f}"] == max(len(v) for v in raw.values())
    train = _read(tmp_path / f"train.{fmt}")
    assert train["f127_14"].tolist() == ["7|8|7", None, "7|8|7", None, None, None]  # duplicates kept
    assert train["f110_14"].tolist()[0] == "31|32|33" and train["f150_14"].tolist()[1] == "4242"
    assert rep.sequence_values["train"] == {"f109_14": 8, "f110_14": 6, "f127_14": 6, "f150_14": 3}
    assert rep.sequence_max_len["test"] == {"f109_14": 2, "f110_14": 0, "f127_14": 0, "f150_14": 0}
    schema = yaml.safe_load((tmp_path / "schema.yaml").read_text())
    assert schema["fields"] == [{"name": "f101", "type": "categorical"}] + [
        {"name": f"f{f}", "type": "sequence", "separator": "|", "max_len": 50, "pooling": "mean"}
        for f in ac.HISTORY_FIELDS] + [{"name": "f205", "type": "categorical"}]
    report = json.loads((tmp_path / "conversion_report.json").read_text())
    assert report["sequence_values"] == rep.sequence_values


def test_history_id_with_the_separator_is_an_error(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    shutil.copytree(FIXTURE, raw)
    common = raw / "common_features_test.csv"
    common.write_bytes(common.read_bytes().replace(b"109_14\x02700", b"109_14\x027|00"))
    with pytest.raises(ac.AliCCPFormatError, match=r"common_features_test\.csv:1: a history feature id contains"):
        ac.convert_aliccp(raw, tmp_path / "out", fields=("109_14",))
