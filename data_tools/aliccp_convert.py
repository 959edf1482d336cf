"""Convert the public Ali-CCP raw release into the library's input format.

Ali-CCP (Alibaba Click and Conversion Prediction; Ma et al., "Entire Space Multi-Task
Model", SIGIR 2018).  Raw layout, per split ``s`` in {train, test}::

    sample_skeleton_{s}.csv   sample_id,click,conversion,common_feature_index,num_features,feature_list
    common_features_{s}.csv   common_feature_index,num_features,feature_list

``feature_list`` is ``num_features`` entries ``field_id \\x02 feature_id \\x03 value`` joined
by ``\\x01``.  Common features (user side) are shared by all samples with the same
``common_feature_index``.  Field ids (as documented with the release):

    101 user id;  121 user profile category id;  122 user profile group id;  124 gender;
    125 age;  126 consumption level I;  127 consumption level II;  128 occupation;
    129 geography;  109_14 / 110_14 / 127_14 / 150_14 the user's category / shop / brand /
    intention-node history (multi-valued, with counts);  205 item id;  206 category;
    207 shop;  210 intention node;  216 brand;  508 / 509 / 702 / 853 crosses of
    109_14x206 / 110_14x207 / 127_14x216 / 150_14x210;  301 scenario (position) id.

Output (``out_dir``): ``train``/``valid``/``test`` Parquet (or CSV) files with one string
column ``f<field>`` per selected field holding that field's feature id (the first one when
a sample lists several; null / empty cell when absent), plus ``click`` and ``conversion``
(int8 0/1); ``valid`` is a deterministic ``valid_fraction`` of the raw train split (hash
of the row index and ``seed``; a split that ends up empty is not written and left out
of the schema); ``schema.yaml`` (fields categorical, tasks ctr/cvr) and
``conversion_report.json`` (rows read / written and other counts).

History fields (HISTORY_FIELDS: 109_14, 110_14, 127_14, 150_14; not among the defaults, select
them with ``--fields``) keep EVERY feature id of the line, in raw order (duplicates kept), joined
by "|" (the entries' count values are dropped, as for every field); the schema declares them
``type: sequence`` with ``max_len: 50`` (the library keeps the last 50 ids of a longer cell and
counts the truncation in its data report; the release does not document the order of the
entries) and ``pooling: mean``.  The report counts, per raw split and history field, the ids
written and the longest cell (``sequence_values``, ``sequence_max_len``); a history id that
contains "|" is an error naming the line.

Memory: each split's common-features file is loaded whole, but only the selected fields
are kept (one string per field per common_feature_index: a few hundred MB for the full
train split with the default fields, although the raw file is several GB because of the
multi-valued history fields; selecting those keeps their whole cells, a large share of that
size).  The skeleton is streamed in chunks of ``chunk_rows`` lines.

Usage: python data_tools/aliccp_convert.py RAW_DIR OUT_DIR [--format parquet|csv]
"""
from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Iterator, Literal, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

log = logging.getLogger("aliccp_convert")

