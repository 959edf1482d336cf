"""Encoded, memory-mapped cache of a dataset's splits.

``EncodedStore.build_or_load`` validates and encodes the source files once (two
streaming passes: fit the encoders on train, then validate + encode every split
chunk by chunk) into ``cache_dir/<name>-<key[:16]>/``::

    meta.json        key, schema, sources, row counts, dtypes, report
    encoders.json    fitted FeatureEncoders
    <split>/<field>.bin          int32 (categorical) or float32 (numeric), one value per row;
                                 int32 [rows, max_len] in row-major order (sequence)
    <split>/label__<column>.bin  float32 0/1

Later calls with the same schema, options and unchanged source files (path, size,
mtime) load the cache without reading the sources.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch

from . import reader
from .encoders import FeatureEncoders, categorical_keys, parse_numeric, sequence_values
from .errors import DataError
from .features import FeatureSpec
from .schema import DatasetSchema, FieldSpec, TaskSpec

CACHE_VERSION = 1
CAT_DTYPE = np.dtype("<i4")
SEQ_DTYPE = np.dtype("<i4")
NUM_DTYPE = np.dtype("<f4")
LABEL_DTYPE = np.dtype("<f4")
LABEL_ONE = ("1", "1.0")
LABEL_ZERO = ("0", "0.0")
FUNNEL_FIX = ("correct those rows, or set data.invalid_funnel_rows=drop to drop them "
              "(they are then counted in the report).")
_MAX_LINES = 5
_TOTALS = ("rows", "values")  # sequence counts that are sizes, not repairs: left out of the summary


# ----------------------------------------------------------------------------- split views
@dataclass
class TensorSplit:
    """A split in RAM: cat [N, Fc] int64, num [N, Fn] float32, labels task -> [N] float32,
    seq sequence field -> [N, max_len] int32 (``BatchLoader`` makes each batch's int64)."""

    cat: torch.Tensor
    num: torch.Tensor
    labels: dict[str, torch.Tensor] = field(default_factory=dict)
    seq: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def n_rows(self) -> int:
        return int(self.cat.shape[0])

    def __len__(self) -> int:
        return self.n_rows


@dataclass
class SplitArrays:
    """Memory-mapped columns of one split: cat / num are per-field [N] arrays
    (int32 / float32) in FeatureSpec order; labels maps label column -> [N] float32;
    seq maps sequence field -> [N, max_len] int32."""

    name: str
    n_rows: int
    cat_names: tuple[str, ...]
    num_names: tuple[str, ...]
    cat: tuple[np.ndarray, ...]
    num: tuple[np.ndarray, ...]
    labels: dict[str, np.ndarray]
    seq: dict[str, np.ndarray] = field(default_factory=dict)

    def to_tensors(self, task_labels: dict[str, str]) -> TensorSplit:
        """Copy into RAM: cat [N, Fc] int64, num [N, Fn] float32, labels task -> [N] float32,
        seq field -> [N, max_len] int32.

        task_labels: task name -> label column (e.g. ``store.task_labels``).
        """
        cat = np.empty((self.n_rows, len(self.cat)), dtype=np.int64)
        for j, col in enumerate(self.cat):
            cat[:, j] = col
        num = np.empty((self.n_rows, len(self.num)), dtype=np.float32)
        for j, col in enumerate(self.num):
            num[:, j] = col
        labels = {}
        for task, column in task_labels.items():
            if column not in self.labels:
                raise KeyError(f"label column {column!r} of task {task!r} is not in the cache of split "
                               f"{self.name!r} (cached: {sorted(self.labels)})")
            labels[task] = torch.from_numpy(np.array(self.labels[column], dtype=np.float32))
        seq = {name: torch.from_numpy(np.array(ids, dtype=np.int32)) for name, ids in self.seq.items()}
        return TensorSplit(torch.from_numpy(cat), torch.from_numpy(num), labels, seq)


# ----------------------------------------------------------------------------- validation
class _Problems:
    """Bad cells of one file, gathered over all chunks so the error can count them."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.items: dict[tuple[str, str], dict[str, Any]] = {}

    def __bool__(self) -> bool:
        return bool(self.items)

    def add(self, column: str, kind: str, mask: np.ndarray, line0: int, values: pd.Series | None,
            problem: str, fix: str, value: object = None) -> None:
        idx = np.flatnonzero(mask)
        if idx.size == 0:
            return
        item = self.items.setdefault((column, kind), {"count": 0, "lines": [], "problem": problem, "fix": fix,
                                                      "value": value if values is None else values.iloc[idx[0]]})
        item["count"] += int(idx.size)
        room = _MAX_LINES - len(item["lines"])
        if room > 0:
            item["lines"].extend(int(line0 + i) for i in idx[:room])

    def raise_if_any(self) -> None:
        if not self.items:
            return
        entries = sorted(self.items.items(), key=lambda kv: kv[1]["lines"][0])
        (column, _), first = entries[0]
        text = f"{first['problem']} {first['count']} row(s) in this file, first at line(s) {first['lines']}."
        others = [f"column {c!r}: {it['count']} row(s) ({it['problem']}) first at line {it['lines'][0]}"
                  for (c, _), it in entries[1:]]
        if others:
            text += " Other problems in this file: " + "; ".join(others) + "."
        raise DataError(text, file=self.path, column=column, line=first["lines"][0], value=first["value"],
                        fix=first["fix"], has_value=True)


def _validate_numeric(df: pd.DataFrame, columns: list[str], line0: int, problems: _Problems) -> None:
    """Parse numeric columns in place (float64, NaN = missing) and record bad cells."""
    for col in columns:
        raw = df[col]
        x, _, bad = parse_numeric(raw)
        problems.add(col, "numeric", bad, line0, raw, "non-numeric (or infinite) value in a numeric field.",
                     "clean the column, or declare the field as categorical in the dataset schema.")
        df[col] = x


def _validate_sequences(df: pd.DataFrame, fields: list[FieldSpec], line0: int, problems: _Problems) -> None:
    """Record rows of sequence fields with dtype int holding a value that is not an integer (df is not
    changed)."""
    for f in fields:
        if f.dtype == "str":
            continue
        raw = df[f.name]
        bad = sequence_values(raw, f.separator, f.dtype, f.name).bad
        problems.add(f.name, "sequence", bad, line0, raw,
                     f"a value of a sequence field with dtype {f.dtype} is not an integer.",
                     "clean the column, or set dtype: str on the field in the dataset schema "
                     "to use the values as written.")


def _validate_categorical(df: pd.DataFrame, fields: list[FieldSpec], line0: int, problems: _Problems) -> None:
    """Record cells of categorical fields with dtype int that are not integers (df is not changed)."""
    for f in fields:
        if f.dtype == "str":
            continue
        raw = df[f.name]
        _, _, bad = categorical_keys(raw, f.dtype)
        problems.add(f.name, "categorical", bad, line0, raw,
                     f"non-integer value in a categorical field with dtype {f.dtype}.",
                     "clean the column, or set dtype: str on the field in the dataset schema "
                     "to use the values as written.")


def _parse_labels(df: pd.DataFrame, columns: list[str], line0: int, problems: _Problems) -> dict[str, np.ndarray]:
    """Label columns -> [n] float32 0/1 (NaN where invalid, which is recorded)."""
    out = {}
    for col in columns:
        raw = df[col]
        s = raw.astype("str")
        one = s.isin(LABEL_ONE).to_numpy(dtype=bool)
        zero = s.isin(LABEL_ZERO).to_numpy(dtype=bool)
        bad = ~(one | zero)
        problems.add(col, "label", bad, line0, raw,
                     "label is empty, NaN or not 0/1 (accepted: 0, 1, 0.0, 1.0).",
                     "fill in or remove the rows without a valid 0/1 label.")
        y = np.full(len(s), np.nan, dtype=np.float32)
        y[one] = 1.0
        y[zero] = 0.0
        out[col] = y
    return out


# ----------------------------------------------------------------------------- helpers
def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name).strip(".") or "dataset"


def _file_names(names: list[str], prefix: str) -> list[str]:
    """One .bin file name per column; falls back to positional names on clashes or odd characters."""
    out = [f"{prefix}{n}.bin" if re.fullmatch(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*", n) else
           f"{prefix}col{j}_{hashlib.sha1(n.encode()).hexdigest()[:8]}.bin" for j, n in enumerate(names)]
    return out


def _source_info(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _sequence_widths(schema: DatasetSchema) -> dict[str, int]:
    """max_len of every sequence field: the width of its [rows, max_len] file."""
    return {f.name: f.max_len for f in schema.sequences}


def cache_key(schema: DatasetSchema, invalid_funnel_rows: str, sources: dict[str, Path]) -> str:
    """sha256 over the canonical schema, options, CACHE_VERSION and each source's path/size/mtime."""
    payload = {"schema": schema.to_dict(), "invalid_funnel_rows": invalid_funnel_rows,
               "cache_version": CACHE_VERSION, "sources": {s: _source_info(p) for s, p in sources.items()}}
    blob = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def _summary(name: str, meta: dict[str, Any], path: Path, seconds: float, built: bool) -> str:
    rows = ", ".join(f"{s} {v['n_rows']:,}" for s, v in meta["splits"].items())
    if not built:
        return f"[data] {name}: loaded cache {path} ({rows} rows) in {seconds:.2f}s"
    parts = [f"[data] {name}: built cache {path} in {seconds:.1f}s ({rows} rows)"]
    for split, rep in meta["report"]["splits"].items():
        notes = [f"dropped {n:,} ({reason})" for reason, n in rep["rows_dropped"].items() if n]
        for fname, counts in rep["fields"].items():
            notes += [f"{fname} {kind} {n:,}" for kind, n in counts.items() if n and kind not in _TOTALS]
        if notes:
            parts.append(f"  {split}: " + ", ".join(notes))
    return "\n".join(parts)


# ----------------------------------------------------------------------------- the store
class EncodedStore:
    """Encoded splits of one dataset, memory-mapped from the cache directory."""

    def __init__(self, schema: DatasetSchema, path: Path, meta: dict[str, Any], encoders: FeatureEncoders,
                 from_cache: bool) -> None:
        self.schema = schema
        self.path = path
        self.meta = meta
        self.encoders = encoders
        self.from_cache = from_cache
        self._splits: dict[str, SplitArrays] = {}

    # ------------------------------------------------------------------ access
    @property
    def key(self) -> str:
        return self.meta["key"]

    @property
    def report(self) -> dict[str, Any]:
        """Per split: file, rows_read, rows_kept, rows_dropped {reason: n}, positives {label: n},
        fields {categorical: {missing, oov} | numeric: {filled_na} | sequence: {rows, values,
        truncated_rows, truncated_values, oov, empty_rows, skipped_empty}}."""
        return self.meta["report"]

    @property
    def feature_spec(self) -> FeatureSpec:
        return self.encoders.feature_spec()

    @property
    def tasks(self) -> list[TaskSpec]:
        """The selected tasks (their labels are in ``task_labels``)."""
        return list(self.schema.tasks)

    @property
    def parent_tasks(self) -> list[TaskSpec]:
        """Unselected tasks kept only because a selected task is defined ``on`` them."""
        return list(self.schema.parent_tasks)

    @property
    def task_labels(self) -> dict[str, str]:
        """Task name -> label column for the tasks and their unselected parents."""
        return self.schema.task_labels

    @property
    def splits(self) -> list[str]:
        return list(self.meta["splits"])

    def split(self, name: str) -> SplitArrays:
        """Memory-mapped arrays of split ``name``."""
        if name not in self.meta["splits"]:
            raise KeyError(f"unknown split {name!r}; this dataset has {self.splits}")
        if name not in self._splits:
            info = self.meta["splits"][name]
            n = int(info["n_rows"])

            def mm(rel: str, dtype: np.dtype, width: int | None = None) -> np.ndarray:
                shape = (n,) if width is None else (n, width)
                if n == 0:
                    return np.zeros(shape, dtype=dtype)
                return np.memmap(self.path / rel, dtype=dtype, mode="r", shape=shape)

            widths = _sequence_widths(self.schema)
            self._splits[name] = SplitArrays(
                name, n, tuple(info["cat"]), tuple(info["num"]),
                tuple(mm(rel, CAT_DTYPE) for rel in info["cat"].values()),
                tuple(mm(rel, NUM_DTYPE) for rel in info["num"].values()),
                {col: mm(rel, LABEL_DTYPE) for col, rel in info["labels"].items()},
                {col: mm(rel, SEQ_DTYPE, widths[col]) for col, rel in info.get("seq", {}).items()},
            )
        return self._splits[name]

    def tensors(self, name: str) -> TensorSplit:
        """``split(name).to_tensors(self.task_labels)``."""
        return self.split(name).to_tensors(self.task_labels)

    # ------------------------------------------------------------------ building
    @classmethod
    def build_or_load(
        cls,
        schema: DatasetSchema,
        root: str | Path,
        cache_dir: str | Path,
        invalid_funnel_rows: Literal["error", "drop"] = "error",
        log: Callable[[str], Any] | None = print,
        chunk_rows: int = 262144,
    ) -> "EncodedStore":
        """Load the cache for (schema, sources, options), building it first if needed.

        Raises DataError for missing/empty/invalid source files (see the module doc).
        ``chunk_rows`` only bounds memory; it does not change the result or the key.
        """
        if invalid_funnel_rows not in ("error", "drop"):
            raise ValueError(f"invalid_funnel_rows must be 'error' or 'drop', got {invalid_funnel_rows!r}")
        t0 = time.perf_counter()
        root = Path(root)
        sources = {split: root / fname for split, fname in schema.files.items()}
        for split, path in sources.items():
            if not path.is_file():
                raise DataError(f"source file of split {split!r} not found.", file=path,
                                fix="check the data root and the 'files' entries of the dataset schema.")
        key = cache_key(schema, invalid_funnel_rows, sources)
        cache_dir = Path(cache_dir)
        final = cache_dir / f"{_safe_name(schema.name)}-{key[:16]}"
        store = cls._try_load(schema, final, key)
        if store is not None:
            if log:
                log(_summary(schema.name, store.meta, final, time.perf_counter() - t0, built=False))
            return store

        cache_dir.mkdir(parents=True, exist_ok=True)
        tmp = cache_dir / f".{final.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        try:
            meta, encoders = _build(schema, sources, tmp, key, invalid_funnel_rows, chunk_rows)
            meta["build_seconds"] = round(time.perf_counter() - t0, 3)
            encoders.save(tmp / "encoders.json")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
            if final.exists():  # a stale or broken directory under our key (a valid one was tried above)
                other = cls._try_load(schema, final, key)
                if other is not None:  # built concurrently by someone else
                    shutil.rmtree(tmp, ignore_errors=True)
                    return other
                shutil.rmtree(final)
            try:
                os.replace(tmp, final)
            except OSError:
                other = cls._try_load(schema, final, key)
                if other is None:
                    raise
                shutil.rmtree(tmp, ignore_errors=True)
                return other
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        store = cls(schema, final, meta, encoders, from_cache=False)
        if log:
            log(_summary(schema.name, meta, final, time.perf_counter() - t0, built=True))
        return store

    @classmethod
    def _try_load(cls, schema: DatasetSchema, path: Path, key: str) -> "EncodedStore | None":
        """The store at ``path`` if it is complete and made for ``key``, else None."""
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            if meta.get("key") != key or meta.get("cache_version") != CACHE_VERSION:
                return None
            widths = _sequence_widths(schema)
            for info in meta["splits"].values():
                size = int(info["n_rows"]) * 4
                for group in ("cat", "num", "labels"):
                    for rel in info[group].values():
                        if (path / rel).stat().st_size != size:
                            return None
                for col, rel in info.get("seq", {}).items():
                    if (path / rel).stat().st_size != size * widths[col]:
                        return None
            encoders = FeatureEncoders.load(path / "encoders.json")
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return cls(schema, path, meta, encoders, from_cache=True)


def _build(schema: DatasetSchema, sources: dict[str, Path], out: Path, key: str, invalid_funnel_rows: str,
           chunk_rows: int) -> tuple[dict[str, Any], FeatureEncoders]:
    """Validate and encode every split into ``out``; returns (meta, fitted encoders)."""
    fmts = {s: schema.file_format(s) for s in sources}
    layout = _Layout.of(schema)
    _check_headers(schema, sources, fmts, layout)
    encoders = _fit_encoders(schema, sources["train"], fmts["train"], layout, chunk_rows)
    edges = _funnel_edges(schema)
    splits_meta: dict[str, Any] = {}
    report: dict[str, Any] = {"invalid_funnel_rows": invalid_funnel_rows, "splits": {}}
    for split, path in sources.items():
        splits_meta[split], report["splits"][split] = _encode_split(
            schema, encoders, layout, edges, out, split, path, fmts[split], invalid_funnel_rows, chunk_rows)
    encoders.reset_counters()
    return _meta(schema, key, invalid_funnel_rows, sources, splits_meta, report), encoders


@dataclass(frozen=True)
class _Layout:
    """The columns a build reads (categorical, numeric, label, sequence) and the .bin file of each in a
    split folder."""

    cat: list[str]
    num: list[str]
    labels: list[str]
    cat_files: list[str]
    num_files: list[str]
    label_files: list[str]
    seq: list[str]
    seq_files: list[str]

    @classmethod
    def of(cls, schema: DatasetSchema) -> "_Layout":
        cat = [f.name for f in schema.categorical]
        num = [f.name for f in schema.numeric]
        seq = [f.name for f in schema.sequences]
        labels = schema.label_columns
        cat_files, num_files, seq_files = _file_names(cat, ""), _file_names(num, ""), _file_names(seq, "")
        label_files = _file_names(labels, "label__")
        every = cat_files + num_files + label_files + seq_files
        if len(set(every)) < len(every):  # two columns would share a file: number them
            cat_files = [f"cat{j}.bin" for j in range(len(cat))]
            num_files = [f"num{j}.bin" for j in range(len(num))]
            label_files = [f"label{j}.bin" for j in range(len(labels))]
            seq_files = [f"seq{j}.bin" for j in range(len(seq))]
        return cls(cat, num, labels, cat_files, num_files, label_files, seq, seq_files)

    @property
    def features(self) -> list[str]:
        """The feature columns: categorical, numeric, sequence."""
        return self.cat + self.num + self.seq

    @property
    def needed(self) -> list[str]:
        """Every column the build reads: the features, then the labels."""
        return self.features + self.labels


def _check_headers(schema: DatasetSchema, sources: dict[str, Path], fmts: dict[str, str], layout: _Layout) -> None:
    """Every needed column present in every split's header, then the same columns in every split."""
    headers = {s: reader.read_header(p, fmts[s]) for s, p in sources.items()}
    for split, header in headers.items():
        missing = [c for c in layout.needed if c not in header]
        if missing:
            kinds = ", ".join(f"{c!r} ({'label' if c in layout.labels else 'field'})" for c in missing)
            raise DataError(f"the header lacks {kinds} declared in dataset schema {schema.name!r} "
                            f"(header: {header}).", file=sources[split], column=missing[0], line=1,
                            fix="add the column to the file, or remove / rename it in the dataset schema.")
    ref = headers["train"]
    for split, header in headers.items():
        extra = [c for c in header if c not in ref]
        lacking = [c for c in ref if c not in header]
        if extra or lacking:
            raise DataError(f"the header differs from the train file {sources['train'].name}: "
                            f"extra columns {extra}, missing columns {lacking}.", file=sources[split],
                            column=(extra + lacking)[0], line=1,
                            fix="write every split with the same columns.")


def _fit_encoders(schema: DatasetSchema, train: Path, fmt: str, layout: _Layout, chunk_rows: int) -> FeatureEncoders:
    """Pass 1: the encoders fitted on the train file (a bad feature cell raises, after counting them all)."""
    encoders = FeatureEncoders.from_schema(schema)
    problems = _Problems(train)

    def train_chunks():
        for line0, df in reader.iter_chunks(train, layout.features, chunk_rows, fmt, layout.seq):
            _validate_categorical(df, list(schema.categorical), line0, problems)
            _validate_numeric(df, layout.num, line0, problems)
            _validate_sequences(df, list(schema.sequences), line0, problems)
            if not problems:  # after a bad cell keep scanning to count them all, fit nothing more
                yield df

    encoders.fit(train_chunks())
    problems.raise_if_any()
    return encoders


def _funnel_edges(schema: DatasetSchema) -> list[tuple[TaskSpec, TaskSpec]]:
    """(task, parent) for every task defined ``on`` another, selected tasks first."""
    all_tasks = {t.name: t for t in schema.tasks + schema.parent_tasks}
    return [(t, all_tasks[t.on]) for t in schema.tasks + schema.parent_tasks if t.on is not None]


class _SplitFiles:
    """The open .bin files of one split in the build folder, one per column (a context manager)."""

    def __init__(self, out: Path, split: str, layout: _Layout) -> None:
        (out / split).mkdir()
        self.layout = layout
        self.cat = {c: f"{split}/{f}" for c, f in zip(layout.cat, layout.cat_files)}
        self.num = {c: f"{split}/{f}" for c, f in zip(layout.num, layout.num_files)}
        self.labels = {c: f"{split}/{f}" for c, f in zip(layout.labels, layout.label_files)}
        self.seq = {c: f"{split}/{f}" for c, f in zip(layout.seq, layout.seq_files)}
        self.handles = {rel: open(out / rel, "wb") for rel in
                        [*self.cat.values(), *self.num.values(), *self.labels.values(), *self.seq.values()]}

    def __enter__(self) -> "_SplitFiles":
        return self

    def __exit__(self, *exc: object) -> None:
        for fh in self.handles.values():
            fh.close()

    def append(self, cat: np.ndarray, num: np.ndarray, labels: dict[str, np.ndarray],
               seq: dict[str, np.ndarray]) -> None:
        """Append encoded rows: cat [n, Fc], num [n, Fn], labels column -> [n] float32,
        seq field -> [n, max_len]."""
        for j, c in enumerate(self.layout.cat):
            np.ascontiguousarray(cat[:, j], dtype=CAT_DTYPE).tofile(self.handles[self.cat[c]])
        for j, c in enumerate(self.layout.num):
            np.ascontiguousarray(num[:, j], dtype=NUM_DTYPE).tofile(self.handles[self.num[c]])
        for c in self.layout.labels:
            labels[c].astype(LABEL_DTYPE, copy=False).tofile(self.handles[self.labels[c]])
        for c in self.layout.seq:
            np.ascontiguousarray(seq[c], dtype=SEQ_DTYPE).tofile(self.handles[self.seq[c]])

    def meta(self, n_rows: int) -> dict[str, Any]:
        """The split's entry in meta.json: row count and column -> relative file, per group."""
        return {"n_rows": n_rows, "cat": self.cat, "num": self.num, "labels": self.labels, "seq": self.seq}


def _encode_split(schema: DatasetSchema, encoders: FeatureEncoders, layout: _Layout,
                  edges: list[tuple[TaskSpec, TaskSpec]], out: Path, split: str, path: Path, fmt: str,
                  invalid_funnel_rows: str, chunk_rows: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """Pass 2 for one split: validate and encode ``path`` chunk by chunk into ``out/split``.
    Returns (its meta entry, its report entry); bad cells raise, after counting them all."""
    problems = _Problems(path)
    encoders.reset_counters()
    rows_read = rows_kept = 0
    dropped = {f"invalid_funnel: {t.name} ({t.label}=1) on {p.name} ({p.label}=0)": 0 for t, p in edges}
    positives = {c: 0 for c in layout.labels}
    with _SplitFiles(out, split, layout) as files:
        for line0, df in reader.iter_chunks(path, layout.needed, chunk_rows, fmt, layout.seq):
            rows_read += len(df)
            _validate_categorical(df, list(schema.categorical), line0, problems)
            _validate_numeric(df, layout.num, line0, problems)
            _validate_sequences(df, list(schema.sequences), line0, problems)
            labels = _parse_labels(df, layout.labels, line0, problems)
            keep = _funnel_keep(len(df), edges, labels, line0, invalid_funnel_rows, dropped, problems)
            if problems:
                continue  # keep scanning to count every problem, write nothing
            if not keep.all():
                df = df.loc[keep]
                labels = {c: y[keep] for c, y in labels.items()}
            rows = encoders.transform(df)
            files.append(rows.cat, rows.num, labels, rows.seq)
            for c in layout.labels:
                positives[c] += int((labels[c] == 1).sum())
            rows_kept += len(df)
    problems.raise_if_any()
    report = {"file": str(path), "rows_read": rows_read, "rows_kept": rows_kept, "rows_dropped": dropped,
              "positives": positives, "fields": encoders.counters()}
    return files.meta(rows_kept), report


def _funnel_keep(n: int, edges: list[tuple[TaskSpec, TaskSpec]], labels: dict[str, np.ndarray], line0: int,
                 invalid_funnel_rows: str, dropped: dict[str, int], problems: _Problems) -> np.ndarray:
    """[n] bool: the rows of an n-row chunk to keep (a task's label 1 needs its parent's label 1).
    Invalid rows are counted in ``dropped`` (one reason per edge, in edge order) under 'drop', else
    recorded in ``problems``."""
    keep = np.ones(n, dtype=bool)
    for (task, parent), reason in zip(edges, dropped):
        bad = (labels[task.label] == 1) & (labels[parent.label] == 0) & keep
        if invalid_funnel_rows == "drop":
            dropped[reason] += int(bad.sum())
            keep &= ~bad
        else:
            problems.add(task.label, f"funnel:{task.name}", bad, line0, None,
                         f"task {task.name!r} label {task.label!r} is 1 but its parent task "
                         f"{parent.name!r} label {parent.label!r} is 0 (invalid funnel row).",
                         FUNNEL_FIX, value=f"{task.label}=1, {parent.label}=0")
    return keep


def _meta(schema: DatasetSchema, key: str, invalid_funnel_rows: str, sources: dict[str, Path],
          splits_meta: dict[str, Any], report: dict[str, Any]) -> dict[str, Any]:
    """meta.json of a build (``build_seconds`` is added by the caller)."""
    return {
        "cache_version": CACHE_VERSION,
        "key": key,
        "schema": schema.to_dict(),
        "invalid_funnel_rows": invalid_funnel_rows,
        "sources": {s: _source_info(p) for s, p in sources.items()},
        "splits": splits_meta,
        "dtypes": {"cat": CAT_DTYPE.str, "num": NUM_DTYPE.str, "label": LABEL_DTYPE.str, "seq": SEQ_DTYPE.str},
        "report": report,
    }
