"""Dataset schema: which columns are features (and how to encode them) and which are task labels.

A schema is usually written as YAML::

    name: hillstrom
    files: {train: train.csv, valid: valid.csv, test: test.csv}
    fields:
      - {name: recency, type: numeric, norm: log1p}
      - {name: zip_code, type: categorical}
      - {name: user_id, type: categorical, dtype: int}
      - {name: history, type: numeric, norm: standard, fill_na: 0}
    tasks:
      - {name: ctr, label: visit}
      - {name: cvr, label: conversion, on: ctr}

``on: ctr`` says the ``cvr`` task is defined on the rows where the ``ctr`` label is 1
(a funnel); a row with ``conversion = 1`` and ``visit = 0`` is invalid.

``files`` must name the splits train, valid and test (other splits may be added;
they are encoded but not used by a run). ``dtype`` of a categorical or sequence field:
"str" (default; each cell's text is a vocabulary key as written) or "int" (cells are
parsed as integers, so "7", "07", "+7" and "7.0" are one value); of a numeric
field: "float" (the default and only choice).

A ``sequence`` field holds several values per row (a behaviour history, a tag list)::

      - {name: item_id, type: categorical}
      - {name: hist_items, type: sequence, separator: "|", max_len: 50, share_embedding: item_id,
         pooling: attention, target: item_id}
      - {name: genres, type: sequence, separator: " ", max_len: 6, pooling: mean}

A CSV cell is split on ``separator`` (empty tokens are skipped); a Parquet column may also be a
list. ``max_len`` (required) keeps the last values of a longer row. ``share_embedding`` names a
categorical field whose vocabulary (fitted on both fields' train values) and embedding rows the
sequence uses; ``pooling`` (mean, sum, max, attention) turns the embedded values into one vector;
attention pooling weighs each value against the ``target`` field's embedding.
"""
from __future__ import annotations

import difflib
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping

import yaml

from ..config import YamlLoader
from .errors import DataError

FIELD_TYPES = ("categorical", "numeric", "sequence")
NORMS = ("none", "standard", "minmax", "log1p")
FORMATS = ("csv", "parquet")
DEFAULT_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}
REQUIRED_SPLITS = ("train", "valid", "test")
DTYPES = {"categorical": ("str", "int"), "numeric": ("float",), "sequence": ("str", "int")}
POOLINGS = ("mean", "sum", "max", "attention")
ATTENTION_ACTIVATIONS = ("sigmoid", "relu", "prelu")
# keys of sequence fields only, with their defaults (None: required or, for the attention keys, only
# with pooling: attention)
SEQUENCE_DEFAULTS: dict[str, Any] = {"separator": "|", "max_len": None, "share_embedding": None,
                                     "pooling": "mean", "target": None, "attention_units": (36,),
                                     "attention_activation": "sigmoid"}

_FIELD_KEYS = ("name", "type", "dtype", "min_count", "fill_na", "norm", *SEQUENCE_DEFAULTS)
_TASK_KEYS = ("name", "label", "on")
_TOP_KEYS = ("name", "files", "format", "fields", "tasks", "parent_tasks")


class _SchemaLoader(YamlLoader):
    """The run config's loader (``1e-3`` is a float, a key given twice is an error) with YAML 1.2
    booleans (only true/false), so that a task's ``on:`` key stays "on"."""


_SchemaLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in YamlLoader.yaml_implicit_resolvers.items()
}
_SchemaLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))


