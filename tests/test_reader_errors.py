"""Bad CSV input gives one DataError naming the file, the exact line (and column) and the fix."""
from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from mtl_final.data import DataError, DatasetSchema, EncodedStore, iter_chunks, read_header
from mtl_final.data import reader as reader_mod

HEADER = "click,c,x"
GOOD = ["1,b,1", "0,a,2", "1,b,3"]


def write(path: Path, text: str | bytes) -> Path:
    path.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return path


def dataset(root: Path, train: str | bytes, train_name: str = "train.csv") -> DatasetSchema:
    """train (as given) / valid / test files under ``root`` and their schema."""
    root.mkdir(exist_ok=True)
    body = (HEADER + "\n" + "\n".join(GOOD) + "\n").encode()
    data = train.encode() if isinstance(train, str) else train
    write(root / train_name, gzip.compress(data) if train_name.endswith(".gz") else data)
    write(root / "valid.csv", body)
    write(root / "test.csv", body)
    return DatasetSchema.from_dict({"name": "toy", "fields": [{"name": "c", "type": "categorical"}],
                                    "tasks": [{"name": "ctr", "label": "click"}],
                                    "files": {"train": train_name, "valid": "valid.csv", "test": "test.csv"}})


def build_error(tmp_path: Path, train: str | bytes, train_name: str = "train.csv") -> str:
    schema = dataset(tmp_path / "data", train, train_name)
    with pytest.raises(DataError) as err:
        EncodedStore.build_or_load(schema, tmp_path / "data", tmp_path / "cache", log=None)
    return str(err.value)


def chunk_error(path: Path, columns: list[str] | None = None) -> str:
    with pytest.raises(DataError) as err:
        list(iter_chunks(path, columns or ["click", "c"]))
    return str(err.value)


def assert_parts(msg: str, *parts: str) -> None:
    for p in parts:
        assert p in msg, f"{p!r} not in message: {msg}"


# ----------------------------------------------------------------------------- 1. CR-only line ends
def test_cr_only_file_is_one_clear_error(tmp_path: Path) -> None:
    msg = build_error(tmp_path, "click,c,x\r1,b,1\r0,a,2\r")
    assert_parts(msg, f"file {tmp_path / 'data' / 'train.csv'}, line 1:", "CR-only", "LF or CRLF", "Fix:")


def test_cr_only_header_read_stops_at_first_block(tmp_path: Path, monkeypatch) -> None:
    path = write(tmp_path / "mac.csv", "a,b\r" + "1,2\r" * 500_000)
    served: list[int] = []
    real = pa.input_stream

    class Counting:
        def __init__(self, stream: pa.NativeFile) -> None:
            self.stream = stream

        def __enter__(self) -> "Counting":
            return self

        def __exit__(self, *exc: object) -> None:
            self.stream.close()

        def read(self, n: int) -> bytes:
            block = self.stream.read(n)
            served.append(len(block))
            return block

    monkeypatch.setattr(reader_mod.pa, "input_stream", lambda *a, **k: Counting(real(*a, **k)))
    with pytest.raises(DataError, match="CR-only"):
        read_header(path)
    assert sum(served) == 1 << 16  # one 64 KiB block of the 2 MB file


