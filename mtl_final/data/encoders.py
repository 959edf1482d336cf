"""Feature encoders fitted on the train split, streaming over chunks.

Categorical: every value is a string key; index 0 = padding (missing/empty cell),
1..n = vocabulary (train values seen >= min_count times, most frequent first, ties
by key), n + 1 = OOV (unseen or rare); ``vocab_size = n + 2``. With dtype "str" the
key is the cell's text; with dtype "int" it is the integer in canonical form ("07",
"+7", "7.0" -> "7"), a cell in NA_STRINGS is missing and any other cell is an error.

Sequence: a cell is split on the field's separator (a list cell is taken as is) into values in
time order, each a key as for a categorical field; empty values are skipped (and counted). The
ids are those of its vocabulary: its own (fitted like a categorical field's), or with
``share_embedding`` the owner categorical field's, fitted on the train values of the owner and
of every sequence sharing it. A row becomes [max_len] ids, left-aligned, padded with 0 at the
end; a longer row keeps its last max_len values (the most recent).

Numeric: missing cells are filled with ``fill_na`` (0.0 when None), then
normalised with train statistics (computed on the filled train values):
"standard" (x - mean) / std, "minmax" (x - min) / (max - min), "log1p"
sign(x) * log1p(|x|), or "none". A zero std or range divides by 1 instead.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Iterable, NamedTuple, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .errors import DataError
from .features import FeatureSpec, SequenceSpec
from .reader import is_list, string_lists
from .schema import DatasetSchema, FieldSpec, check_field_links

ENCODERS_VERSION = 1
NA_STRINGS = ("", "nan", "na", "n/a", "null", "none")
_INT_TEXT = r"^([+-]?)0*([0-9]+?)(?:\.0*)?$"


def _string_values(values: pd.Series) -> tuple[pd.Series, np.ndarray]:
    """Values as strings and the [n] bool mask of missing cells (null or empty string)."""
    if not isinstance(values.dtype, pd.StringDtype):
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            # same text as the readers produce: arrow's cast (3.0 -> "3", True -> "1")
            arr = pa.array(values.to_numpy(), from_pandas=True)
            if pa.types.is_boolean(arr.type):
                arr = pc.cast(arr, pa.int8())
            values = pd.Series(pc.cast(arr, pa.string()).to_pandas(), index=values.index).astype("str")
        else:
            values = values.astype("str")
    missing = (values.isna() | (values == "")).to_numpy(dtype=bool)
    return values, missing


def categorical_keys(values: pd.Series, dtype: str = "str") -> tuple[pd.Series, np.ndarray, np.ndarray]:
    """Vocabulary keys of raw cells for a categorical field of ``dtype`` ("str" or "int").

    Returns (keys [n] str, missing [n] bool, bad [n] bool); keys are meaningless where
    missing or bad. "str": the text, missing = null or "", never bad. "int": the
    canonical integer text, missing = null or NA_STRINGS (stripped, any case), bad =
    anything else that is not an integer (a zero fraction such as "7.0" is allowed).
    """
    s, missing = _string_values(values)
    if dtype == "str":
        return s, missing, np.zeros(len(s), dtype=bool)
    if dtype != "int":
        raise ValueError(f"unknown categorical dtype {dtype!r}")
    stripped = s.str.strip()
    missing = (s.isna() | stripped.str.lower().isin(NA_STRINGS)).to_numpy(dtype=bool)
    parts = stripped.str.extract(_INT_TEXT)
    digits = parts[1].fillna("")
    sign = parts[0].fillna("").where((parts[0] == "-") & (digits != "0"), "")
    keys = (sign + digits).astype("str")
    bad = (digits == "").to_numpy(dtype=bool) & ~missing
    return keys, missing, bad


def parse_numeric(values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Parse raw cells to float64.

    Returns (x [n] float64 with NaN at missing cells, missing [n] bool, bad [n] bool).
    Missing: null, NaN, or a string in NA_STRINGS (case-insensitive, stripped).
    Bad: a string that is not a number, or +-inf.
    """
    if isinstance(values, np.ndarray) and values.dtype.kind in "biuf":
        x = values.astype(np.float64, copy=True)
        missing = np.isnan(x)
        return x, missing, np.isinf(x)
    s = pd.Series(values) if not isinstance(values, pd.Series) else values
    if pd.api.types.is_bool_dtype(s.dtype) or pd.api.types.is_numeric_dtype(s.dtype):
        x = s.to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
        missing = np.isnan(x)
        return x, missing, np.isinf(x)
    s = s.astype("str")
    norm = s.str.strip().str.lower()
    missing = (s.isna() | norm.isin(NA_STRINGS)).to_numpy(dtype=bool)
    x = pd.to_numeric(s.where(~missing), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan, copy=True)
    bad = (np.isnan(x) & ~missing) | np.isinf(x)
    return x, missing, bad


