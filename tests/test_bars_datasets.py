"""Offline tests of data_tools/bars_datasets.py (file:// and localhost URLs only)."""
from __future__ import annotations

import hashlib
import http.server
import json
import subprocess
import sys
import threading
import zipfile
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "data_tools" / "bars_datasets.py"
sys.path.insert(0, str(TOOL.parent))
import bars_datasets as bd  # noqa: E402

UNREACHABLE = "http://127.0.0.1:9/x.zip"  # discard port: connection refused at once

# --------------------------------------------------------------------------- fixtures
HEADER = ("label", "user", "item", "daytime")
TINY = {
    "train.csv": "label,user,item,daytime\n1,0,10,3\n0,1,11,3\n0,2,10,4\n1,2,12,5\n",
    "valid.csv": "label,user,item,daytime\n1,0,11,3\n0,1,12,4\n",
    "test.csv": "label,user,item,daytime\n0,2,11,5\n",
}
TINY_ROWS = {"train": 4, "valid": 2, "test": 1}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def _tiny_info(md5=None, rows=None, name="Tiny_x1") -> bd.DatasetInfo:
    return bd.DatasetInfo(
        name=name,
        homepage="https://example.invalid/Tiny_x1",
        artifacts=(bd.Artifact(url=UNREACHABLE, filename="Tiny_x1.zip", extract="zip"),),
        files={"train": "train.csv", "valid": "valid.csv", "test": "test.csv"},
        rows=dict(rows or TINY_ROWS),
        header=HEADER,
        md5=dict(md5 if md5 is not None else {f: _md5(t) for f, t in TINY.items()}),
        schema="tiny.yaml",
    )


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """Register Tiny_x1 and build its CSVs, a zip of them (in a subfolder) and file:// URLs."""
    info = _tiny_info()
    monkeypatch.setitem(bd.REGISTRY, info.name, info)
    src = tmp_path / "mirror"
    src.mkdir()
    for fname, text in TINY.items():
        (src / fname).write_text(text)
    archive = src / "Tiny_x1.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("Tiny_x1/README.md", "tiny fixture\n")
        for fname, text in TINY.items():
            zf.writestr(f"Tiny_x1/{fname}", text)
    return {"info": info, "src": src, "zip_url": archive.as_uri(),
            "csv_urls": {f: (src / f).as_uri() for f in TINY}, "out": tmp_path / "data" / "Tiny_x1"}