def test_lone_carriage_return_in_crlf_data(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", "click,c\r\n1,a\r\n0,b\r1,c\r\n")
    assert_parts(chunk_error(path), "t.csv, line 3:", "carriage return", "LF or CRLF")


# ----------------------------------------------------------------------------- 2. long row text is cut
def test_malformed_row_text_is_cut_to_200_characters(tmp_path: Path) -> None:
    text = '0,"a,2\n' + "1,b,3\n" * 300 + 'q",5,6'  # one row of 1813 characters over lines 3-304
    path = write(tmp_path / "t.csv", f"{HEADER}\n1,b,1\n{text}\n0,a,2\n")
    msg = chunk_error(path)
    assert_parts(msg, "t.csv, line 3:", "expected 3 columns, got 4", repr(text[:200]) + "…",
                 "(1,813 characters in all)", "runs over lines 3-304")
    assert len(msg) < 600


def test_unclosed_quote_names_its_line_not_the_rest_of_the_file(tmp_path: Path) -> None:
    rows = [f"{i % 2},v{i},{i}" for i in range(20_000)]
    rows[99] = '1,"v99,99'
    msg = build_error(tmp_path, HEADER + "\n" + "\n".join(rows) + "\n")
    assert_parts(msg, "train.csv, line 101:", "never closed", "'1,\"v99,99'", 'remove the stray "')
    assert len(msg) < 400


# ----------------------------------------------------------------------------- 3. physical line numbers
def test_line_numbers_count_physical_lines_after_quoted_newlines(tmp_path: Path) -> None:
    msg = build_error(tmp_path, f'{HEADER}\n1,"two\nlines",1\n0,a,2\n7,b,3\n')
    assert_parts(msg, "train.csv, column 'click', line 5, value '7'", "first at line(s) [5]")


def test_chunks_start_on_the_right_line_across_windows(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(reader_mod, "_MIN_BLOCK", 1)  # 128-byte windows for chunk_rows=1
    rows, lines, line = [], [], 2
    for i in range(300):
        rows.append(f'{i},"a\r\nb{i}",x' if i % 7 == 3 else f"{i},v{i},x")
        lines.append(line)
        line += 2 if i % 7 == 3 else 1
    path = write(tmp_path / "t.csv", HEADER + "\r\n" + "\r\n".join(rows) + "\r\n")
    for chunk_rows in (1, 4, 1000):
        got = [(line0 + i, int(click), c) for line0, df in iter_chunks(path, ["click", "c"], chunk_rows)
               for i, (click, c) in enumerate(zip(df["click"], df["c"]))]
        assert [g[0] for g in got] == lines and [g[1] for g in got] == list(range(300))
        assert got[3][2] == "a\r\nb3" and got[4][2] == "v4"


# ----------------------------------------------------------------------------- 4. blank lines
@pytest.mark.parametrize("nl", ["\n", "\r\n"])
def test_blank_line_between_rows_is_named_as_blank(tmp_path: Path, nl: str) -> None:
    msg = build_error(tmp_path, nl.join([HEADER, "1,b,1", "0,a,2", "", "1,b,3"]) + nl)
    assert_parts(msg, "train.csv, line 4: the line is blank.", "remove the blank line(s)")
    assert "label is empty" not in msg


def test_blank_lines_after_the_last_row_are_ignored(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv", f"{HEADER}\r\n1,b,1\r\n0,a,2\r\n\r\n\r\n")
    assert [(line, df["c"].tolist()) for line, df in iter_chunks(path, ["c"])] == [(2, ["b", "a"])]
    path = write(tmp_path / "u.csv", f"{HEADER}\n1,b,1\n\n0,a,2")  # a row after the blank line: error
    assert_parts(chunk_error(path), "u.csv, line 3: the line is blank.")


# ----------------------------------------------------------------------------- 5. compressed CSV
def test_malformed_row_in_gzip_csv_has_its_line(tmp_path: Path) -> None:
    msg = build_error(tmp_path, f'{HEADER}\n1,"x\ny",1\n0,a,2\n1,b,3,9\n', "train.csv.gz")
    assert_parts(msg, "train.csv.gz, line 5:", "expected 3 columns, got 4", "'1,b,3,9'", "Fix:")


# ----------------------------------------------------------------------------- 6. invalid UTF-8
def test_invalid_utf8_names_line_column_and_byte_offset(tmp_path: Path) -> None:
    data = f"{HEADER}\n1,b,1\n".encode() + b"0,\xe9t\xe9,2\n1,b,3\n"  # bad byte at 10 + 6 + 2 = 18
    msg = build_error(tmp_path, data)
    assert_parts(msg, "train.csv, column 'c', line 3:", "invalid UTF-8 byte 0xe9 at byte offset 18",
                 "re-encode the file as UTF-8")


def test_invalid_utf8_in_gzip_and_in_header(tmp_path: Path) -> None:
    path = write(tmp_path / "t.csv.gz", gzip.compress(f"{HEADER}\n1,b,1\n".encode() + b"0,a,\xff\n"))
    assert_parts(chunk_error(path, ["x"]), "t.csv.gz, column 'x', line 3:", "0xff at byte offset 20",
                 "of the uncompressed data")
    path = write(tmp_path / "h.csv", b"click,c\xe9\n1,a\n")
    with pytest.raises(DataError) as err:
        read_header(path)
    assert_parts(str(err.value), "h.csv, line 1:", "0xe9 at byte offset 7", "UTF-8")


def test_a_parquet_list_column_is_a_data_error_naming_it(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "x.parquet"
    pq.write_table(pa.table({"click": [1, 0], "c": pa.array([[1], [2, 3]]), "x": [1.0, 2.0]}), path)
    assert [df["x"].tolist() for _, df in iter_chunks(path, ["x"])] == [["1", "2"]]  # other columns read
    with pytest.raises(DataError) as err:
        list(iter_chunks(path, ["c", "x"]))
    msg = str(err.value)
    assert "x.parquet" in msg and "column 'c'" in msg and "type list<element: int64>" in msg and "flatten" in msg


# ----------------------------------------------------------------------------- 7. truncated or corrupt files
def _numbered_rows(n: int) -> bytes:
    return (HEADER + "\n" + "".join(f"{i % 2},v{i % 97},{i}\n" for i in range(n))).encode()


def test_truncated_gzip_csv_names_the_file_and_the_line_reached(tmp_path: Path, monkeypatch) -> None:
    import zlib

    monkeypatch.setattr(reader_mod, "_MIN_BLOCK", 1 << 12)  # small windows: the cut is met after some rows
    packed = gzip.compress(_numbered_rows(20_000))
    path = write(tmp_path / "t.csv.gz", packed[: len(packed) // 2])
    with pytest.raises(DataError) as err:
        list(iter_chunks(path, ["click", "c"], chunk_rows=8))
    readable = zlib.decompressobj(wbits=31).decompress(packed[: len(packed) // 2]).count(b"\n")
    line = err.value.line
    assert err.value.file == str(path) and line is not None and 2 < line <= readable + 1
    assert_parts(str(err.value), f"file {path}, line {line}: ", "Truncated compressed stream",
                 "truncated or corrupt", "Fix: re-download the file or compress it again")


def test_gzip_csv_cut_in_its_header_or_corrupt(tmp_path: Path) -> None:
    packed = gzip.compress(_numbered_rows(50))
    path = write(tmp_path / "h.csv.gz", packed[:15])
    assert_parts(chunk_error(path), f"file {path}, line 1: ", "truncated or corrupt", "re-download")
    with pytest.raises(DataError, match="truncated or corrupt"):
        read_header(path)
    bad = bytearray(packed)
    bad[12:40] = b"\xff" * 28
    path = write(tmp_path / "c.csv.gz", bytes(bad))
    assert_parts(chunk_error(path), f"file {path}, line ", "zlib inflate failed", "truncated or corrupt")


def test_truncated_gzip_train_split_names_it_through_the_store(tmp_path: Path) -> None:
    packed = gzip.compress(_numbered_rows(2000))
    schema = dataset(tmp_path / "data", "", "train.csv.gz")  # then cut the split short
    write(tmp_path / "data" / "train.csv.gz", packed[:-40])
    with pytest.raises(DataError) as err:
        EncodedStore.build_or_load(schema, tmp_path / "data", tmp_path / "cache", log=None)
    assert_parts(str(err.value), f"file {tmp_path / 'data' / 'train.csv.gz'}, line ", "truncated or corrupt")


def _parquet(path: Path, n: int = 4000) -> bytes:
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"click": [i % 2 for i in range(n)], "c": [f"v{i}" for i in range(n)]}), path,
                   row_group_size=1000, compression="snappy")
    return path.read_bytes()


def test_truncated_parquet_names_the_file(tmp_path: Path) -> None:
    data = _parquet(tmp_path / "whole.parquet")
    path = write(tmp_path / "t.parquet", data[: len(data) // 2])
    assert_parts(chunk_error(path), f"file {path}: cannot read it as Parquet", "Fix:", "complete Parquet file")


def test_corrupt_parquet_data_names_the_file_and_the_rows(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    data = bytearray(_parquet(tmp_path / "whole.parquet"))
    meta = pq.ParquetFile(tmp_path / "whole.parquet").metadata
    col = meta.row_group(2).column(1)  # the third row group's "c": rows 2001-3000, lines 2002-3001
    start = col.data_page_offset + 40
    data[start:start + 200] = b"\x07" * 200
    path = write(tmp_path / "c.parquet", bytes(data))
    with pytest.raises(DataError) as err:
        list(iter_chunks(path, ["click", "c"], chunk_rows=1000))
    assert err.value.file == str(path) and err.value.line == 2002
    assert_parts(str(err.value), "truncated or corrupt", "Fix: re-download the file or write it again")
