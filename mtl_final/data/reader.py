"""Streaming readers for CSV and Parquet files, every column as raw strings.

Reading as strings lets validation quote the exact bad cell. Chunks have exactly
``chunk_rows`` rows (the last one fewer) and come with the line number of their
first row: the header is line 1, so the first data row is line 2 (for Parquet the
same numbering is used as if the file were a CSV with a header).
"""
from __future__ import annotations

import csv
import io
import mmap
from pathlib import Path
from typing import Iterable, Iterator, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DataError

Format = Literal["csv", "parquet"]


def detect_format(path: str | Path) -> Format:
    """"parquet" for *.parquet / *.pq, otherwise "csv"."""
    return "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DataError("file not found.", file=path,
                        fix="check the data root and the 'files' entries of the dataset schema.")


def read_header(path: str | Path, fmt: Format | None = None) -> list[str]:
    """Column names of a CSV (its first line) or Parquet file.

    Raises DataError when the file is missing, empty, or has duplicate column names.
    """
    path = Path(path)
    _check_exists(path)
    fmt = fmt or detect_format(path)
    if fmt == "parquet":
        try:
            names = list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read it as Parquet ({e}).", file=path,
                            fix="check that the file is a complete Parquet file.") from None
    else:
        with pa.input_stream(str(path), compression="detect") as stream:
            head = b""
            while b"\n" not in head:
                block = stream.read(1 << 16)
                if not block:
                    break
                head += block
        first = head.split(b"\n", 1)[0].decode("utf-8", errors="replace").lstrip("\ufeff").rstrip("\r")
        if not first.strip():
            raise DataError("the file is empty (no header line).", file=path, line=1,
                            fix="write a header line with the column names, then the data rows.")
        names = next(csv.reader(io.StringIO(first)))
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"duplicate column names {dup} in the header.", file=path, line=1,
                        fix="give every column a distinct name.")
    return names


def _find_line(path: Path, text: str) -> int | None:
    """1-based line number of the first line equal to ``text`` (error path only; plain .csv)."""
    if path.suffix.lower() != ".csv":
        return None
    with open(path, "rb") as fh:
        try:
            buf = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
        except ValueError:
            return None
        with buf:
            if not text:  # an empty line: the first "\n" directly followed by a line end
                hits = [p for p in (buf.find(b"\n\n"), buf.find(b"\n\r\n")) if p != -1]
                return buf[:min(hits)].count(b"\n") + 2 if hits else None
            needle = text.encode("utf-8")
            pos = buf.find(needle)
            while pos != -1:
                end = pos + len(needle)
                at_start = pos == 0 or buf[pos - 1:pos] == b"\n"
                at_end = end == len(buf) or buf[end:end + 1] in (b"\n", b"\r")
                if at_start and at_end:
                    return buf[:pos].count(b"\n") + 1
                pos = buf.find(needle, pos + 1)
    return None


def _to_frame(batches: list[pa.RecordBatch], columns: list[str]) -> pd.DataFrame:
    table = pa.Table.from_batches(batches).select(columns)
    return table.to_pandas()


def _as_string_batch(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Cast every column to string (booleans as 0/1 first)."""
    arrays = []
    for col in batch.columns:
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            col = pc.cast(col, pa.string())
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _rebatch(batches: Iterable[pa.RecordBatch], chunk_rows: int, columns: list[str],
             path: Path) -> Iterator[tuple[int, pd.DataFrame]]:
    buf: list[pa.RecordBatch] = []
    buffered = 0
    line = 2
    for batch in batches:
        if batch.num_rows == 0:
            continue
        buf.append(batch)
        buffered += batch.num_rows
        while buffered >= chunk_rows:
            table = pa.Table.from_batches(buf)
            head, rest = table.slice(0, chunk_rows), table.slice(chunk_rows)
            yield line, _to_frame(head.to_batches(), columns)
            line += chunk_rows
            buf = rest.to_batches()
            buffered = rest.num_rows
    if buffered:
        yield line, _to_frame(buf, columns)
        line += buffered
    if line == 2:
        raise DataError("the file has a header but no data rows.", file=path,
                        fix="check that the file was written completely, or remove it from 'files'.")


def iter_chunks(path: str | Path, columns_as_str: list[str], chunk_rows: int = 262144,
                fmt: Format | None = None) -> Iterator[tuple[int, pd.DataFrame]]:
    """Stream the columns ``columns_as_str`` of a CSV or Parquet file as string columns.

    Yields (line number of the chunk's first row, DataFrame of ``chunk_rows`` rows x
    len(columns_as_str) string columns); empty cells are "" (CSV) or missing
    (Parquet nulls). Handles CRLF and compressed CSV (by extension). Raises DataError
    for a missing/empty file, a missing column, or a malformed CSV row.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    fmt = fmt or detect_format(path)
    header = read_header(path, fmt)
    missing = [c for c in columns_as_str if c not in header]
    if missing:
        raise DataError(f"the header lacks column(s) {missing} (header: {header}).", file=path,
                        column=missing[0], line=1, fix="add the column to the file or fix the dataset schema.")
    columns = list(columns_as_str)
    if fmt == "parquet":
        pfile = pq.ParquetFile(path)
        batches = (_as_string_batch(b) for b in pfile.iter_batches(batch_size=chunk_rows, columns=columns))
        yield from _rebatch(batches, chunk_rows, columns, path)
        return

    bad_rows: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    # Blank lines are kept (and rejected as malformed rows) so that line numbers stay exact.
    read_opts = pacsv.ReadOptions(block_size=int(min(max(chunk_rows * 128, 1 << 20), 1 << 26)))
    parse_opts = pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False)
    conv_opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=columns,
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)

    def batches() -> Iterator[pa.RecordBatch]:
        try:
            reader = pacsv.open_csv(str(path), read_options=read_opts, parse_options=parse_opts,
                                    convert_options=conv_opts)
            yield from reader
        except pa.ArrowInvalid as e:
            if bad_rows:
                row = bad_rows[0]
                line = _find_line(path, row.text)
                raise DataError(f"malformed CSV row: expected {row.expected_columns} columns, got "
                                f"{row.actual_columns} (row text {row.text!r}).", file=path, line=line,
                                fix="repair or delete that row (check quoting and the number of commas).") from None
            raise DataError(f"cannot parse the CSV ({e}).", file=path,
                            fix="check the file's delimiter, quoting and encoding.") from None

    yield from _rebatch(batches(), chunk_rows, columns, path)