# --------------------------------------------------------------------------- registry
def test_registry_has_the_four_x1_datasets():
    assert set(bd.REGISTRY) == {"Frappe_x1", "MovielensLatest_x1", "Criteo_x1", "Avazu_x1"}
    fr = bd.get_dataset("frappe_x1")
    assert fr.rows == {"train": 202_027, "valid": 57_722, "test": 28_860}
    assert ",".join(fr.header) == "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city"
    assert fr.md5 == {"train.csv": "ba7306e6c4fc19dd2cd84f2f0596d158",
                      "valid.csv": "88d51bf2173505436d3a8f78f2a59da8",
                      "test.csv": "3470f6d32713dc5f7715f198ca7c612a"}
    assert bd.get_dataset("MovielensLatest_x1").rows == {"train": 1_404_801, "valid": 401_372, "test": 200_686}
    assert bd.get_dataset("MovielensLatest_x1").header == ("label", "user_id", "item_id", "tag_id")
    cr = bd.get_dataset("Criteo_x1")
    assert cr.rows == {"train": 33_003_326, "valid": 8_250_124, "test": 4_587_167}
    assert cr.header == ("label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)])
    av = bd.get_dataset("Avazu_x1")
    assert av.rows == {"train": 28_300_276, "valid": 4_042_897, "test": 8_085_794}
    assert av.header == ("label", *[f"feat_{i}" for i in range(1, 23)])
    for info in bd.REGISTRY.values():
        art = info.artifacts[0]
        assert art.url == f"https://huggingface.co/datasets/reczoo/{info.name}/resolve/main/{info.name}.zip"
        assert art.extract == "zip"
        assert all(m is None or len(m) == 32 for m in info.md5.values())
    with pytest.raises(KeyError, match="Frappe_x1"):
        bd.get_dataset("Nope_x9")


# --------------------------------------------------------------------------- fetch
def test_fetch_zip_from_file_url_verifies_and_records_source(tiny):
    out = tiny["out"]
    result = bd.fetch("Tiny_x1", out, urls=[tiny["zip_url"]])
    assert result["status"] == "downloaded"
    for fname, text in TINY.items():
        assert (out / fname).read_text() == text
    assert not (out / "Tiny_x1.zip").exists() and not (out / ".download").exists()
    assert not (out / "README.md").exists()  # only the dataset's files are unpacked
    source = json.loads((out / "SOURCE.json").read_text())
    assert source["dataset"] == "Tiny_x1" and source["verified"] is True
    assert source["artifacts"][0]["url"] == tiny["zip_url"]
    assert source["artifacts"][0]["extracted"] == ["test.csv", "train.csv", "valid.csv"]
    assert source["files"]["train.csv"]["md5"] == _md5(TINY["train.csv"])
    assert source["files"]["train.csv"]["md5_ok"] is True
    assert source["files"]["valid.csv"]["rows"] == 2
    assert source["header"] == list(HEADER)


def test_fetch_is_idempotent_and_does_not_touch_the_network(tiny):
    out = tiny["out"]
    bd.fetch("Tiny_x1", out, urls=[tiny["zip_url"]])
    before = {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()}
    # the second call would fail if it tried to download anything
    again = bd.fetch("Tiny_x1", out, urls=[UNREACHABLE])
    assert again["status"] == "present"
    assert {p.name: (p.stat().st_mtime_ns, p.read_bytes()) for p in out.iterdir()} == before
    # files placed by hand (no SOURCE.json): fully verified, provenance written once
    (out / "SOURCE.json").unlink()
    third = bd.fetch("Tiny_x1", out, urls=[UNREACHABLE])
    assert third["status"] == "present" and third["checked"] == "full verification"
    assert json.loads((out / "SOURCE.json").read_text())["origin"].startswith("found in place")
    assert bd.fetch("Tiny_x1", out, urls=[UNREACHABLE])["status"] == "present"


def test_fetch_plain_csv_urls_and_missing_file_is_downloaded(tiny):
    out = tiny["out"]
    result = bd.fetch("Tiny_x1", out, urls=tiny["csv_urls"])
    assert result["status"] == "downloaded"
    assert [a["filename"] for a in result["artifacts"]] == list(TINY)
    # one file lost: fetch downloads again instead of complaining
    (out / "valid.csv").unlink()
    assert bd.fetch("Tiny_x1", out, urls=[tiny["zip_url"]])["status"] == "downloaded"
    assert (out / "valid.csv").read_text() == TINY["valid.csv"]


def test_fetch_unreachable_raises_dataset_unavailable_with_manual_instructions(tiny):
    out = tiny["out"]
    with pytest.raises(bd.DatasetUnavailable) as err:
        bd.fetch("Tiny_x1", out, urls=[UNREACHABLE], timeout=5)
    msg = str(err.value)
    assert "Could not download Tiny_x1" in msg and UNREACHABLE in msg
    for fname, text in TINY.items():
        assert str(out / fname) in msg
        assert _md5(text) in msg
    assert "label,user,item,daytime" in msg
    assert f"verify Tiny_x1 --dir {out}" in msg
    assert err.value.target_dir == out.absolute()
    assert [p.name for p in err.value.files] == ["train.csv", "valid.csv", "test.csv"]
    assert not any((out / f).exists() for f in TINY)


def test_fetch_default_registry_urls_are_used_when_no_override(tiny):
    # Tiny_x1's registry artifact points at the unreachable URL
    with pytest.raises(bd.DatasetUnavailable, match="127.0.0.1:9"):
        bd.fetch("Tiny_x1", tiny["out"], timeout=5)


def test_cli_unreachable_exits_2_without_traceback(tmp_path):
    out = tmp_path / "frappe"
    proc = subprocess.run(
        [sys.executable, str(TOOL), "fetch", "Frappe_x1", "--out", str(out), "--url", UNREACHABLE,
         "--timeout", "5", "--quiet"],
        capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(out / "train.csv") in proc.stderr
    assert "ba7306e6c4fc19dd2cd84f2f0596d158" in proc.stderr
    assert "label,user,item,daytime,weekday,isweekend,homework,cost,weather,country,city" in proc.stderr


def test_fetch_md5_mismatch_names_the_file_and_both_hashes(tiny, monkeypatch):
    wrong = "0" * 32
    md5 = {f: _md5(t) for f, t in TINY.items()} | {"valid.csv": wrong}
    monkeypatch.setitem(bd.REGISTRY, "Tiny_x1", _tiny_info(md5=md5))
    with pytest.raises(bd.VerificationError) as err:
        bd.fetch("Tiny_x1", tiny["out"], urls=[tiny["zip_url"]])
    msg = str(err.value)
    assert f"valid.csv: md5 mismatch: expected {wrong}, got {_md5(TINY['valid.csv'])}" in msg
    assert "train.csv" not in msg and "test.csv" not in msg
    assert err.value.bad_files == {"valid.csv": {"md5"}}
    # the same files pass with md5 checks off (header and rows still checked)
    assert bd.verify("Tiny_x1", tiny["out"], check_md5=False)["files"]["valid.csv"]["md5_ok"] is None


def test_fetch_archive_md5_mismatch(tiny):
    with pytest.raises(bd.VerificationError, match=r"Tiny_x1\.zip: md5 mismatch: expected f{32}, got [0-9a-f]{32}"):
        bd.fetch("Tiny_x1", tiny["out"], urls=[{"url": tiny["zip_url"], "md5": "f" * 32}])


def test_fetch_does_not_overwrite_wrong_files_unless_forced(tiny):
    out = tiny["out"]
    out.mkdir(parents=True)
    for fname, text in TINY.items():
        (out / fname).write_text(text)
    (out / "test.csv").write_text("label,user,item,daytime\n0,9,9,9\n")  # changed content
    with pytest.raises(bd.VerificationError, match="test.csv: md5 mismatch") as err:
        bd.fetch("Tiny_x1", out, urls=[tiny["zip_url"]])
    assert "--force" in str(err.value)
    assert bd.fetch("Tiny_x1", out, urls=[tiny["zip_url"]], force=True)["status"] == "downloaded"
    assert (out / "test.csv").read_text() == TINY["test.csv"]


def test_fetch_zip_without_the_files_is_reported(tiny, tmp_path):
    bad = tmp_path / "other.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("train.csv", TINY["train.csv"])
    with pytest.raises(bd.VerificationError, match=r"other\.zip: does not contain \['test.csv', 'valid.csv'\]"):
        bd.fetch("Tiny_x1", tiny["out"], urls=[bad.as_uri()])
    notzip = tmp_path / "page.zip"
    notzip.write_text("<html>rate limited</html>")
    with pytest.raises(bd.VerificationError, match="not a valid zip"):
        bd.fetch("Tiny_x1", tiny["out"], urls=[notzip.as_uri()])


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    payload = b""
    ranges: list = []

    def do_GET(self):  # noqa: N802
        data = self.payload
        rng = self.headers.get("Range")
        type(self).ranges.append(rng)
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            data = data[start:]
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_fetch_over_http_resumes_a_partial_download(tiny, tmp_path):
    payload = (tiny["src"] / "Tiny_x1.zip").read_bytes()
    _RangeHandler.payload, _RangeHandler.ranges = payload, []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        out = tiny["out"]
        (out / ".download").mkdir(parents=True)
        (out / ".download" / "Tiny_x1.zip.part").write_bytes(payload[:100])  # an interrupted earlier run
        url = f"http://127.0.0.1:{server.server_address[1]}/Tiny_x1.zip"
        result = bd.fetch("Tiny_x1", out, urls=[url])
    finally:
        server.shutdown()
        server.server_close()
    assert _RangeHandler.ranges == ["bytes=100-"]
    assert result["status"] == "downloaded"
    assert result["artifacts"][0]["md5"] == hashlib.md5(payload).hexdigest()
    assert (out / "train.csv").read_text() == TINY["train.csv"]


# --------------------------------------------------------------------------- verify
def _install(out: Path, **override: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for fname, text in (TINY | override).items():
        (out / fname).write_text(text)


def test_verify_reports_wrong_header_columns(tiny):
    out = tiny["out"]
    _install(out, **{"train.csv": TINY["train.csv"].replace("daytime", "hour", 1)})
    with pytest.raises(bd.VerificationError) as err:
        bd.verify("Tiny_x1", out, check_md5=False)
    msg = str(err.value)
    assert "train.csv: wrong header" in msg
    assert "missing columns ['daytime']" in msg and "unexpected columns ['hour']" in msg
    assert err.value.bad_files == {"train.csv": {"header"}}
    _install(out, **{"train.csv": TINY["train.csv"].replace("user,item", "item,user", 1)})
    with pytest.raises(bd.VerificationError, match="different order.*position 2: expected 'user', found 'item'"):
        bd.verify("Tiny_x1", out, check_md5=False)


def test_verify_reports_missing_files_and_row_counts(tiny, monkeypatch):
    out = tiny["out"]
    _install(out)
    (out / "test.csv").unlink()
    with pytest.raises(bd.VerificationError, match=r"test.csv: missing \(expected at .*test.csv\)"):
        bd.verify("Tiny_x1", out)
    _install(out)
    report = bd.verify("Tiny_x1", out)
    assert report["warnings"] == [] and report["files"]["train.csv"]["rows"] == 4
    # unknown md5: the row count decides
    monkeypatch.setitem(bd.REGISTRY, "Tiny_x1",
                        _tiny_info(md5={f: None for f in TINY}, rows=TINY_ROWS | {"train": 5}))
    with pytest.raises(bd.VerificationError, match="train.csv: expected 5 data rows, found 4"):
        bd.verify("Tiny_x1", out)
    # md5 matches the published file: a differing registry count is only a warning
    monkeypatch.setitem(bd.REGISTRY, "Tiny_x1", _tiny_info(rows=TINY_ROWS | {"train": 5}))
    assert "registry count is off" in bd.verify("Tiny_x1", out)["warnings"][0]


def test_cli_verify(tiny, capsys):
    _install(tiny["out"])
    assert bd.main(["verify", "Tiny_x1", "--dir", str(tiny["out"])]) == 0
    assert json.loads(capsys.readouterr().out)["dataset"] == "Tiny_x1"
    (tiny["out"] / "valid.csv").write_text("label,user,item,daytime\n")
    assert bd.main(["verify", "Tiny_x1", "--dir", str(tiny["out"])]) == 1
    assert "valid.csv: md5 mismatch" in capsys.readouterr().err


# --------------------------------------------------------------------------- raw Criteo
def _cats(k: int, missing=()) -> list[str]:
    return ["" if j in missing else f"{k:02x}{j:02x}a0f3" for j in range(1, 27)]


# label, I1..I13 (hand-written, "" = missing), C1..C26 (unique per line; some missing)
RAW_ROWS = [
    ["0", "1", "1", "5", "0", "1382", "4", "15", "2", "181", "1", "2", "", "2"] + _cats(1, missing=(20,)),
    ["0", "2", "0", "44", "1", "102", "8", "2", "2", "4", "1", "1", "", "4"] + _cats(2),
    ["0", "2", "0", "1", "14", "767", "89", "4", "2", "245", "1", "3", "3", "45"] + _cats(3, missing=(12, 26)),
    ["0", "", "893", "", "", "4392", "", "0", "0", "0", "", "0", "", ""] + _cats(4),
    ["0", "3", "-1", "", "0", "2", "0", "3", "0", "0", "1", "1", "", "0"] + _cats(5, missing=(1,)),
    ["0", "", "-1", "", "", "12824", "", "0", "0", "6", "", "0", "", ""] + _cats(6),
    ["0", "", "1", "2", "", "3168", "", "0", "1", "2", "", "0", "", ""] + _cats(7),
    ["1", "1", "4", "2", "0", "0", "0", "1", "0", "0", "1", "1", "", "0"] + _cats(8, missing=(3, 4, 5)),
    ["0", "", "44", "4", "8", "19010", "249", "28", "31", "141", "", "1", "", "8"] + _cats(9),
    ["0", "", "35", "", "1", "33737", "21", "1", "2", "3", "", "1", "", "1"] + _cats(10),
]
RAW_TEXT = "".join("\t".join(r) + "\n" for r in RAW_ROWS)
CSV_ROWS = [",".join(r) for r in RAW_ROWS]
# split of each raw line (0-based) for seed 2018, 7:2:1 -- fixed here so a change of
# the split procedure is noticed (it would change every converted dataset)
EXPECTED_SPLIT = {"train": [1, 3, 4, 6, 7, 8, 9], "valid": [0, 2], "test": [5]}


def _read_split(out: Path, split: str) -> list[str]:
    return (out / f"{split}.csv").read_text().splitlines()


def test_raw_fixture_is_well_formed():
    assert len(RAW_ROWS) == 10 and all(len(r) == 40 for r in RAW_ROWS)


def test_convert_criteo_raw_exact_rows(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text(RAW_TEXT)
    report = bd.convert_criteo_raw(raw, tmp_path / "out")
    out = tmp_path / "out"
    header = "label," + ",".join(f"I{i}" for i in range(1, 14)) + "," + ",".join(f"C{i}" for i in range(1, 27))
    got = {}
    for split in ("train", "valid", "test"):
        lines = _read_split(out, split)
        assert lines[0] == header
        got[split] = lines[1:]
    assert got == {s: [CSV_ROWS[i] for i in idx] for s, idx in EXPECTED_SPLIT.items()}
    assert report["rows_written"] == {"train": 7, "valid": 2, "test": 1}
    assert report["lines_read"] == 10 and report["rows_written_total"] == 10 and report["skipped"] == 0
    # every row in exactly one split
    assert sorted(sum(got.values(), [])) == sorted(CSV_ROWS)
    # missing values stay empty: line 4 starts "0,,893,,,4392,,"
    assert got["train"][1].startswith("0,,893,,,4392,,0,0,0,,0,,,0401a0f3,")
    assert got["valid"][0].startswith("0,1,1,5,0,1382,4,15,2,181,1,2,,2,0101a0f3,")
    assert ",0113a0f3,,0115a0f3," in got["valid"][0]  # C20 missing on line 1
    assert got["train"][2].split(",")[14] == ""  # C1 missing on line 5
    assert got["valid"][1].endswith(",0319a0f3,")  # C26 missing on line 3: trailing empty cell
    assert json.loads((out / "SOURCE.json").read_text())["rows_written"] == report["rows_written"]
    assert sorted(p.name for p in out.iterdir()) == ["SOURCE.json", "test.csv", "train.csv", "valid.csv"]


def test_convert_criteo_raw_is_deterministic_and_chunk_independent(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text(RAW_TEXT * 30)  # 300 lines
    outputs = []
    for i, chunk in enumerate((1, 7, 10_000)):
        bd.convert_criteo_raw(raw, tmp_path / f"o{i}", chunk_rows=chunk)
        outputs.append([(tmp_path / f"o{i}" / f"{s}.csv").read_bytes() for s in ("train", "valid", "test")])
    assert outputs[0] == outputs[1] == outputs[2]
    sizes = [len(b.splitlines()) - 1 for b in outputs[0]]
    assert sizes == [210, 60, 30]
    other = bd.convert_criteo_raw(raw, tmp_path / "seed1", seed=1)
    assert other["rows_written"] == {"train": 210, "valid": 60, "test": 30}
    assert [(tmp_path / "seed1" / f"{s}.csv").read_bytes() for s in ("train", "valid", "test")] != outputs[0]
    custom = bd.convert_criteo_raw(raw, tmp_path / "c", splits=(0.8, 0.1, 0.1))
    assert custom["rows_written"] == {"train": 240, "valid": 30, "test": 30}


def test_convert_criteo_raw_bad_line_errors_with_line_number(tmp_path):
    lines = RAW_TEXT.splitlines(keepends=True)
    lines[5] = "\t".join(RAW_ROWS[5][:-1]) + "\n"  # line 6 has 39 columns
    raw = tmp_path / "train.txt"
    raw.write_text("".join(lines))
    out = tmp_path / "out"
    with pytest.raises(bd.CriteoFormatError, match=r"train\.txt:6: expected 40 tab-separated columns .* found 39") as err:
        bd.convert_criteo_raw(raw, out)
    assert err.value.line == 6 and err.value.path == raw
    assert not any(p.name.endswith(".part") for p in out.iterdir())
    assert not (out / "train.csv").exists()

    report = bd.convert_criteo_raw(raw, out, on_bad_lines="skip")
    assert report["skipped"] == 1 and report["skipped_lines"] == [6]
    assert report["rows_written_total"] == 9 and report["lines_read"] == 10
    written = sum((_read_split(out, s)[1:] for s in ("train", "valid", "test")), [])
    assert sorted(written) == sorted(CSV_ROWS[:5] + CSV_ROWS[6:])
    # the other lines keep their split (line 6 held the only test slot)
    assert _read_split(out, "train")[1:] == [CSV_ROWS[i] for i in EXPECTED_SPLIT["train"]]
    assert _read_split(out, "valid")[1:] == [CSV_ROWS[i] for i in EXPECTED_SPLIT["valid"]]
    assert _read_split(out, "test")[1:] == []


def test_convert_criteo_raw_bad_label_blank_lines_and_crlf(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text(RAW_TEXT.replace("0\t3\t-1", "x\t3\t-1", 1))
    with pytest.raises(bd.CriteoFormatError, match=r":5: label must be 0 or 1"):
        bd.convert_criteo_raw(raw, tmp_path / "out")
    raw.write_bytes(RAW_TEXT.replace("\n", "\r\n").encode() + b"\r\n")  # Windows line ends + blank last line
    report = bd.convert_criteo_raw(raw, tmp_path / "out")
    assert report["blank_lines"] == 1 and report["rows_written_total"] == 10
    written = sum((_read_split(tmp_path / "out", s)[1:] for s in ("train", "valid", "test")), [])
    assert sorted(written) == sorted(CSV_ROWS)


def test_cli_convert_criteo(tmp_path, capsys):
    raw = tmp_path / "train.txt"
    raw.write_text(RAW_TEXT)
    assert bd.main(["convert-criteo", str(raw), "--out", str(tmp_path / "o")]) == 0
    assert json.loads(capsys.readouterr().out)["rows_written"] == {"train": 7, "valid": 2, "test": 1}
    raw.write_text(RAW_TEXT + "1\t2\t3\n")
    assert bd.main(["convert-criteo", str(raw), "--out", str(tmp_path / "o")]) == 1
    assert ":11: expected 40" in capsys.readouterr().err
    assert bd.main(["convert-criteo", str(raw), "--out", str(tmp_path / "o"), "--on-bad-lines", "skip"]) == 0
    assert json.loads(capsys.readouterr().out)["skipped"] == 1


def test_convert_criteo_raw_argument_checks(tmp_path):
    raw = tmp_path / "train.txt"
    raw.write_text(RAW_TEXT)
    with pytest.raises(ValueError, match="summing to 1"):
        bd.convert_criteo_raw(raw, tmp_path / "o", splits=(0.7, 0.2, 0.2))
    with pytest.raises(ValueError, match="on_bad_lines"):
        bd.convert_criteo_raw(raw, tmp_path / "o", on_bad_lines="warn")
    with pytest.raises(FileNotFoundError):
        bd.convert_criteo_raw(tmp_path / "nope.txt", tmp_path / "o")


# --------------------------------------------------------------------------- schema YAMLs
ALLOWED_FIELD_KEYS = {"name", "type", "min_count", "fill_na", "norm"}


@pytest.mark.parametrize("name", ["MovielensLatest_x1", "Criteo_x1", "Avazu_x1"])
def test_dataset_yaml_matches_registry(name):
    info = bd.get_dataset(name)
    path = ROOT / "configs" / "datasets" / info.schema
    d = yaml.safe_load(path.read_text())
    assert d["name"] == name.lower()
    assert d["files"] == dict(info.files)
    assert d["tasks"] == [{"name": "ctr", "label": "label"}]
    assert [f["name"] for f in d["fields"]] == list(info.header[1:])
    for f in d["fields"]:
        assert set(f) <= ALLOWED_FIELD_KEYS
        assert f["type"] in ("categorical", "numeric")
        if f["type"] == "categorical":
            assert set(f) <= {"name", "type", "min_count"} and f["min_count"] >= 1
        else:
            assert f["norm"] in ("none", "standard", "minmax", "log1p")
    try:  # the library's own validation, when its schema module is importable
        from mtl_final.data.schema import DatasetSchema
    except Exception:  # pragma: no cover - schema module not available
        return
    schema = DatasetSchema.from_yaml(path)
    assert len(schema.fields) == len(info.header) - 1