def _is_int(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _check_name(value: object, what: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise DataError(f"{what} must be a non-empty string, got {value!r}.", fix=f"give the {what} a name.")


@dataclass(frozen=True)
class FieldSpec:
    """One input column and its encoding.

    type: "categorical" (mapped to a vocabulary index), "numeric" (one float) or "sequence"
        (several vocabulary indices per row, padded to max_len).
    dtype: how cells (a sequence's values) are read; categorical / sequence "str" (default, the
        text as written) or "int" (parsed as integers: "7", "07", "+7", "7.0" are one value);
        numeric "float" only. None means the type's default.
    min_count: categorical, or a sequence with its own vocabulary; train values seen fewer times
        map to OOV.
    fill_na: numeric only; value used for missing cells (None means 0.0).
    norm: numeric only; "none", "standard" (z-score), "minmax" or "log1p"
        (sign(x) * log1p(|x|)); statistics come from the train split.
    separator, max_len, share_embedding, pooling, target, attention_units, attention_activation:
        sequence only (see the module doc); None means the default (``SEQUENCE_DEFAULTS``) for a
        sequence field, and must stay None for the other types.
    """

    name: str
    type: Literal["categorical", "numeric", "sequence"]
    min_count: int = 1
    fill_na: float | None = None
    norm: Literal["none", "standard", "minmax", "log1p"] = "none"
    dtype: Literal["str", "int", "float"] | None = None
    separator: str | None = None
    max_len: int | None = None
    share_embedding: str | None = None
    pooling: Literal["mean", "sum", "max", "attention"] | None = None
    target: str | None = None
    attention_units: tuple[int, ...] | None = None
    attention_activation: Literal["sigmoid", "relu", "prelu"] | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "field name")
        where = f"field {self.name!r}"
        if self.type not in FIELD_TYPES:
            raise DataError(
                f"{where} has unknown type {self.type!r}.",
                fix=f"use one of {', '.join(FIELD_TYPES)}.",
            )
        allowed = DTYPES[self.type]
        if self.dtype is None:
            object.__setattr__(self, "dtype", allowed[0])
        elif self.dtype not in allowed:
            fix = f"use dtype {' or '.join(allowed)} for a {self.type} field, or leave it out (default {allowed[0]})."
            if self.type == "numeric" and self.dtype in DTYPES["categorical"]:
                fix += " To use the values as vocabulary keys, declare the field categorical."
            raise DataError(f"{where} ({self.type}) has dtype {self.dtype!r}; allowed: {', '.join(allowed)}.",
                            fix=fix)
        if not _is_int(self.min_count) or self.min_count < 1:
            raise DataError(f"{where}: min_count must be an integer >= 1, got {self.min_count!r}.",
                            fix="set min_count to 1 (keep every train value) or more.")
        if self.fill_na is not None:
            if isinstance(self.fill_na, bool) or not isinstance(self.fill_na, (int, float)) \
                    or not math.isfinite(float(self.fill_na)):
                raise DataError(f"{where}: fill_na must be a finite number or null, got {self.fill_na!r}.",
                                fix="set fill_na to a number such as 0.")
            object.__setattr__(self, "fill_na", float(self.fill_na))
        if self.norm not in NORMS:
            raise DataError(f"{where} has unknown norm {self.norm!r}.", fix=f"use one of {', '.join(NORMS)}.")
        if self.type != "numeric":
            if self.fill_na is not None:
                raise DataError(f"{where} is {self.type} but sets fill_na (numeric only); "
                                "missing values map to the padding index 0.",
                                fix="remove fill_na from this field.")
            if self.norm != "none":
                raise DataError(f"{where} is {self.type} but sets norm={self.norm!r} (numeric only).",
                                fix="remove norm from this field or make it numeric.")
        elif self.min_count != 1:
            raise DataError(f"{where} is numeric but sets min_count (categorical only).",
                            fix="remove min_count from this field.")
        if self.type == "sequence":
            self._check_sequence(where)
        else:
            given = [k for k in SEQUENCE_DEFAULTS if getattr(self, k) is not None]
            if given:
                raise DataError(f"{where} is {self.type} but sets {', '.join(given)} (sequence fields only).",
                                fix=f"remove {', '.join(given)} from this field, or declare it type: sequence.")

    def _check_sequence(self, where: str) -> None:
        """Validate the sequence keys and fill in their defaults."""
        if self.max_len is None:
            raise DataError(f"{where} is a sequence without max_len.",
                            fix="set max_len to the most values a row keeps (longer rows keep their last ones).")
        if not _is_int(self.max_len) or self.max_len < 1:
            raise DataError(f"{where}: max_len must be an integer >= 1, got {self.max_len!r}.",
                            fix="set max_len to the most values a row keeps, e.g. 50.")
        sep = SEQUENCE_DEFAULTS["separator"] if self.separator is None else self.separator
        if not isinstance(sep, str) or not sep:
            raise DataError(f"{where}: separator must be a non-empty string, got {self.separator!r}.",
                            fix='set separator to the text between two values of a cell, e.g. "|".')
        object.__setattr__(self, "separator", sep)
        pooling = SEQUENCE_DEFAULTS["pooling"] if self.pooling is None else self.pooling
        if pooling not in POOLINGS:
            raise DataError(f"{where} has unknown pooling {self.pooling!r}.", fix=f"use one of {', '.join(POOLINGS)}.")
        object.__setattr__(self, "pooling", pooling)
        for key in ("share_embedding", "target"):
            value = getattr(self, key)
            if value is not None and (not isinstance(value, str) or not value.strip() or value == self.name):
                raise DataError(f"{where}: {key} must name another field, got {value!r}.",
                                fix=f"set {key} to the name of a categorical field.")
        if self.share_embedding is not None and self.min_count != 1:
            raise DataError(f"{where} shares the vocabulary of {self.share_embedding!r} but sets min_count "
                            "(that field's min_count applies).",
                            fix=f"remove min_count here, or set it on field {self.share_embedding!r}.")
        attention = pooling == "attention"
        if attention and self.target is None:
            raise DataError(f"{where} has pooling attention but no target.",
                            fix="set target to the categorical field each value is weighed against "
                                "(the field whose vocabulary the sequence shares).")
        if not attention:
            given = [k for k in ("target", "attention_units", "attention_activation") if getattr(self, k) is not None]
            if given:
                raise DataError(f"{where} sets {', '.join(given)} but its pooling is {pooling} (attention only).",
                                fix=f"remove {', '.join(given)}, or set pooling: attention.")
            return
        units = SEQUENCE_DEFAULTS["attention_units"] if self.attention_units is None else self.attention_units
        if isinstance(units, (str, bytes)) or not hasattr(units, "__iter__") or not units \
                or not all(_is_int(u) and u >= 1 for u in units):
            raise DataError(f"{where}: attention_units must be a non-empty list of integers >= 1, "
                            f"got {self.attention_units!r}.", fix="set attention_units, e.g. [36].")
        object.__setattr__(self, "attention_units", tuple(units))
        act = SEQUENCE_DEFAULTS["attention_activation"] if self.attention_activation is None \
            else self.attention_activation
        if act not in ATTENTION_ACTIVATIONS:
            raise DataError(f"{where} has unknown attention_activation {self.attention_activation!r}.",
                            fix=f"use one of {', '.join(ATTENTION_ACTIVATIONS)}.")
        object.__setattr__(self, "attention_activation", act)

    def to_dict(self) -> dict[str, Any]:
        """Every option spelled out, except a default dtype (so cache keys from before dtype existed hold);
        the sequence keys for a sequence field only."""
        out = {"name": self.name, "type": self.type, "min_count": self.min_count,
               "fill_na": self.fill_na, "norm": self.norm}
        if self.dtype != DTYPES[self.type][0]:
            out["dtype"] = self.dtype
        if self.type == "sequence":
            out.update({k: getattr(self, k) for k in SEQUENCE_DEFAULTS})
            if self.attention_units is not None:
                out["attention_units"] = list(self.attention_units)
        return out


@dataclass(frozen=True)
class TaskSpec:
    """One prediction task: its name, its 0/1 label column, and optionally the
    parent task it is conditioned on (``on``: rows where the parent label is 1)."""

    name: str
    label: str
    on: str | None = None

    def __post_init__(self) -> None:
        _check_name(self.name, "task name")
        _check_name(self.label, f"label column of task {self.name!r}")
        if self.on is not None:
            _check_name(self.on, f"'on' of task {self.name!r}")
            if self.on == self.name:
                raise DataError(f"task {self.name!r} is defined on itself.", fix="remove 'on' or name another task.")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "label": self.label, "on": self.on}


