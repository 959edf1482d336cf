"""Streaming readers for CSV and Parquet files, every column as raw strings.

Reading as strings lets validation quote the exact bad cell. Chunks come with the
line number of their first row: the header is line 1, so the first data row is
line 2 (for Parquet the same numbering is used as if the file were a CSV with a
header). Line numbers are physical lines, counted by line feeds as ``grep -n``
does, also after a quoted value that holds line breaks. Chunks have ``chunk_rows``
rows (the last one fewer), except that a row running over several lines ends its
chunk early, so that row ``i`` of a chunk always starts on line ``line + i``.

CSV files must be UTF-8 text with LF or CRLF line ends (a carriage return without
a line feed outside quotes is rejected) and no blank lines between data rows; blank
lines after the last data row are ignored (hand-edited files often end with one).
Compressed CSV files (.gz, .bz2, .lz4, .zst, by extension) take the same path, with
byte offsets counted in the uncompressed data.
"""
from __future__ import annotations

import bisect
import csv
import io
import re
from pathlib import Path
from typing import Generator, Iterable, Iterator, Literal, NamedTuple

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .errors import DataError

Format = Literal["csv", "parquet"]

_CLIP = 200
_MIN_BLOCK = 1 << 23
_MAX_ROW_BYTES = 1 << 26
_SPAN = 1 << 18
# a field and a row by the quoting rules of the pyarrow parser: a quote opens a quoted value only at the
# start of a field, "" inside it is a quote, and a value still open at the end of the data runs to the end
_FIELD = rb'(?:"(?>[^"]*+(?:""[^"]*+)*+)(?:"[^,\r\n]*+|\Z)|[^,\r\n]*+)'
_FIELD_RE = re.compile(_FIELD)
_ROW_RE = re.compile(_FIELD + rb"(?:," + _FIELD + rb")*+(\r\n|\n|\r)?")
_CLOSED_RE = re.compile(rb'"(?>[^"]*+(?:""[^"]*+)*+)"')
_LONE_CR_RE = re.compile(rb"\r(?!\n)")
_COMPRESSED = (".gz", ".bz2", ".lz4", ".zst")  # what pa.input_stream(compression="detect") decompresses


def detect_format(path: str | Path) -> Format:
    """"parquet" for *.parquet / *.pq, otherwise "csv"."""
    return "parquet" if str(path).lower().endswith((".parquet", ".pq")) else "csv"


def _check_exists(path: Path) -> None:
    if not path.is_file():
        raise DataError("file not found.", file=path,
                        fix="check the data root and the 'files' entries of the dataset schema.")


def _clip(text: str, limit: int = _CLIP) -> str:
    """repr of ``text``, cut to ``limit`` characters (then "…" and the full length)."""
    if len(text) <= limit:
        return repr(text)
    return f"{text[:limit]!r}… ({len(text):,} characters in all)"


def _cr_error(path: Path, line: int) -> DataError:
    return DataError("a carriage return (\\r) without a line feed (\\n) ends the line: the file has CR-only "
                     "(old Mac) or mixed line ends.", file=path, line=line,
                     fix="convert the file to LF or CRLF line ends (e.g. `tr '\\r' '\\n' < old.csv > new.csv` "
                         "for a CR-only file).")


def _utf8_error(path: Path, problem: str, line: int, column: str | None = None) -> DataError:
    return DataError(problem, file=path, column=column, line=line,
                     fix="re-encode the file as UTF-8 (e.g. `iconv -f latin1 -t utf-8 old.csv > new.csv`).")


def _unreadable(path: Path, err: OSError, line: int) -> DataError:
    """The DataError of a file whose bytes stop decoding at or after ``line`` (cut short or damaged)."""
    if detect_format(path) == "parquet":
        what, fix = "it as Parquet", "re-download the file or write it again."
    elif path.suffix.lower() in _COMPRESSED:
        what, fix = "it", "re-download the file or compress it again (`gzip -t FILE` checks a .gz file)."
    else:
        what, fix = "it", "re-download or copy the file again."
    return DataError(f"cannot read {what} ({err}) at or after this line: the file is truncated or corrupt.", file=path,
                     line=line, fix=fix)