class CategoricalEncoder:
    """Value -> index. 0 = padding, 1..n = vocab, n + 1 = OOV; keys per ``categorical_keys(dtype)``."""

    def __init__(self, name: str, min_count: int = 1, dtype: str = "str") -> None:
        if dtype not in ("str", "int"):
            raise ValueError(f"unknown categorical dtype {dtype!r}")
        self.name = name
        self.min_count = int(min_count)
        self.dtype = dtype
        self._counts: pd.Series | None = None  # value -> train count, while fitting
        self.vocab: list[str] | None = None
        self.counts: list[int] | None = None  # train count of each vocab entry
        self._index: pd.Index | None = None
        self.n_missing = 0
        self.n_oov = 0

    def _keys(self, values: pd.Series) -> tuple[pd.Series, np.ndarray]:
        keys, missing, bad = categorical_keys(values, self.dtype)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(f"{int(bad.sum())} non-integer value(s) in a categorical field with dtype int.",
                            column=self.name, value=values.iloc[first],
                            fix="clean the column, or set dtype: str to use the values as written.")
        return keys, missing

    # fitting
    def partial_fit(self, values: pd.Series) -> "CategoricalEncoder":
        """Add the value counts of one train chunk ([n] cells)."""
        s, missing = self._keys(values)
        return self.add_counts(s[~missing].value_counts(sort=False))

    def add_counts(self, counts: pd.Series) -> "CategoricalEncoder":
        """Add train counts of keys (a Series key -> count), e.g. the values of a sequence sharing
        this vocabulary."""
        if self._counts is None:
            self._counts = counts
        else:
            self._counts = pd.concat([self._counts, counts]).groupby(level=0, sort=False).sum()
        return self

    def finalize(self) -> "CategoricalEncoder":
        """Build the vocabulary from the accumulated counts."""
        counts = self._counts if self._counts is not None else pd.Series([], dtype=np.int64)
        table = pd.DataFrame({"value": counts.index.astype("str"), "count": counts.to_numpy(dtype=np.int64)})
        table = table[table["count"] >= self.min_count]
        table = table.sort_values(["count", "value"], ascending=[False, True], kind="stable")
        self._set_vocab(table["value"].tolist(), table["count"].tolist())
        self._counts = None
        return self

    def fit(self, values: pd.Series) -> "CategoricalEncoder":
        """Fit on all train values at once ([n] cells)."""
        self._counts = None
        return self.partial_fit(values).finalize()

    def _set_vocab(self, vocab: list[str], counts: list[int]) -> None:
        self.vocab = [str(v) for v in vocab]
        self.counts = [int(c) for c in counts]
        self._index = pd.Index(self.vocab, dtype="str")
        if not self._index.is_unique:
            raise ValueError(f"field {self.name!r}: vocabulary has duplicate values")

    # using
    @property
    def fitted(self) -> bool:
        return self.vocab is not None

    @property
    def padding_index(self) -> int:
        return 0

    @property
    def oov_index(self) -> int:
        """Index of unseen / rare values: len(vocab) + 1."""
        self._require_fitted()
        return len(self.vocab) + 1

    @property
    def vocab_size(self) -> int:
        """Number of embedding rows: padding + vocabulary + OOV."""
        self._require_fitted()
        return len(self.vocab) + 2

    def _require_fitted(self) -> None:
        if self.vocab is None:
            raise RuntimeError(f"categorical encoder {self.name!r} is not fitted")

    def codes(self, keys: pd.Series | pd.Index) -> np.ndarray:
        """[n] vocabulary keys -> [n] int32 indices, 1..n or oov_index (no counter changes)."""
        self._require_fitted()
        out = self._index.get_indexer(keys).astype(np.int32) + 1
        out[out == 0] = self.oov_index
        return out

    def transform(self, values: pd.Series) -> np.ndarray:
        """[n] cells -> [n] int32 indices; updates the missing / OOV counters."""
        self._require_fitted()
        s, missing = self._keys(values)
        out = self.codes(s)
        oov = (out == self.oov_index) & ~missing
        out[missing] = 0
        self.n_missing += int(missing.sum())
        self.n_oov += int(oov.sum())
        return out

    def to_dict(self) -> dict[str, Any]:
        self._require_fitted()
        return {"name": self.name, "min_count": self.min_count, "dtype": self.dtype, "vocab": list(self.vocab),
                "counts": list(self.counts)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "CategoricalEncoder":
        enc = cls(d["name"], d["min_count"], d.get("dtype", "str"))
        enc._set_vocab(d["vocab"], d["counts"])
        return enc


def _sequence_lists(values: pd.Series, separator: str, column: str) -> pa.Array:
    """Raw sequence cells -> a list<string> array: text cells split on ``separator`` (null or "" is an
    empty row), list cells (Parquet lists, Python lists) with their values as text."""
    try:
        arr = pa.array(values, from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError) as e:
        raise DataError(f"the sequence cells are neither all text nor all lists ({str(e).splitlines()[0]}).",
                        column=column, fix="give every cell as one string of values joined by the separator, "
                                           "or every cell as a list.") from None
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    kind = arr.type
    if pa.types.is_null(kind):
        return pa.array([[]] * len(arr), type=pa.list_(pa.string()))
    if is_list(kind):
        strings = string_lists(arr)
        if strings is None:
            raise DataError(f"the sequence cells are lists of {kind.value_type}; a sequence's values must be "
                            "strings or numbers.", column=column,
                            fix="write each row's values as one flat list of strings or integers "
                                "(or as one string of values joined by the separator).")
        return strings
    if pa.types.is_boolean(kind):
        arr = pc.cast(arr, pa.int8())
    if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
        arr = pc.cast(arr, pa.string())
    return pc.split_pattern(pc.if_else(pc.equal(arr, ""), pa.scalar(None, arr.type), arr), separator)


class SequenceValues(NamedTuple):
    """The values of n sequence cells as vocabulary keys, empty values left out.

    keys: [U] distinct keys; index: [V] int32 key of each value (rows one after another, each in
    time order); lengths: [n] int64 values per row; skipped: empty values left out; bad: [n] bool
    rows holding a value that is no key of the dtype (dtype int: not an integer).
    """

    keys: pd.Series
    index: np.ndarray
    lengths: np.ndarray
    skipped: int
    bad: np.ndarray


def sequence_values(values: pd.Series, separator: str = "|", dtype: str = "str",
                    column: str | None = None) -> SequenceValues:
    """Split and key n raw sequence cells (see ``SequenceValues``); no Python loop over rows or values.

    A value is a key as ``categorical_keys(dtype)`` makes it; one that key calls missing (an empty
    value, with dtype int also NA_STRINGS) is skipped. Raises DataError for list cells of another type.
    """
    lists = _sequence_lists(values, separator, column or str(values.name))
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy().astype(np.int64)
    flat = pc.list_flatten(lists)
    if flat.null_count:
        flat = flat.fill_null("")
    encoded = flat.dictionary_encode()
    index = encoded.indices.to_numpy()
    keys, missing, bad_key = categorical_keys(encoded.dictionary.to_pandas(), dtype)
    starts = np.concatenate([[0], np.cumsum(lengths)])

    def rows_of(value_mask: np.ndarray) -> np.ndarray:
        return np.searchsorted(starts, np.flatnonzero(value_mask), side="right") - 1

    bad = np.zeros(len(lengths), dtype=bool)
    if bad_key.any():
        bad[rows_of(bad_key[index])] = True
    skipped = 0
    if missing.any():
        skip = missing[index]
        skipped = int(skip.sum())
        lengths = lengths - np.bincount(rows_of(skip), minlength=len(lengths))
        index = index[~skip]
    return SequenceValues(keys.reset_index(drop=True), index, lengths, skipped, bad)


def pad_last(ids: np.ndarray, lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Rows of ids (ids [V], the rows one after another; lengths [n]) -> [n, max_len] int64, each row's
    last max_len ids left-aligned and padded with 0 at the end."""
    kept = np.minimum(lengths, max_len)
    filled = np.arange(max_len) < kept[:, None]  # [n, max_len]: the cells that get an id
    out = np.zeros((lengths.size, max_len), dtype=np.int64)
    if ids.size == 0:
        return out
    if int(lengths.max()) <= max_len:  # nothing to cut: the ids fill the cells in order
        out[filled] = ids
        return out
    first = np.cumsum(lengths) - kept  # where each row's kept ids start in ``ids``
    np.take(ids, first[:, None] + np.arange(max_len), mode="clip", out=out)  # every cell, clipped past the end
    out[~filled] = 0
    return out


SEQUENCE_COUNTERS = ("rows", "values", "truncated_rows", "truncated_values", "oov", "empty_rows", "skipped_empty")


class SequenceEncoder:
    """Sequence cells -> [n, max_len] ids of a vocabulary (0 = padding, 1..n vocab, n + 1 = OOV).

    vocab: the owner categorical field's encoder when the sequence shares its vocabulary
    (``share_embedding``); then fitting adds this field's values to the owner's counts, and the owner
    (fitted and finalized with the categorical fields) sets the ids. Otherwise the sequence's own one.
    Counters since the last reset (``SEQUENCE_COUNTERS``): rows; values (non-empty, before
    truncation); truncated_rows / truncated_values (rows longer than max_len / the oldest values they
    lose); oov (written values mapped to OOV); empty_rows (no value); skipped_empty (empty values).
    """

    def __init__(self, name: str, max_len: int, separator: str = "|", min_count: int = 1, dtype: str = "str",
                 shared: CategoricalEncoder | None = None) -> None:
        if shared is not None and shared.dtype != dtype:
            raise ValueError(f"sequence {name!r} (dtype {dtype}) cannot share the vocabulary of {shared.name!r} "
                             f"(dtype {shared.dtype})")
        self.name = name
        self.max_len = int(max_len)
        self.separator = separator
        self.dtype = dtype
        self.vocab = shared if shared is not None else CategoricalEncoder(name, min_count, dtype)
        self.share_embedding = None if shared is None else shared.name
        self.reset_counters()

    @property
    def fitted(self) -> bool:
        return self.vocab.fitted

    @property
    def vocab_size(self) -> int:
        """Rows of the sequence's table region: the (owner's) padding + vocabulary + OOV."""
        return self.vocab.vocab_size

    @property
    def oov_index(self) -> int:
        return self.vocab.oov_index

    def _values(self, values: pd.Series) -> SequenceValues:
        out = sequence_values(values, self.separator, self.dtype, self.name)
        if out.bad.any():
            first = int(np.flatnonzero(out.bad)[0])
            raise DataError(f"{int(out.bad.sum())} row(s) with a non-integer value in a sequence field with "
                            "dtype int.", column=self.name, value=values.iloc[first],
                            fix="clean the column, or set dtype: str to use the values as written.")
        return out

    def partial_fit(self, values: pd.Series) -> "SequenceEncoder":
        """Add the value counts of one train chunk ([n] cells) to the vocabulary's counts."""
        sv = self._values(values)
        counts = pd.Series(np.bincount(sv.index, minlength=len(sv.keys)), index=pd.Index(sv.keys, dtype="str"))
        counts = counts[counts > 0].groupby(level=0, sort=False).sum()  # dtype int: "07" and "7" are one key
        self.vocab.add_counts(counts)
        return self

    def finalize(self) -> "SequenceEncoder":
        """Build the vocabulary (its own; a shared one is finalized by its owner)."""
        if self.share_embedding is None:
            self.vocab.finalize()
        return self

    def transform(self, values: pd.Series) -> np.ndarray:
        """[n] cells -> [n, max_len] int64 ids; updates the counters."""
        sv = self._values(values)
        ids = self.vocab.codes(sv.keys).astype(np.int64)[sv.index]
        out = pad_last(ids, sv.lengths, self.max_len)
        over = np.maximum(sv.lengths - self.max_len, 0)
        self.n["rows"] += int(sv.lengths.size)
        self.n["values"] += int(sv.lengths.sum())
        self.n["truncated_rows"] += int(np.count_nonzero(over))
        self.n["truncated_values"] += int(over.sum())
        self.n["oov"] += int(np.count_nonzero(out == self.oov_index))
        self.n["empty_rows"] += int(np.count_nonzero(sv.lengths == 0))
        self.n["skipped_empty"] += sv.skipped
        return out

    def reset_counters(self) -> None:
        self.n = dict.fromkeys(SEQUENCE_COUNTERS, 0)

    def to_dict(self) -> dict[str, Any]:
        """The options, and the vocabulary unless shared (then the owner's name)."""
        out = {"name": self.name, "max_len": self.max_len, "separator": self.separator, "dtype": self.dtype,
               "share_embedding": self.share_embedding}
        if self.share_embedding is None:
            out["vocab"] = self.vocab.to_dict()
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any], owners: dict[str, CategoricalEncoder]) -> "SequenceEncoder":
        """Inverse of ``to_dict``; owners: the fitted categorical encoders by name."""
        shared = None if d["share_embedding"] is None else owners[d["share_embedding"]]
        enc = cls(d["name"], d["max_len"], d["separator"], dtype=d["dtype"], shared=shared)
        if shared is None:
            enc.vocab = CategoricalEncoder.from_dict(d["vocab"])
        return enc