def table_space(f: FieldSpec) -> str:
    """The field whose vocabulary and embedding rows ``f`` uses: its share_embedding, else itself."""
    return f.share_embedding or f.name


def check_field_links(fields: tuple[FieldSpec, ...]) -> None:
    """share_embedding and target of every sequence name a categorical field of the same table space;
    a sequence sharing a vocabulary reads its values with the owner's dtype."""
    by_name = {f.name: f for f in fields}
    cats = [f.name for f in fields if f.type == "categorical"]
    for f in fields:
        if f.type != "sequence":
            continue
        for key in ("share_embedding", "target"):
            other = getattr(f, key)
            if other is None:
                continue
            if other not in by_name or by_name[other].type != "categorical":
                what = "is not a declared field" if other not in by_name else f"is a {by_name[other].type} field"
                close = difflib.get_close_matches(other, cats, n=1, cutoff=0.5)
                raise DataError(f"field {f.name!r}: {key} {other!r} {what}; it must name a categorical field "
                                f"(declared: {cats}).",
                                fix=f"set {key}: {close[0]}." if close else f"name a categorical field in {key}.")
        if f.target is not None and table_space(by_name[f.target]) != table_space(f):
            space = f"the vocabulary of {f.share_embedding!r}" if f.share_embedding else "its own vocabulary"
            raise DataError(f"field {f.name!r}: target {f.target!r} is not in the sequence's table space "
                            f"(the sequence uses {space}); attention compares embeddings of one vocabulary.",
                            fix=f"set share_embedding: {f.target} on {f.name!r}, or name as target the field "
                                "whose vocabulary the sequence shares.")
        owner = by_name.get(f.share_embedding) if f.share_embedding else None
        if owner is not None and owner.dtype != f.dtype:
            raise DataError(f"field {f.name!r} (dtype {f.dtype}) shares the vocabulary of {owner.name!r} "
                            f"(dtype {owner.dtype}): their values would not match.",
                            fix=f"set dtype: {owner.dtype} on {f.name!r}.")