def _first_line(path: Path) -> tuple[bytes, int]:
    """The first line of a CSV without its line end, and the byte offset of the next line.

    Reads no further than the first line end.
    """
    head = b""
    eof = False
    with pa.input_stream(str(path), compression="detect") as stream:
        while True:
            nl = head.find(b"\n")
            cr = head.find(b"\r", 0, len(head) if nl == -1 else nl)
            if cr != -1 and cr != nl - 1 and (eof or nl != -1 or cr + 1 < len(head)):
                raise _cr_error(path, 1)
            if nl != -1:
                return head[:nl].removesuffix(b"\r"), nl + 1
            if eof:
                return head, len(head)
            if len(head) > _MAX_ROW_BYTES:
                raise DataError(f"no line end in the first {_MAX_ROW_BYTES >> 20} MiB.", file=path, line=1,
                                fix="check that the file is a CSV text file.")
            try:
                block = stream.read(1 << 16)
            except OSError as e:  # a compressed file cut short or damaged
                raise _unreadable(path, e, 1) from None
            eof = not block
            head += block


def _csv_header(path: Path) -> tuple[list[str], int]:
    """Column names of a CSV and the byte offset where its data rows start."""
    first, offset = _first_line(path)
    try:
        text = first.decode("utf-8").lstrip("\ufeff")
    except UnicodeDecodeError as e:
        raise _utf8_error(path, f"invalid UTF-8 byte 0x{first[e.start]:02x} at byte offset {e.start} "
                                "(in the header).", 1) from None
    if not text.strip():
        raise DataError("the file is empty (no header line).", file=path, line=1,
                        fix="write a header line with the column names, then the data rows.")
    return next(csv.reader(io.StringIO(text))), offset


def read_header(path: str | Path, fmt: Format | None = None) -> list[str]:
    """Column names of a CSV (its first line) or Parquet file.

    Raises DataError when the file is missing, empty, has duplicate column names or
    (CSV) is not UTF-8 or has CR-only line ends.
    """
    return _header(Path(path), fmt or detect_format(path))[0]


def _header(path: Path, fmt: Format) -> tuple[list[str], int]:
    """read_header's column names, and (CSV) the byte offset where the data rows start (0 for Parquet)."""
    _check_exists(path)
    offset = 0
    if fmt == "parquet":
        try:
            names = list(pq.ParquetFile(path).schema_arrow.names)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read it as Parquet ({e}).", file=path,
                            fix="check that the file is a complete Parquet file.") from None
    else:
        names, offset = _csv_header(path)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise DataError(f"duplicate column names {dup} in the header.", file=path, line=1,
                        fix="give every column a distinct name.")
    return names, offset


def _windows(path: Path, offset: int, block_size: int) -> Generator[tuple[bytes, bool], int, None]:
    """The bytes of a (possibly compressed) file from ``offset`` on, a window at a time.

    Yields (window, whether it reaches the end of the file) and is sent how many bytes of
    the window were used; the next window starts after them and is a block longer.
    """
    with pa.input_stream(str(path), compression="detect") as stream:
        if isinstance(stream, pa.CompressedInputStream):
            stream.read(offset)
            data = b""
            while True:
                block = stream.read(block_size)
                while len(block) < block_size and (more := stream.read(block_size - len(block))):
                    block += more
                data = data + block if data else block
                used = yield data, len(block) < block_size
                data = data[used:]
        else:
            size, kept = stream.size(), 0
            while True:
                stream.seek(offset)
                data = stream.read(min(kept + block_size, size - offset))
                used = yield data, offset + len(data) >= size or len(data) <= kept
                offset, kept = offset + used, len(data) - used


def _count_byte(data: bytes, end: int, value: int) -> int:
    """How often byte ``value`` occurs in ``data[:end]`` (in slices, so no large temporary array)."""
    b = np.frombuffer(data, dtype=np.uint8, count=end)
    return sum(int(np.count_nonzero(b[i:i + _SPAN] == value)) for i in range(0, end, _SPAN))


