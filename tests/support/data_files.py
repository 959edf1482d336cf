"""Hand-written CSV files and schemas of the data tests, the encoded store built from them, and its
arrays by column."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from mtl_final.data import DatasetSchema, EncodedStore


def write_csv(path: Path, header: str, rows: list[str], crlf: bool = False) -> Path:
    nl = "\r\n" if crlf else "\n"
    path.write_bytes((nl.join([header, *rows]) + nl).encode("utf-8"))
    return path


def schema_dict(fields: list[dict], tasks: list[dict] | None = None, **extra) -> dict:
    return {"name": "toy", "fields": fields, "tasks": tasks or [{"name": "ctr", "label": "click"}], **extra}


def build(schema: DatasetSchema | dict, root: Path, cache: Path, **kw) -> EncodedStore:
    if isinstance(schema, dict):
        schema = DatasetSchema.from_dict(schema)
    return EncodedStore.build_or_load(schema, root, cache, log=None, **kw)


def arrays(store: EncodedStore, split: str) -> dict[str, np.ndarray]:
    sa = store.split(split)
    out = {f"cat:{n}": np.asarray(a) for n, a in zip(sa.cat_names, sa.cat)}
    out.update({f"num:{n}": np.asarray(a) for n, a in zip(sa.num_names, sa.num)})
    out.update({f"label:{n}": np.asarray(a) for n, a in sa.labels.items()})
    return out


def assert_message(err: pytest.ExceptionInfo, *parts: str) -> None:
    msg = str(err.value)
    for p in parts:
        assert p in msg, f"{p!r} not in message: {msg}"