DEFAULT_FIELDS: tuple[str, ...] = (
    "101", "121", "122", "124", "125", "126", "127", "128", "129",  # user (common features)
    "205", "206", "207", "210", "216",  # item
    "508", "509", "702", "853",  # user-history x item crosses
    "301",  # scenario / position
)
# Multi-valued user-history fields, written as sequence columns (see the module docstring).
HISTORY_FIELDS: tuple[str, ...] = ("109_14", "110_14", "127_14", "150_14")
HISTORY_MAX_LEN = 50
SEQUENCE_SEPARATOR = "|"
# Each entry: field \x02 feature id \x03 value (a number).
_ENTRY_RE = (r"^(?P<field>[^\x01\x02\x03]+)\x02(?P<fid>[^\x01\x02\x03]+)\x03"
             r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?$")


class AliCCPFormatError(ValueError):
    """A malformed raw line; the message names the file and the 1-based line number."""


@dataclass
class SplitStats:
    """Counts for one output split."""

    rows_written: int = 0
    clicks: int = 0
    conversions: int = 0


@dataclass
class ConversionReport:
    """What ``convert_aliccp`` read and wrote (also saved as conversion_report.json)."""

    out_dir: str
    fields: list[str]
    skeleton_rows_read: dict[str, int] = field(default_factory=dict)
    common_rows_read: dict[str, int] = field(default_factory=dict)
    samples_without_common: dict[str, int] = field(default_factory=dict)  # index not in common file
    conversion_without_click: dict[str, int] = field(default_factory=dict)  # kept as-is
    field_coverage: dict[str, dict[str, float]] = field(default_factory=dict)  # raw split -> field -> non-null share
    sequence_values: dict[str, dict[str, int]] = field(default_factory=dict)  # raw split -> history field -> ids
    sequence_max_len: dict[str, dict[str, int]] = field(default_factory=dict)  # raw split -> history field -> longest
    splits: dict[str, SplitStats] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _raw_path(raw_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.csv", f"{stem}.csv.gz"):
        if (raw_dir / name).is_file():
            return raw_dir / name
    raise FileNotFoundError(f"{raw_dir / (stem + '.csv')} not found (nor .csv.gz)")


def _open(path: Path) -> IO[bytes]:
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def _line_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[int, pa.StringArray]]:
    """Yield (1-based number of the chunk's first line, [<= chunk_rows] lines without EOL)."""
    line_no = 1
    with _open(path) as fh:
        while True:
            raw = fh.readlines(0) if chunk_rows <= 0 else [ln for _, ln in zip(range(chunk_rows), fh)]
            if not raw:
                return
            arr = pc.utf8_rtrim(_to_utf8(pa.array(raw, pa.binary()), path, line_no), characters="\r\n")
            yield line_no, arr
            line_no += len(raw)


def _to_utf8(arr: pa.BinaryArray, path: Path, first_line: int) -> pa.StringArray:
    try:
        return arr.cast(pa.string())
    except pa.ArrowInvalid:
        for k, value in enumerate(arr.to_pylist()):  # error path only: locate the bad line
            try:
                value.decode("utf-8")
            except UnicodeDecodeError:
                raise AliCCPFormatError(f"{path}:{first_line + k}: not valid UTF-8") from None
        raise


def _fail(path: Path, first_line: int, lines: pa.StringArray, bad: np.ndarray, reason: str) -> None:
    """Raise for the first True of ``bad`` [n] (no-op when none)."""
    hits = np.flatnonzero(bad)
    if hits.size:
        k = int(hits[0])
        text = lines[k].as_py()
        raise AliCCPFormatError(f"{path}:{first_line + k}: {reason} "
                                f"({int(hits.size)} such line(s) in this chunk): {text[:200]!r}")


def _split_columns(lines: pa.StringArray, n_cols: int, path: Path, first_line: int) -> list[pa.Array]:
    """Comma-split each of the [n] lines into exactly ``n_cols`` columns (the last keeps the rest)."""
    parts = pc.split_pattern(lines, ",", max_splits=n_cols - 1)
    n_parts = pc.list_value_length(parts).to_numpy(zero_copy_only=False)
    _fail(path, first_line, lines, n_parts != n_cols, f"expected {n_cols} comma-separated columns")
    return [pc.list_element(parts, k) for k in range(n_cols)]


def _check_count(col: pa.Array, lines: pa.StringArray, path: Path, first_line: int, what: str) -> np.ndarray:
    ok = pc.match_substring_regex(col, r"^\d+$").to_numpy(zero_copy_only=False)
    _fail(path, first_line, lines, ~ok, f"{what} is not a non-negative integer")
    return pc.cast(col, pa.int64()).to_numpy()


def _parse_features(feature_list: pa.StringArray, declared: np.ndarray, fields: Sequence[str],
                    lines: pa.StringArray, path: Path, first_line: int) -> list[pa.Array]:
    """Per selected field, the [n] string array of the first feature id of each line (null if absent);
    for a history field (HISTORY_FIELDS) all its ids of the line, in order, "|"-joined.

    feature_list: [n] raw feature lists; declared: [n] int64 num_features of each line.
    """
    n = len(feature_list)
    empty = pc.equal(feature_list, "").to_numpy(zero_copy_only=False)
    entries = pc.split_pattern(feature_list, "\x01")
    counts = np.where(empty, 0, pc.list_value_length(entries).to_numpy(zero_copy_only=False))
    _fail(path, first_line, lines, counts != declared, "num_features does not match the feature list")
    parent = pc.list_parent_indices(entries).to_numpy()
    flat = pc.list_flatten(entries)
    keep = ~empty[parent]
    parent, flat = parent[keep], flat.filter(pa.array(keep))
    good = pc.match_substring_regex(flat, _ENTRY_RE).to_numpy(zero_copy_only=False)
    if not good.all():
        bad_line = np.zeros(n, dtype=bool)
        bad_line[parent[~good]] = True
        _fail(path, first_line, lines, bad_line, "malformed feature entry (want field\\x02id\\x03value)")
    # Parse only the entries of selected fields (most raw entries are multi-valued history fields).
    wanted = "^(?:" + "|".join(re.escape(f) for f in fields) + ")\x02"
    sel = pc.match_substring_regex(flat, wanted).to_numpy(zero_copy_only=False)
    parsed = pc.extract_regex(flat.filter(pa.array(sel)), _ENTRY_RE)
    fidx = pc.index_in(parsed.field("field"), value_set=pa.array(list(fields), pa.string())).to_numpy()
    n_fields = len(fields)
    key = parent[sel] * n_fields + fidx.astype(np.int64)
    ids = parsed.field("fid")
    uniq, first = np.unique(key, return_index=True)  # first occurrence of each (line, field)
    lines_of = parent[sel]
    out = []
    for j, name in enumerate(fields):
        if name in HISTORY_FIELDS:
            out.append(_join_ids(ids, lines_of, fidx == j, n, lines, path, first_line))
            continue
        m = uniq % n_fields == j
        take = np.full(n, -1, dtype=np.int64)
        take[uniq[m] // n_fields] = first[m]
        out.append(ids.take(pa.array(take, mask=take < 0)))
    return out


def _join_ids(ids: pa.StringArray, line_of: np.ndarray, mine: np.ndarray, n: int, lines: pa.StringArray,
              path: Path, first_line: int) -> pa.StringArray:
    """[n] cells of one history field: its ids (``ids`` [E] where ``mine`` [E], of lines ``line_of``
    [E]) "|"-joined in raw order per line; null where the line has none."""
    take = np.flatnonzero(mine)
    take = take[np.argsort(line_of[take], kind="stable")]  # by line, raw order within a line
    values = ids.take(pa.array(take))
    bad = pc.match_substring(values, SEQUENCE_SEPARATOR).to_numpy(zero_copy_only=False)
    if bad.any():
        bad_line = np.zeros(n, dtype=bool)
        bad_line[line_of[take][bad]] = True
        _fail(path, first_line, lines, bad_line, f"a history feature id contains {SEQUENCE_SEPARATOR!r}")
    counts = np.bincount(line_of[take], minlength=n)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    joined = pc.binary_join(pa.ListArray.from_arrays(pa.array(offsets), values), SEQUENCE_SEPARATOR)
    return pc.if_else(pa.array(counts > 0), joined, pa.scalar(None, pa.string()))


def _load_common(path: Path, fields: Sequence[str], chunk_rows: int) -> tuple[pd.Index, list[pa.Array], int]:
    """Read common features: (index of common_feature_index [C], per field [C] ids, lines read)."""
    keys: list[pa.Array] = []
    cols: list[list[pa.Array]] = [[] for _ in fields]
    rows = 0
    for first_line, lines in _line_chunks(path, chunk_rows):
        cfi, num, flist = _split_columns(lines, 3, path, first_line)
        _fail(path, first_line, lines, pc.equal(cfi, "").to_numpy(zero_copy_only=False),
              "empty common_feature_index")
        declared = _check_count(num, lines, path, first_line, "num_features")
        for j, arr in enumerate(_parse_features(flist, declared, fields, lines, path, first_line)):
            cols[j].append(arr)
        keys.append(cfi)
        rows += len(lines)
    key_arr = pa.concat_arrays(keys) if keys else pa.array([], pa.string())
    index = pd.Index(key_arr.to_numpy(zero_copy_only=False), dtype=object)
    dup = np.flatnonzero(index.duplicated())
    if dup.size:
        raise AliCCPFormatError(f"{path}:{int(dup[0]) + 1}: duplicate common_feature_index "
                                f"{index[dup[0]]!r}")
    merged = [pa.concat_arrays(c) if c else pa.array([], pa.string()) for c in cols]
    return index, merged, rows


def _unit_hash(idx: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of (row index [n] uint64, seed) mapped to [0, 1) float64 [n]."""
    with np.errstate(over="ignore"):
        z = idx.astype(np.uint64) + np.uint64((int(seed) * 0x9E3779B97F4A7C15 + 0x9E3779B97F4A7C15) % 2**64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


class _Writer:
    """Streams tables of one output split to ``<path>.tmp``; ``commit`` renames into place."""

    def __init__(self, path: Path, schema: pa.Schema, fmt: str) -> None:
        self.path, self.tmp, self.fmt = path, path.with_name(path.name + ".tmp"), fmt
        if fmt == "parquet":
            import pyarrow.parquet as pq

            self.sink = None
            self.writer: Any = pq.ParquetWriter(self.tmp, schema)
        else:
            import pyarrow.csv as pacsv

            self.sink = open(self.tmp, "wb")
            self.sink.write((",".join(schema.names) + "\n").encode())
            self.writer = pacsv.CSVWriter(self.sink, schema, write_options=pacsv.WriteOptions(
                include_header=False, quoting_style="needed"))

    def write(self, table: pa.Table) -> None:
        if table.num_rows:
            self.writer.write_table(table)

    def close(self) -> None:
        self.writer.close()
        if self.sink is not None:
            self.sink.close()

    def commit(self) -> None:
        os.replace(self.tmp, self.path)


def _schema_yaml(fields: Sequence[str], files: dict[str, str]) -> str:
    lines = ["name: aliccp",
             "files: {" + ", ".join(f"{k}: {v}" for k, v in files.items()) + "}",
             "fields:"]
    lines += [f'  - {{name: f{f}, type: sequence, separator: "{SEQUENCE_SEPARATOR}", max_len: {HISTORY_MAX_LEN}, '
              "pooling: mean}" if f in HISTORY_FIELDS else f"  - {{name: f{f}, type: categorical}}" for f in fields]
    lines += ["tasks:", "  - {name: ctr, label: click}", '  - {name: cvr, label: conversion, "on": ctr}', ""]
    return "\n".join(lines)


def convert_aliccp(
    raw_dir: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    fields: Sequence[str] = DEFAULT_FIELDS,
    valid_fraction: float = 0.1,
    seed: int = 0,
    chunk_rows: int = 500_000,
    format: Literal["parquet", "csv"] = "parquet",
) -> ConversionReport:
    """Convert ``raw_dir``'s Ali-CCP files into ``out_dir`` (see the module docstring).

    Raises AliCCPFormatError (file:line) on a malformed line; outputs are written as
    ``*.tmp`` and renamed only when every split converted.
    """
    if not 0.0 <= valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in [0, 1), got {valid_fraction}")
    if format not in ("parquet", "csv"):
        raise ValueError(f"format must be 'parquet' or 'csv', got {format!r}")
    fields = [str(f) for f in fields]
    if len(set(fields)) != len(fields) or not fields:
        raise ValueError("fields must be a non-empty list of distinct field ids")
    raw, out = Path(raw_dir), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    names = [f"f{f}" for f in fields]
    schema = pa.schema([pa.field(c, pa.string()) for c in names]
                       + [pa.field("click", pa.int8()), pa.field("conversion", pa.int8())])
    files = {s: f"{s}.{format}" for s in ("train", "valid", "test")}
    writers = {s: _Writer(out / files[s], schema, format) for s in files}
    report = ConversionReport(out_dir=str(out), fields=list(fields),
                              splits={s: SplitStats() for s in files})
    ok = False
    try:
        for raw_split in ("train", "test"):
            skeleton = _raw_path(raw, f"sample_skeleton_{raw_split}")
            common_path = _raw_path(raw, f"common_features_{raw_split}")
            log.info("loading %s", common_path)
            index, common_cols, n_common = _load_common(common_path, fields, chunk_rows)
            report.common_rows_read[raw_split] = n_common
            n_read = n_missing = n_conv_no_click = 0
            non_null = np.zeros(len(fields), dtype=np.int64)
            history = [j for j, f in enumerate(fields) if f in HISTORY_FIELDS]
            seq_values = dict.fromkeys(history, 0)
            seq_max = dict.fromkeys(history, 0)
            for first_line, lines in _line_chunks(skeleton, chunk_rows):
                _, click, conv, cfi, num, flist = _split_columns(lines, 6, skeleton, first_line)
                for col, what in ((click, "click"), (conv, "conversion")):
                    bad = ~pc.is_in(col, value_set=pa.array(["0", "1"])).to_numpy(zero_copy_only=False)
                    _fail(skeleton, first_line, lines, bad, f"{what} is not 0 or 1")
                declared = _check_count(num, lines, skeleton, first_line, "num_features")
                own = _parse_features(flist, declared, fields, lines, skeleton, first_line)
                pos = index.get_indexer(cfi.to_numpy(zero_copy_only=False))
                n_missing += int((pos < 0).sum())
                common_take = pa.array(pos, mask=pos < 0)
                cols = [pc.coalesce(o, c.take(common_take)) for o, c in zip(own, common_cols)]
                non_null += np.array([len(c) - c.null_count for c in cols], dtype=np.int64)
                for j in history:  # ids per cell: separators + 1 (null cells count 0)
                    per_cell = pc.fill_null(pc.add(pc.count_substring(cols[j], SEQUENCE_SEPARATOR), 1), 0)
                    seq_values[j] += int(pc.sum(per_cell).as_py() or 0)
                    seq_max[j] = max(seq_max[j], int(pc.max(per_cell).as_py() or 0))
                click_i8 = pc.cast(click, pa.int8())
                conv_i8 = pc.cast(conv, pa.int8())
                table = pa.Table.from_arrays(cols + [click_i8, conv_i8], schema=schema)
                click_np, conv_np = click_i8.to_numpy(), conv_i8.to_numpy()
                n_conv_no_click += int(((conv_np == 1) & (click_np == 0)).sum())
                n_read += len(lines)
                if raw_split == "train":
                    row_idx = np.arange(first_line - 1, first_line - 1 + len(lines), dtype=np.uint64)
                    is_valid = _unit_hash(row_idx, seed) < valid_fraction
                    parts = {"train": ~is_valid, "valid": is_valid}
                else:
                    parts = {"test": np.ones(len(lines), dtype=bool)}
                for split, mask in parts.items():
                    sub = table.filter(pa.array(mask))
                    writers[split].write(sub)
                    st = report.splits[split]
                    st.rows_written += sub.num_rows
                    st.clicks += int(click_np[mask].sum())
                    st.conversions += int(conv_np[mask].sum())
            report.skeleton_rows_read[raw_split] = n_read
            report.samples_without_common[raw_split] = n_missing
            report.conversion_without_click[raw_split] = n_conv_no_click
            report.field_coverage[raw_split] = {
                nm: float(c) / max(n_read, 1) for nm, c in zip(names, non_null)}
            report.sequence_values[raw_split] = {names[j]: seq_values[j] for j in history}
            report.sequence_max_len[raw_split] = {names[j]: seq_max[j] for j in history}
            if n_conv_no_click:
                log.warning("%s: %d rows have conversion=1 and click=0 (kept as-is)", skeleton, n_conv_no_click)
            log.info("%s: read %d rows", skeleton, n_read)
            del index, common_cols
        ok = True
    finally:
        for w in writers.values():
            w.close()
        for split, w in writers.items():
            if ok and report.splits[split].rows_written > 0:
                w.commit()
            else:
                w.tmp.unlink(missing_ok=True)
    empty = [s for s, st in report.splits.items() if st.rows_written == 0]
    for split in empty:  # an empty split is left out of the files and the schema
        log.warning("split %r is empty: not written, left out of schema.yaml", split)
        (out / files[split]).unlink(missing_ok=True)  # stale file of an earlier run
    (out / "schema.yaml").write_text(_schema_yaml(fields, {s: f for s, f in files.items() if s not in empty}))
    (out / "conversion_report.json").write_text(json.dumps(report.to_dict(), indent=2) + "\n")
    return report


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; prints the rows read / written; returns the exit code."""
    ap = argparse.ArgumentParser(description="Convert raw Ali-CCP into train/valid/test files + schema.yaml")
    ap.add_argument("raw_dir", type=Path)
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--fields", nargs="+", default=list(DEFAULT_FIELDS), help="field ids to keep")
    ap.add_argument("--valid-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--chunk-rows", type=int, default=500_000)
    ap.add_argument("--format", choices=("parquet", "csv"), default="parquet")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    try:
        rep = convert_aliccp(args.raw_dir, args.out_dir, fields=args.fields, valid_fraction=args.valid_fraction,
                             seed=args.seed, chunk_rows=args.chunk_rows, format=args.format)
    except AliCCPFormatError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"read: skeleton {rep.skeleton_rows_read}, common features {rep.common_rows_read}")
    print("written: " + ", ".join(f"{s} {st.rows_written} rows ({st.clicks} clicks, {st.conversions} conversions)"
                                  for s, st in rep.splits.items()))
    if any(rep.samples_without_common.values()):
        print(f"samples whose common_feature_index is unknown: {rep.samples_without_common}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