def _has_lone_cr(data: bytes, end: int) -> bool:
    """Whether ``data[:end]`` holds a carriage return that no line feed follows."""
    b = np.frombuffer(data, dtype=np.uint8, count=end)
    for i in range(0, end, _SPAN):
        cr = np.flatnonzero(b[i:i + _SPAN] == 13) + i
        if cr.size and (cr[-1] + 1 >= end or bool((b[cr + 1] != 10).any())):
            return True
    return False


class _Scan(NamedTuple):
    """Rows found by :func:`_scan_rows`: their start offsets, where the last one ends, and the offsets of
    the first blank row, the first lone carriage return and a quote never closed (-1: none)."""

    starts: list[int]
    end: int
    blank: int
    lone_cr: int
    unclosed: int


def _scan_rows(data: bytes, final: bool) -> _Scan:
    """The complete rows at the start of ``data`` (all of them if ``final``), found one by one.

    The slow path, for data where some quoted value holds a line break.
    """
    starts: list[int] = []
    blank = lone_cr = unclosed = -1
    pos, size = 0, len(data)
    while pos < size:
        m = _ROW_RE.match(data, pos)
        end, term = m.end(), m.group(1)
        if not final and (term is None or (term == b"\r" and end == size)):
            break
        if term is None:
            at = pos
            while (field_end := _FIELD_RE.match(data, at).end()) < size:
                at = field_end + 1
            if data.startswith(b'"', at) and not _CLOSED_RE.match(data, at):
                unclosed = at
        elif blank == -1 and end - len(term) == pos:
            blank = pos
        elif lone_cr == -1 and term == b"\r":
            lone_cr = end - 1
        starts.append(pos)
        pos = end
    return _Scan(starts, pos, blank, lone_cr, unclosed)


def _blank_tail(data: bytes, end: int) -> int:
    """Start of the run of empty lines that ends at ``end`` (``end`` itself if there is none)."""
    while end > 0:
        prev = data.rfind(b"\n", 0, end - 1) + 1
        if data[prev:end] not in (b"\n", b"\r\n"):
            break
        end = prev
    return end