@dataclass(frozen=True)
class DatasetSchema:
    """Feature fields, tasks and source files of one dataset.

    tasks: the tasks to train. parent_tasks: tasks that are not trained but whose
    labels are still loaded because a selected task is defined ``on`` them (filled
    by :meth:`select_tasks`). files: split name -> file name relative to the data
    root; train (encoders are fitted on it), valid and test are required, other
    splits are allowed. format: "csv", "parquet" or None (from each file's extension).
    """

    name: str
    fields: tuple[FieldSpec, ...]
    tasks: tuple[TaskSpec, ...]
    files: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_FILES))
    format: Literal["csv", "parquet"] | None = None
    parent_tasks: tuple[TaskSpec, ...] = ()

    def __post_init__(self) -> None:
        _check_name(self.name, "dataset name")
        object.__setattr__(self, "fields", tuple(self.fields))
        object.__setattr__(self, "tasks", tuple(self.tasks))
        object.__setattr__(self, "parent_tasks", tuple(self.parent_tasks))
        object.__setattr__(self, "files", dict(self.files))
        if not self.fields:
            raise DataError("the schema declares no fields.", fix="add at least one entry under 'fields'.")
        if not self.tasks:
            raise DataError("the schema declares no tasks.", fix="add at least one entry under 'tasks'.")
        if self.format is not None and self.format not in FORMATS:
            raise DataError(f"unknown format {self.format!r}.",
                            fix=f"use one of {', '.join(FORMATS)} or leave it out (taken from the file extension).")
        for split, fname in self.files.items():
            _check_name(split, "split name")
            _check_name(fname, f"file of split {split!r}")
        missing = [s for s in REQUIRED_SPLITS if s not in self.files]
        if missing:
            extra = [s for s in self.files if s not in REQUIRED_SPLITS]
            renames = [f"rename {m[0]!r} to {s!r}" for s in missing
                       if (m := difflib.get_close_matches(s, extra, n=1, cutoff=0.5))]
            adds = [f"'{s}: <file>'" for s in missing]
            raise DataError(f"'files' lacks the split(s) {missing} (got {list(self.files)}); every dataset needs "
                            "train (the encoders are fitted on it), valid (early stopping) and test (the reported "
                            "metrics).",
                            fix=("; ".join(renames) + ", or " if renames else "")
                            + f"add {', '.join(adds)} under 'files' (other splits may be listed as well).")
        names = [f.name for f in self.fields]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise DataError(f"duplicate field names {dup}.", fix="declare every field once.")
        all_tasks = self.tasks + self.parent_tasks
        tnames = [t.name for t in all_tasks]
        dup = sorted({n for n in tnames if tnames.count(n) > 1})
        if dup:
            raise DataError(f"duplicate task names {dup}.", fix="give every task a distinct name.")
        leaked = sorted({t.label for t in all_tasks} & set(names))
        if leaked:
            raise DataError(f"columns {leaked} are both a feature field and a task label (label leak).",
                            fix="remove them from 'fields'.")
        check_field_links(self.fields)
        by_name = {t.name: t for t in all_tasks}
        for t in all_tasks:
            if t.on is not None and t.on not in by_name:
                raise DataError(f"task {t.name!r} is defined on {t.on!r}, which is not a declared task "
                                f"(declared: {tnames}).", fix=f"declare task {t.on!r} or fix 'on'.")
        for t in all_tasks:  # cycle check: follow the parent chain
            seen, cur = {t.name}, t.on
            while cur is not None:
                if cur in seen:
                    raise DataError(f"tasks form a cycle through 'on' starting at {t.name!r}.",
                                    fix="make the 'on' links a tree (e.g. cvr on ctr).")
                seen.add(cur)
                cur = by_name[cur].on

    # ------------------------------------------------------------------ helpers
    @property
    def categorical(self) -> tuple[FieldSpec, ...]:
        """Categorical fields in declaration order (the column order of ``Batch.cat``)."""
        return tuple(f for f in self.fields if f.type == "categorical")

    @property
    def numeric(self) -> tuple[FieldSpec, ...]:
        """Numeric fields in declaration order (the column order of ``Batch.num``)."""
        return tuple(f for f in self.fields if f.type == "numeric")

    @property
    def sequences(self) -> tuple[FieldSpec, ...]:
        """Sequence fields in declaration order (the order of ``Batch.seq`` and of their pooled vectors)."""
        return tuple(f for f in self.fields if f.type == "sequence")

    @property
    def label_columns(self) -> list[str]:
        """Label columns to load: those of the tasks and of their unselected parents, no duplicates."""
        out: list[str] = []
        for t in self.tasks + self.parent_tasks:
            if t.label not in out:
                out.append(t.label)
        return out

    @property
    def task_labels(self) -> dict[str, str]:
        """Task name -> label column, for the tasks and their unselected parents."""
        return {t.name: t.label for t in self.tasks + self.parent_tasks}

    def task(self, name: str) -> TaskSpec:
        """The task (selected or parent) called ``name``."""
        for t in self.tasks + self.parent_tasks:
            if t.name == name:
                return t
        raise ValueError(f"unknown task {name!r}; declared tasks: {[t.name for t in self.tasks + self.parent_tasks]}")

    def parent_label(self, task: str) -> str | None:
        """Label column whose 1-rows define where ``task`` applies (None for a task on all rows)."""
        on = self.task(task).on
        return None if on is None else self.task(on).label

    def file_format(self, split: str) -> Literal["csv", "parquet"]:
        """Format of a split's file: ``format`` when set, otherwise from the extension."""
        if self.format is not None:
            return self.format
        fname = self.files[split].lower()
        if fname.endswith((".parquet", ".pq")):
            return "parquet"
        if fname.endswith((".csv", ".csv.gz", ".csv.bz2", ".csv.zst", ".csv.lz4")):
            return "csv"
        raise DataError(f"cannot tell the format of {self.files[split]!r} (split {split!r}) from its extension.",
                        file=self.files[split], fix="name it *.csv or *.parquet, or set 'format' in the schema.")

    def select_tasks(self, names: list[str]) -> "DatasetSchema":
        """Schema restricted to the tasks ``names`` (kept in declaration order).

        A selected task whose ``on`` ancestor is not selected keeps working: the
        ancestor moves to ``parent_tasks`` so its label column is still loaded.
        """
        declared = self.tasks + self.parent_tasks
        dnames = [t.name for t in declared]
        unknown = [n for n in names if n not in dnames]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} for dataset {self.name!r}; declared tasks: {dnames}")
        if not names:
            raise ValueError(f"select at least one task of dataset {self.name!r}; declared tasks: {dnames}")
        wanted = set(names)
        by_name = {t.name: t for t in declared}
        needed: set[str] = set()
        for n in wanted:
            cur = by_name[n].on
            while cur is not None:
                needed.add(cur)
                cur = by_name[cur].on
        tasks = tuple(t for t in declared if t.name in wanted)
        parents = tuple(t for t in declared if t.name in needed and t.name not in wanted)
        return DatasetSchema(self.name, self.fields, tasks, dict(self.files), self.format, parents)

    # -------------------------------------------------------------- (de)serial
    def to_dict(self) -> dict[str, Any]:
        """Canonical plain-dict form (every option spelled out); ``from_dict`` inverts it."""
        return {
            "name": self.name,
            "format": self.format,
            "files": dict(sorted(self.files.items())),
            "fields": [f.to_dict() for f in self.fields],
            "tasks": [t.to_dict() for t in self.tasks],
            "parent_tasks": [t.to_dict() for t in self.parent_tasks],
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], source: str | Path | None = None) -> "DatasetSchema":
        """Build and validate a schema from a dict (``source``: file named in errors)."""
        src = None if source is None else str(source)

        def fail(problem: str, fix: str) -> DataError:
            return DataError(problem, file=src, fix=fix)

        if not isinstance(d, Mapping):
            raise fail(f"a dataset schema must be a mapping, got {type(d).__name__}.",
                       "write 'name', 'fields' and 'tasks' keys at the top level.")
        for key in d:
            if key not in _TOP_KEYS:
                raise fail(f"unknown key {key!r} at the top level of the schema.",
                           f"remove or rename it; allowed keys: {', '.join(_TOP_KEYS)}.")
        for key in ("name", "fields", "tasks"):
            if key not in d:
                raise fail(f"the schema has no {key!r} key.", f"add '{key}:' at the top level.")

        def entries(key: str, allowed: tuple[str, ...]) -> list[dict[str, Any]]:
            items = d.get(key) or []
            if not isinstance(items, list):
                raise fail(f"{key!r} must be a list of mappings, got {type(items).__name__}.",
                           f"write {key!r} as a YAML list ('- {{name: ...}}').")
            out = []
            for i, item in enumerate(items):
                if not isinstance(item, Mapping):
                    raise fail(f"{key}[{i}] must be a mapping, got {item!r}.", "write it as {name: ..., ...}.")
                if key in ("tasks", "parent_tasks") and True in item and "on" not in item:
                    # a YAML 1.1 loader (e.g. yaml.safe_load) reads the key `on` as the boolean True
                    item = {("on" if k is True else k): v for k, v in item.items()}
                for k in item:
                    if k not in allowed:
                        raise fail(f"unknown key {k!r} in {key}[{i}] ({item.get('name', '?')!r}).",
                                   f"remove or rename it; allowed keys: {', '.join(allowed)}.")
                for k in ("name", "type") if key == "fields" else ("name", "label"):
                    if k not in item:
                        raise fail(f"{key}[{i}] has no {k!r} key.", f"add '{k}:' to it.")
                out.append(dict(item))
            return out

        files = d.get("files")
        if files is None:
            files = dict(DEFAULT_FILES)
        if not isinstance(files, Mapping):
            raise fail(f"'files' must map split names to file names, got {files!r}.",
                       "write files: {train: train.csv, valid: valid.csv, test: test.csv}.")
        try:
            return cls(
                name=d["name"],
                fields=tuple(FieldSpec(**f) for f in entries("fields", _FIELD_KEYS)),
                tasks=tuple(TaskSpec(**t) for t in entries("tasks", _TASK_KEYS)),
                files={str(k): v for k, v in files.items()},
                format=d.get("format"),
                parent_tasks=tuple(TaskSpec(**t) for t in entries("parent_tasks", _TASK_KEYS)),
            )
        except DataError as e:
            if e.file is not None or src is None:
                raise
            raise DataError(e.problem, file=src, fix=e.fix) from None

    @classmethod
    def from_yaml(cls, path: str | Path) -> "DatasetSchema":
        """Read and validate a YAML schema file."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as e:
            raise DataError(f"cannot read the schema file ({e.strerror}).", file=path,
                            fix="check the path of the dataset schema.") from None
        try:
            data = yaml.load(text, Loader=_SchemaLoader)
        except yaml.YAMLError as e:
            raise DataError(f"invalid YAML: {e}", file=path, fix="correct the YAML syntax.") from None
        return cls.from_dict(data, source=path)