class NumericEncoder:
    """Raw number -> filled, normalised float32, with streaming train statistics."""

    def __init__(self, name: str, fill_na: float | None = None, norm: str = "none") -> None:
        self.name = name
        self.fill_na = None if fill_na is None else float(fill_na)
        self.norm = norm
        # streaming statistics of the filled train values (Chan et al. merge of mean / M2)
        self.count = 0
        self.mean = 0.0
        self._m2 = 0.0
        self.min = math.inf
        self.max = -math.inf
        self.std: float | None = None  # set by finalize
        self.n_filled = 0

    @property
    def fill_value(self) -> float:
        return 0.0 if self.fill_na is None else self.fill_na

    @property
    def fitted(self) -> bool:
        return self.std is not None

    def _parse(self, values: pd.Series | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x, missing, bad = parse_numeric(values)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raw = values.iloc[first] if isinstance(values, pd.Series) else values[first]
            raise DataError(f"{int(bad.sum())} non-numeric or infinite value(s) in a numeric field.",
                            column=self.name, value=raw,
                            fix="clean the column, or declare the field as categorical in the schema.")
        x[missing] = self.fill_value
        return x, missing

    def partial_fit(self, values: pd.Series | np.ndarray) -> "NumericEncoder":
        """Merge the statistics of one train chunk ([n] cells) into the running ones."""
        x, _ = self._parse(values)
        n = x.size
        if n == 0:
            return self
        mean_b = float(x.mean())
        m2_b = float(((x - mean_b) ** 2).sum())
        total = self.count + n
        delta = mean_b - self.mean
        self.mean += delta * n / total
        self._m2 += m2_b + delta * delta * self.count * n / total
        self.count = total
        self.min = min(self.min, float(x.min()))
        self.max = max(self.max, float(x.max()))
        return self

    def finalize(self) -> "NumericEncoder":
        """Fix the statistics (population std)."""
        if self.count == 0:
            self.mean, self.min, self.max, self.std = 0.0, 0.0, 0.0, 0.0
        else:
            self.std = math.sqrt(max(self._m2 / self.count, 0.0))
        return self

    def fit(self, values: pd.Series | np.ndarray) -> "NumericEncoder":
        """Fit on all train values at once ([n] cells)."""
        self.count, self.mean, self._m2, self.min, self.max = 0, 0.0, 0.0, math.inf, -math.inf
        return self.partial_fit(values).finalize()

    def transform(self, values: pd.Series | np.ndarray) -> np.ndarray:
        """[n] cells -> [n] float32; updates the filled-NaN counter."""
        if not self.fitted:
            raise RuntimeError(f"numeric encoder {self.name!r} is not fitted")
        x, missing = self._parse(values)
        self.n_filled += int(missing.sum())
        if self.norm == "standard":
            x = (x - self.mean) / (self.std if self.std > 0 else 1.0)
        elif self.norm == "minmax":
            span = self.max - self.min
            x = (x - self.min) / (span if span > 0 else 1.0)
        elif self.norm == "log1p":
            x = np.sign(x) * np.log1p(np.abs(x))
        return x.astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        if not self.fitted:
            raise RuntimeError(f"numeric encoder {self.name!r} is not fitted")
        return {"name": self.name, "fill_na": self.fill_na, "norm": self.norm, "count": self.count,
                "mean": self.mean, "std": self.std, "m2": self._m2, "min": self.min, "max": self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "NumericEncoder":
        enc = cls(d["name"], d["fill_na"], d["norm"])
        enc.count, enc.mean, enc.std, enc._m2 = int(d["count"]), float(d["mean"]), float(d["std"]), float(d["m2"])
        enc.min, enc.max = float(d["min"]), float(d["max"])
        return enc


class EncodedRows(tuple):
    """What ``FeatureEncoders.transform`` returns: the pair (cat [n, Fc] int32, num [n, Fn] float32), so
    ``cat, num = encoders.transform(df)`` reads it, with the sequences as ``.seq``: name ->
    [n, max_len] int64."""

    seq: dict[str, np.ndarray]

    def __new__(cls, cat: np.ndarray, num: np.ndarray, seq: dict[str, np.ndarray]) -> "EncodedRows":
        out = super().__new__(cls, (cat, num))
        out.seq = seq
        return out

    @property
    def cat(self) -> np.ndarray:
        return self[0]

    @property
    def num(self) -> np.ndarray:
        return self[1]


class FeatureEncoders:
    """All encoders of a schema's fields: categorical, numeric and sequence ones, each in declaration order."""

    def __init__(self, fields: Sequence[FieldSpec]) -> None:
        self.fields = tuple(fields)
        check_field_links(self.fields)
        self.categorical = [CategoricalEncoder(f.name, f.min_count, f.dtype) for f in self.fields
                            if f.type == "categorical"]
        self.numeric = [NumericEncoder(f.name, f.fill_na, f.norm) for f in self.fields if f.type == "numeric"]
        owners = {e.name: e for e in self.categorical}
        self.sequences = [SequenceEncoder(f.name, f.max_len, f.separator, f.min_count, f.dtype,
                                          owners[f.share_embedding] if f.share_embedding else None)
                          for f in self.fields if f.type == "sequence"]
        self._fitted = False

    @classmethod
    def from_schema(cls, schema: DatasetSchema) -> "FeatureEncoders":
        return cls(schema.fields)

    @property
    def columns(self) -> list[str]:
        """Input columns the encoders read."""
        return [e.name for e in self.categorical] + [e.name for e in self.numeric] + [e.name for e in self.sequences]

    @property
    def fitted(self) -> bool:
        return self._fitted

    def partial_fit(self, df: pd.DataFrame) -> "FeatureEncoders":
        """Accumulate one train chunk (a DataFrame holding at least ``columns``)."""
        for enc in self.categorical:
            enc.partial_fit(df[enc.name])
        for enc in self.numeric:
            enc.partial_fit(df[enc.name])
        for enc in self.sequences:
            enc.partial_fit(df[enc.name])
        return self

    def finalize(self) -> "FeatureEncoders":
        for enc in self.categorical:
            enc.finalize()
        for enc in self.numeric:
            enc.finalize()
        for enc in self.sequences:
            enc.finalize()
        self._fitted = True
        return self

    def fit(self, chunks: Iterable[pd.DataFrame]) -> "FeatureEncoders":
        """Fit on a stream of train chunks; partial counts / statistics are merged per chunk."""
        for df in chunks:
            self.partial_fit(df)
        return self.finalize()

    def transform(self, df: pd.DataFrame) -> EncodedRows:
        """DataFrame of n rows -> (cat [n, Fc] int32, num [n, Fn] float32) with ``.seq``: sequence name ->
        [n, max_len] int64 (see ``EncodedRows``)."""
        if not self._fitted:
            raise RuntimeError("FeatureEncoders.transform before fit")
        n = len(df)
        cat = np.empty((n, len(self.categorical)), dtype=np.int32)
        for j, enc in enumerate(self.categorical):
            cat[:, j] = enc.transform(df[enc.name])
        num = np.empty((n, len(self.numeric)), dtype=np.float32)
        for j, enc in enumerate(self.numeric):
            num[:, j] = enc.transform(df[enc.name])
        return EncodedRows(cat, num, {enc.name: enc.transform(df[enc.name]) for enc in self.sequences})

    def feature_spec(self) -> FeatureSpec:
        """FeatureSpec with each categorical field's vocab_size, the numeric field names and the sequences."""
        fields = {f.name: f for f in self.fields}
        sequences = []
        for e in self.sequences:
            f = fields[e.name]
            attention = {} if f.pooling != "attention" else {"attention_units": tuple(f.attention_units),
                                                             "attention_activation": f.attention_activation}
            sequences.append(SequenceSpec(e.name, e.max_len, e.vocab_size, e.share_embedding, f.pooling, f.target,
                                          **attention))
        return FeatureSpec(categorical=tuple((e.name, e.vocab_size) for e in self.categorical),
                           numeric=tuple(e.name for e in self.numeric), sequences=tuple(sequences))

    # repair counters
    def counters(self) -> dict[str, dict[str, int]]:
        """Repairs since the last reset: categorical {missing, oov}, numeric {filled_na}, sequence
        ``SEQUENCE_COUNTERS``."""
        out: dict[str, dict[str, int]] = {e.name: {"missing": e.n_missing, "oov": e.n_oov} for e in self.categorical}
        out.update({e.name: {"filled_na": e.n_filled} for e in self.numeric})
        out.update({e.name: dict(e.n) for e in self.sequences})
        return out

    def reset_counters(self) -> None:
        for e in self.categorical:
            e.n_missing = e.n_oov = 0
        for e in self.numeric:
            e.n_filled = 0
        for e in self.sequences:
            e.reset_counters()

    # persistence
    def to_dict(self) -> dict[str, Any]:
        if not self._fitted:
            raise RuntimeError("FeatureEncoders.to_dict before fit")
        return {"version": ENCODERS_VERSION, "fields": [f.to_dict() for f in self.fields],
                "categorical": [e.to_dict() for e in self.categorical],
                "numeric": [e.to_dict() for e in self.numeric],
                "sequences": [e.to_dict() for e in self.sequences]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FeatureEncoders":
        if d.get("version") != ENCODERS_VERSION:
            raise ValueError(f"encoders version {d.get('version')!r} is not {ENCODERS_VERSION}")
        out = cls([FieldSpec(**f) for f in d["fields"]])
        out.categorical = [CategoricalEncoder.from_dict(e) for e in d["categorical"]]
        out.numeric = [NumericEncoder.from_dict(e) for e in d["numeric"]]
        owners = {e.name: e for e in out.categorical}
        out.sequences = [SequenceEncoder.from_dict(e, owners) for e in d.get("sequences", [])]
        out._fitted = True
        return out

    def save(self, path: str | Path) -> None:
        """Write the fitted encoders as JSON (floats round-trip exactly)."""
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "FeatureEncoders":
        return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