class _Piece:
    """Whole data rows of a CSV, ``data[:end]``, with their byte offset in the file and first line number."""

    def __init__(self, data: bytes, end: int, offset: int, line: int, scan: _Scan | None) -> None:
        self.data, self.end, self.offset, self.line, self.scan = data, end, offset, line, scan
        self.bytes = np.frombuffer(data, dtype=np.uint8, count=end)
        self._starts = None if scan is None else np.asarray(scan.starts, dtype=np.int64)

    @property
    def starts(self) -> np.ndarray:
        """Byte offset of every row (without a scan: of every line)."""
        if self._starts is None:
            after = np.flatnonzero(self.bytes == 10) + 1
            self._starts = np.concatenate([[0], after[after < self.end]])
        return self._starts

    def lines(self, rows: int) -> np.ndarray:
        """Line number of each of the ``rows`` rows."""
        if self.scan is None:
            return np.arange(self.line, self.line + rows)
        return self.line + np.searchsorted(np.flatnonzero(self.bytes == 10), self.starts)

    def line_at(self, offset: int) -> int:
        """Line number of byte ``offset`` of the piece."""
        return self.line + self.data.count(b"\n", 0, offset)

    def layout_error(self, path: Path, rows: np.ndarray | None = None) -> DataError | None:
        """A DataError for the first blank line (among ``rows``; all rows if None), lone carriage return
        or quote never closed."""
        if self.scan is not None:
            blank, lone_cr, unclosed = self.scan[2:]
        else:
            m = _LONE_CR_RE.search(self.data, 0, self.end)
            lone_cr, unclosed = (-1 if m is None else m.start()), -1
            starts = self.starts if rows is None else self.starts[rows]
            first = self.bytes[starts]
            nxt = self.bytes[np.minimum(starts + 1, self.end - 1)]
            empty = np.flatnonzero((first == 10) | ((first == 13) & (nxt == 10)))
            blank = int(starts[empty[0]]) if empty.size else -1
        found = [(at, kind) for at, kind in ((blank, "blank"), (lone_cr, "cr"), (unclosed, "quote")) if at != -1]
        if not found:
            return None
        at, kind = min(found)
        line = self.line_at(at)
        if kind == "cr":
            return _cr_error(path, line)
        if kind == "blank":
            return DataError("the line is blank.", file=path, line=line,
                             fix="remove the blank line(s) between the data rows (blank lines after the last "
                                 "row are ignored).")
        start = self.data.rfind(b"\n", 0, at) + 1
        stop = self.data.find(b"\n", at, self.end)
        text = self.data[start:self.end if stop == -1 else stop].decode("utf-8", "replace").rstrip("\r")
        return DataError(f"a quoted value is never closed: the quote opened on this line runs to the end of the "
                         f"file (line text {_clip(text)}).", file=path, line=line,
                         fix='close the quote, or remove the stray " (inside a quoted value write a quote as "").')

    def row_span(self, text: str) -> tuple[int, int] | None:
        """(first line, last line) of the first row whose text is ``text``."""
        needle = text.encode("utf-8")
        starts = self.starts
        pos = self.data.find(needle, 0, self.end)
        while pos != -1:
            i = int(np.searchsorted(starts, pos))
            after = self.data[pos + len(needle):min(pos + len(needle) + 1, self.end)]
            if i < len(starts) and starts[i] == pos and after in (b"", b"\n", b"\r"):
                return self.line_at(pos), self.line_at(pos + len(needle))
            pos = self.data.find(needle, pos + 1, self.end)
        return None

    def bad_utf8(self, fields: set[int]) -> tuple[int, int] | None:
        """(byte offset in the piece, field index) of the first invalid UTF-8 byte in one of ``fields``."""
        pos = 0
        while True:
            try:
                self.data[pos:self.end].decode("utf-8")
                return None
            except UnicodeDecodeError as e:
                bad = pos + e.start
            field = 0
            at = int(self.starts[np.searchsorted(self.starts, bad, side="right") - 1])
            while True:
                end = _FIELD_RE.match(self.data, at, self.end).end()
                if bad < end or self.data[end:end + 1] != b",":
                    break
                field, at = field + 1, end + 1
            if field in fields:
                return bad, field
            pos = bad + 1


def _read_csv(piece: _Piece, header: list[str], conv_opts: pacsv.ConvertOptions, quoted: bool,
              bad_rows: list[pacsv.InvalidRow]) -> pa.Table:
    """Parse the rows of ``piece`` with pyarrow (a malformed row goes to ``bad_rows`` and stops it)."""

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad_rows.append(row)
        return "error"

    parse_opts = pacsv.ParseOptions(invalid_row_handler=on_invalid, ignore_empty_lines=False,
                                    newlines_in_values=quoted)
    rows = pa.py_buffer(piece.data)[:piece.end]
    try:
        return pacsv.read_csv(pa.BufferReader(rows), read_options=pacsv.ReadOptions(column_names=header),
                              parse_options=parse_opts, convert_options=conv_opts)
    except pa.ArrowInvalid as e:
        if bad_rows or "straddl" not in str(e):
            raise
    # a row longer than pyarrow's block (1 MiB): parse the piece as one block
    return pacsv.read_csv(pa.BufferReader(rows), parse_options=parse_opts, convert_options=conv_opts,
                          read_options=pacsv.ReadOptions(column_names=header, block_size=piece.end + 1))


def _single_line_rows(piece: _Piece, rows: int) -> bool:
    """Whether the ``rows`` rows parsed from ``piece`` (which holds quotes) are exactly its lines."""
    data, end = piece.data, piece.end
    if not data.endswith(b"\n", 0, end) or _count_byte(data, end, 10) != rows or _has_lone_cr(data, end):
        return False
    last = _ROW_RE.match(data, data.rfind(b"\n", 0, end - 1) + 1, end)
    return last.end() == end and last.group(1) is not None


def _parse_error(piece: _Piece, path: Path, header: list[str], columns: list[str],
                 bad_rows: list[pacsv.InvalidRow], e: pa.ArrowInvalid) -> DataError:
    """The DataError for a pyarrow parse failure of ``piece``."""
    if bad_rows:
        found = [(piece.row_span(r.text), r) for r in bad_rows]
        span, row = min(found, key=lambda f: f[0] or (1 << 62, 0))
        first, last = span or (None, None)
        problem = (f"malformed CSV row: expected {row.expected_columns} columns, got {row.actual_columns} "
                   f"(row text {_clip(row.text)}).")
        if first is not None and last > first:
            problem += f" The row runs over lines {first}-{last}: a quoted value with line breaks, or a stray quote."
        return DataError(problem, file=path, line=first,
                         fix="repair or delete that row (check quoting and the number of commas).")
    bad = piece.bad_utf8({header.index(c) for c in columns} if columns else set(range(len(header))))
    if bad is not None:
        at, field = bad
        where = "in the file" if path.suffix.lower() == ".csv" else "of the uncompressed data"
        return _utf8_error(path, f"invalid UTF-8 byte 0x{piece.data[at]:02x} at byte offset {piece.offset + at} "
                                 f"{where}: the file is not UTF-8 text.", piece.line_at(at), header[field])
    return DataError(f"cannot parse the CSV ({e}) in the rows from line {piece.line}.", file=path,
                     fix="check the file's delimiter, quoting and encoding.")


def _check_rows(piece: _Piece, table: pa.Table, path: Path, quoted: bool) -> int:
    """Raise a DataError for a blank line, a lone carriage return or rows that do not match the lines of
    ``piece``; returns the number of line feeds in the piece."""
    data, end, n = piece.data, piece.end, table.num_rows
    if piece.scan is not None:
        layout = piece.layout_error(path)
        if layout is not None:
            raise layout
        expected, newlines = len(piece.scan.starts), data.count(b"\n", 0, end)
    else:
        partial = not data.endswith(b"\n", 0, end)
        has_cr = not quoted and data.find(b"\r", 0, end) != -1
        newlines = _count_byte(data, end, 10) if has_cr else n - partial
        expected = newlines + partial
        layout = None
        if n != expected:
            layout = piece.layout_error(path)
        elif all(pc.min(pc.binary_length(col)).as_py() == 0 for col in table.columns):
            empty = np.ones(n, dtype=bool)
            for col in table.columns:
                empty &= pc.equal(pc.binary_length(col), 0).to_numpy(zero_copy_only=False)
            layout = piece.layout_error(path, np.flatnonzero(empty))
        if layout is not None:
            raise layout
    if n != expected:
        raise DataError(f"cannot parse the CSV: {n} rows parsed where {expected} were expected, from line "
                        f"{piece.line}.", file=path, fix="check the file's delimiter and quoting.")
    return newlines


def _csv_parts(path: Path, header: list[str], columns: list[str], offset: int,
               block_size: int) -> Iterator[tuple[pa.Table, np.ndarray]]:
    """(table, line of each row) for pieces of whole rows of a CSV, from byte ``offset`` (after the header).

    A window is cut at its last line end and parsed; where it holds quotes the cut is kept only if every
    row turns out to be one line, else :func:`_scan_rows` finds the rows (slow, exact).
    """
    conv_opts = pacsv.ConvertOptions(column_types={c: pa.string() for c in columns}, include_columns=columns,
                                     strings_can_be_null=False, quoted_strings_can_be_null=False)
    line = 2
    windows = _windows(path, offset, block_size)
    try:
        data, final = _next_window(windows, None, path, line)
        while True:
            cut = _blank_tail(data, len(data) if final else data.rfind(b"\n") + 1)
            quoted = data.find(b'"', 0, cut) != -1
            table = None
            piece = _Piece(data, cut, offset, line, None)
            if cut and quoted:
                try:
                    table = _read_csv(piece, header, conv_opts, True, [])
                except pa.ArrowInvalid:
                    pass
                if table is not None and not _single_line_rows(piece, table.num_rows):
                    table = None
                if table is None:
                    scan = _scan_rows(data, final)
                    cut = _blank_tail(data, scan.end)
                    keep = bisect.bisect_left(scan.starts, cut)
                    scan = _Scan(scan.starts[:keep], cut, *(-1 if at >= cut else at for at in scan[2:]))
                    piece = _Piece(data, cut, offset, line, scan)
            if cut and table is None:
                bad_rows: list[pacsv.InvalidRow] = []
                try:
                    table = _read_csv(piece, header, conv_opts, quoted, bad_rows)
                except pa.ArrowInvalid as e:
                    err = _parse_error(piece, path, header, columns, bad_rows, e)
                    layout = piece.layout_error(path)
                    if layout is not None and (err.line is None or layout.line <= err.line):
                        raise layout from None
                    raise err from None
            if cut:
                newlines = _check_rows(piece, table, path, quoted)
                yield table, piece.lines(table.num_rows)
                offset += cut
                line += newlines
            elif len(data) > _MAX_ROW_BYTES:
                raise DataError(f"a row does not end within {_MAX_ROW_BYTES >> 20} MiB.", file=path,
                                line=line + data.count(b"\n", 0, len(data) - len(data.lstrip(b"\r\n"))),
                                fix='check the quoting of that row: a stray " starts a quoted value that '
                                    "runs on over the following lines.")
            if final:
                return
            data, final = _next_window(windows, cut, path, line)
    finally:
        windows.close()


def _next_window(windows: Generator[tuple[bytes, bool], int, None], used: int | None, path: Path,
                 line: int) -> tuple[bytes, bool]:
    """The next window of ``windows`` (sent ``used``, None for the first); a compressed file that stops
    decoding is a DataError at ``line``, the first line not yet read."""
    try:
        return next(windows) if used is None else windows.send(used)
    except OSError as e:
        raise _unreadable(path, e, line) from None


def is_list(kind: pa.DataType) -> bool:
    """Whether an Arrow type is a list (list, large_list or fixed_size_list)."""
    return pa.types.is_list(kind) or pa.types.is_large_list(kind) or pa.types.is_fixed_size_list(kind)


def _arrow_lists(kind: pa.DataType) -> pd.ArrowDtype | None:
    """pandas dtype of a list column: kept in Arrow (no Python object per row)."""
    return pd.ArrowDtype(kind) if is_list(kind) else None


def _to_frame(table: pa.Table, columns: list[str]) -> pd.DataFrame:
    return table.select(columns).to_pandas(types_mapper=_arrow_lists)


def string_lists(col: pa.Array) -> pa.Array | None:
    """A list column as list<string> (large_list stays large; booleans as 0/1, numbers as text);
    None when its items are not strings or numbers (a nested list, a struct)."""
    item = col.type.value_type
    if pa.types.is_boolean(item):
        col, item = pc.cast(col, pa.list_(pa.int8())), pa.int8()
    if not (pa.types.is_string(item) or pa.types.is_large_string(item) or pa.types.is_integer(item)
            or pa.types.is_floating(item)):
        return None
    return pc.cast(col, pa.large_list(pa.string()) if pa.types.is_large_list(col.type) else pa.list_(pa.string()))


def _as_string_batch(batch: pa.RecordBatch, path: Path, lists: frozenset[str]) -> pa.RecordBatch:
    """Cast every column to string (booleans as 0/1 first), a list column of ``lists`` (sequence fields)
    to a list of strings; any other column that has no text form (lists, structs, maps) is a DataError
    naming it."""
    arrays = []
    for name, col in zip(batch.schema.names, batch.columns):
        if name in lists and is_list(col.type):
            strings = string_lists(col)
            if strings is None:
                raise DataError(f"the column has Parquet type {col.type}: the list of a sequence field must hold "
                                "strings or numbers, one per value.", file=path, column=name,
                                fix="write each row's values as one flat list (a nested list cannot be a "
                                    "sequence).")
            arrays.append(strings)
            continue
        if pa.types.is_boolean(col.type):
            col = pc.cast(col, pa.int8())
        if not (pa.types.is_string(col.type) or pa.types.is_large_string(col.type)):
            try:
                col = pc.cast(col, pa.string())
            except (pa.ArrowNotImplementedError, pa.ArrowInvalid) as e:
                fix = ("write one number or string per row in this column (flatten lists and structs into "
                       "columns of their own)")
                if is_list(col.type):
                    fix += ", or declare the field type: sequence to read the list as its values"
                raise DataError(f"the column has Parquet type {col.type}, which has no text form "
                                f"({str(e).splitlines()[0]}).", file=path, column=name, fix=fix + ".") from None
        arrays.append(col)
    return pa.RecordBatch.from_arrays(arrays, names=batch.schema.names)


def _rebatch(parts: Iterable[tuple[pa.Table, np.ndarray]], chunk_rows: int, columns: list[str],
             path: Path) -> Iterator[tuple[int, pd.DataFrame]]:
    """Re-cut (table, line of each row) parts into chunks of ``chunk_rows`` rows on consecutive lines."""
    table: pa.Table | None = None
    lines = np.empty(0, dtype=np.int64)
    seen = False

    def cut(limit: int) -> int:
        jumps = np.flatnonzero(np.diff(lines[:limit]) != 1)
        return int(jumps[0]) + 1 if jumps.size else limit

    for part, part_lines in parts:
        if part.num_rows == 0:
            continue
        seen = True
        table = part if table is None or table.num_rows == 0 else pa.concat_tables([table, part])
        lines = np.concatenate([lines, part_lines])
        while table.num_rows >= chunk_rows:
            k = cut(chunk_rows)
            yield int(lines[0]), _to_frame(table.slice(0, k), columns)
            table, lines = table.slice(k), lines[k:]
    while table is not None and table.num_rows:
        k = cut(table.num_rows)
        yield int(lines[0]), _to_frame(table.slice(0, k), columns)
        table, lines = table.slice(k), lines[k:]
    if not seen:
        raise DataError("the file has a header but no data rows.", file=path,
                        fix="check that the file was written completely, or remove it from 'files'.")


def _parquet_parts(path: Path, columns: list[str], chunk_rows: int,
                   lists: frozenset[str]) -> Iterator[tuple[pa.Table, np.ndarray]]:
    line = 2
    batches = pq.ParquetFile(path).iter_batches(batch_size=chunk_rows, columns=columns)
    while True:
        try:
            batch = next(batches, None)
        except OSError as e:  # a damaged data page (the footer, read first, was whole)
            raise _unreadable(path, e, line) from None
        if batch is None:
            return
        yield pa.Table.from_batches([_as_string_batch(batch, path, lists)]), np.arange(line, line + batch.num_rows)
        line += batch.num_rows


def iter_chunks(path: str | Path, columns_as_str: list[str], chunk_rows: int = 262144,
                fmt: Format | None = None, list_columns: Iterable[str] = ()) -> Iterator[tuple[int, pd.DataFrame]]:
    """Stream the columns ``columns_as_str`` of a CSV or Parquet file as string columns.

    Yields (line number of the chunk's first row, DataFrame of at most ``chunk_rows``
    rows x len(columns_as_str) string columns); empty cells are "" (CSV) or missing
    (Parquet nulls). ``list_columns`` (sequence fields) may also be Parquet list columns of
    strings or numbers, given as pandas ``ArrowDtype`` list<string> columns. Raises DataError for
    a missing/empty file, a missing column, any other list column, or (CSV) a malformed row,
    blank line, bad line end, unclosed quote or invalid UTF-8, with its exact line.
    """
    path = Path(path)
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    fmt = fmt or detect_format(path)
    header, offset = _header(path, fmt)
    missing = [c for c in columns_as_str if c not in header]
    if missing:
        raise DataError(f"the header lacks column(s) {missing} (header: {header}).", file=path,
                        column=missing[0], line=1, fix="add the column to the file or fix the dataset schema.")
    columns = list(columns_as_str)
    if fmt == "parquet":
        yield from _rebatch(_parquet_parts(path, columns, chunk_rows, frozenset(list_columns)), chunk_rows,
                            columns, path)
        return
    block_size = int(min(max(chunk_rows * 128, _MIN_BLOCK), 1 << 26))
    yield from _rebatch(_csv_parts(path, header, columns, offset, block_size), chunk_rows, columns, path)
