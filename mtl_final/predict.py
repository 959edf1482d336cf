"""Batch inference with a trained run directory.

    python -m mtl_final.predict --run RUN_DIR --input FILE.csv|.parquet --out FILE.csv|.parquet [--keep id,user]

The model is rebuilt from ``RUN_DIR/config.yaml`` (architecture and selected tasks), the feature
layout from ``RUN_DIR/encoders.json`` (the encoders fitted on the run's train split, never refitted)
and the weights from ``RUN_DIR/best.pt``; it runs in eval mode on the CPU. The input is streamed
chunk by chunk; the output has one row per input row, in input order, with the ``--keep`` columns
(copied verbatim, as text) followed by ``p_<name>`` for every probability the model outputs
(e.g. p_ctr, p_cvr, p_ctcvr). Label columns are not needed in the input. Sequence fields are read
as the training data was (cells split on their separator, or Parquet lists) and encoded with the
run's vocabularies. A run trained with ``calibration`` scores through its ``calibration.json``:
p_<task> calibrated, p_ctcvr the product of the calibrated parts.
"""
from __future__ import annotations

import argparse
import csv
import inspect
import io
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import torch

from mtl_final import kernels
from mtl_final.calibration import calibrated_model
from mtl_final.config import ConfigError, load_config
from mtl_final.data import reader
from mtl_final.data.encoders import FeatureEncoders
from mtl_final.data.errors import DataError
from mtl_final.data.features import Batch
from mtl_final.data.schema import DatasetSchema
from mtl_final.data.store import _Problems, _validate_categorical, _validate_numeric, _validate_sequences
from mtl_final.models import build_model
from mtl_final.models.base import RankingModel
from mtl_final.nn import cpu_matmul
from mtl_final.train.checkpoint import load_checkpoint
from mtl_final.train.run import uses_simulator

__all__ = ["load_run_model", "predict", "run_schema_path", "main"]

PREFIX = "p_"


# ----------------------------------------------------------------------------- the run
def run_schema_path(cfg: Mapping[str, Any]) -> Path:
    """The dataset schema file a run used: data.schema, or the simulator's schema.yaml in its
    cache folder when data.simulator was used without data.root (the data is not regenerated)."""
    data = cfg["data"]
    if data["schema"]:
        return Path(data["schema"])
    if uses_simulator(cfg):
        from mtl_final.data.simulator import ensure_simulated, simulation_key

        # the same folder ensure_simulated(cache_dir, **simulator) returns, with its defaults
        args = inspect.signature(ensure_simulated).bind(data["cache_dir"], **data["simulator"])
        args.apply_defaults()
        a = args.arguments
        return Path(a["cache_dir"]) / f"sim-{simulation_key(a['n_rows'], a['seed'], **a['kw'])}" / "schema.yaml"
    raise ConfigError("the run's config names no dataset schema (data.schema) and no simulator (data.simulator)")


def load_run_model(run_dir: str | Path) -> tuple[RankingModel, FeatureEncoders, dict[str, Any]]:
    """(model in eval mode on the CPU with the best.pt weights, saved encoders, resolved config)."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "encoders.json", "best.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"{run_dir / name} not found: --run must be a finished training run "
                                    "directory (config.yaml, encoders.json, best.pt)")
    cfg = load_config(run_dir / "config.yaml")
    try:
        encoders = FeatureEncoders.load(run_dir / "encoders.json")
    except (ValueError, KeyError, TypeError) as e:  # JSONDecodeError is a ValueError
        raise ValueError(f"cannot read {run_dir / 'encoders.json'} ({type(e).__name__}: {e}): "
                         "train the run again or restore the file") from e
    schema_path = run_dir / "schema.yaml"  # the run's copy; runs made before it was written name theirs
    if not schema_path.is_file():
        schema_path = run_schema_path(cfg)
    if not schema_path.is_file():
        raise FileNotFoundError(
            f"dataset schema {schema_path} of run {run_dir} not found (the model's tasks are read from it); "
            "restore that file, or point data.schema in the run's config.yaml at a copy")
    schema = DatasetSchema.from_yaml(schema_path)
    if cfg["tasks"]:
        schema = schema.select_tasks(list(cfg["tasks"]))
    model = build_model(cfg, encoders.feature_spec(), list(schema.tasks))
    try:
        state = load_checkpoint(run_dir / "best.pt", "cpu")
    except Exception as e:  # a truncated or foreign file: torch raises RuntimeError, pickle its own errors
        first = (str(e).strip() or type(e).__name__).splitlines()[0]
        raise ValueError(f"cannot read {run_dir / 'best.pt'} ({type(e).__name__}: {first}): "
                         "train the run again or restore the file") from e
    # the trainer's {"model": state dict, "epoch", ...}, or a plain state dict (README: data-parallel training)
    weights = state["model"] if isinstance(state, Mapping) and isinstance(state.get("model"), Mapping) else state
    if not isinstance(weights, Mapping):
        raise ValueError(f"{run_dir / 'best.pt'} holds a {type(weights).__name__}, not a state dict: "
                         "train the run again or restore the file")
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise ValueError(f"{run_dir / 'best.pt'} does not fit the model rebuilt from config.yaml, "
                         f"encoders.json and {schema_path}: {e}") from None
    model.eval()
    kernels.use_kernels(cfg["train"]["kernels"])  # score on the path the run trained with
    cpu_matmul.use_cpu_matmul(cfg["train"]["cpu_matmul"], strict=False)  # scoring never refuses a machine
    torch.set_float32_matmul_precision("highest")  # but in exact float32, as with train.precision=bf16
    return model, encoders, cfg


class _Scorer:
    """Scores encoded rows in forward batches of exactly ``batch_size`` rows (the last one fewer), whatever
    the reading chunks were, and writes each batch's output rows in order. Fixed batch shapes make the
    output independent of chunk_rows: CPU kernels may round a row differently in a batch of another size."""

    def __init__(self, model: RankingModel, batch_size: int, schema: pa.Schema, n_keep: int,
                 write: Callable[[pa.RecordBatch], None]) -> None:
        self.model, self.batch_size, self.schema, self.write = model, batch_size, schema, write
        self.names = [c[len(PREFIX):] for c in schema.names[n_keep:]]
        self.cat: list[np.ndarray] = []
        self.num: list[np.ndarray] = []
        self.seq: dict[str, list[np.ndarray]] = {}
        self.kept: list[list[pa.Array]] = [[] for _ in range(n_keep)]
        self.pending = 0

    def add(self, cat: np.ndarray, num: np.ndarray, seq: dict[str, np.ndarray], kept: list[pa.Array]) -> None:
        """Queue encoded rows: cat [n, Fc], num [n, Fn], seq field -> [n, max_len], the kept columns [n]."""
        self.cat.append(cat)
        self.num.append(num)
        for name, ids in seq.items():
            self.seq.setdefault(name, []).append(ids)
        for parts, arr in zip(self.kept, kept):
            parts.append(arr)
        self.pending += cat.shape[0]
        if self.pending >= self.batch_size:
            self._score(final=False)

    def finish(self) -> None:
        if self.pending:
            self._score(final=True)

    @torch.no_grad()
    def _score(self, final: bool) -> None:
        cat = torch.from_numpy(np.concatenate(self.cat).astype(np.int64, copy=False))
        num = torch.from_numpy(np.concatenate(self.num).astype(np.float32, copy=False))
        seq = {name: torch.from_numpy(np.concatenate(parts).astype(np.int64, copy=False))
               for name, parts in self.seq.items()}
        kept = [pa.concat_arrays(parts) for parts in self.kept]
        n, bs = cat.shape[0], self.batch_size
        stop = n if final else n - n % bs
        for lo in range(0, stop, bs):
            hi = min(lo + bs, stop)
            with cpu_matmul.scope():
                batch = Batch(cat[lo:hi], num[lo:hi], seq={name: ids[lo:hi] for name, ids in seq.items()})
                probs = self.model(batch).probs
            arrays = [a.slice(lo, hi - lo) for a in kept]
            arrays += [pa.array(probs[name].float().numpy(), type=pa.float32()) for name in self.names]
            self.write(pa.RecordBatch.from_arrays(arrays, schema=self.schema))
        self.cat, self.num = [cat[stop:].numpy()], [num[stop:].numpy()]
        self.seq = {name: [ids[stop:].numpy()] for name, ids in seq.items()}
        self.kept = [[a.slice(stop)] for a in kept]
        self.pending = n - stop


# ----------------------------------------------------------------------------- output
class _Writer:
    """Streams record batches to a temporary sibling of ``path``; ``commit`` renames it into place."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}")
        path.parent.mkdir(parents=True, exist_ok=True)
        if reader.detect_format(path) == "parquet":
            self._writer: Any = pq.ParquetWriter(str(self.tmp), schema)
            self._fh = None
        else:
            self._fh = open(self.tmp, "wb")
            head = io.StringIO()
            csv.writer(head, lineterminator="\n").writerow(schema.names)  # header unquoted where possible
            self._fh.write(head.getvalue().encode("utf-8"))
            self._writer = pacsv.CSVWriter(self._fh, schema, write_options=pacsv.WriteOptions(
                include_header=False, quoting_style="needed"))

    def write(self, batch: pa.RecordBatch) -> None:
        self._writer.write_batch(batch)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def commit(self) -> None:
        self.close()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        try:
            self.close()
        finally:
            self.tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------- predict
def _kept_text(values: pd.Series, path: Path) -> pa.Array:
    """A --keep column as text, copied verbatim; a Parquet list column has no text form."""
    if isinstance(values.dtype, pd.ArrowDtype) and reader.is_list(values.dtype.pyarrow_dtype):
        raise DataError("a --keep column is a list column, which has no text form to copy.", file=path,
                        column=str(values.name), fix="leave the column out of --keep.")
    return pa.array(values.to_numpy(dtype=object), type=pa.string(), from_pandas=True)


def predict(run_dir: str | Path, input_path: str | Path, output_path: str | Path, chunk_rows: int = 262144,
            batch_size: int = 65536, keep: Sequence[str] = (),
            log: Callable[[str], Any] | None = print) -> dict[str, Any]:
    """Score ``input_path`` (CSV or Parquet, streamed) with the model of ``run_dir`` into ``output_path``
    (CSV or Parquet by extension, written atomically).

    Output columns: ``keep`` (copied from the input as text), then ``p_<name>`` per model probability.
    Raises DataError for a missing input column (file, column) or a non-numeric value in a numeric
    field (file, column, first line). Returns {rows, columns, oov, missing, filled_na, sequences,
    seconds, output}: oov per categorical and sequence field (unseen values scored as OOV), missing
    per categorical field (empty cells scored as padding), filled_na per numeric field, sequences
    per sequence field its counts (``encoders.SEQUENCE_COUNTERS``: values, truncated rows and
    values, OOV values, empty rows, skipped empty values).
    """
    t0 = time.perf_counter()
    if chunk_rows < 1 or batch_size < 1:
        raise ValueError(f"chunk_rows and batch_size must be >= 1, got {chunk_rows} and {batch_size}")
    input_path, output_path = Path(input_path), Path(output_path)
    if not input_path.is_file():
        raise DataError("the input file is not found.", file=input_path, fix="check the --input path.")
    if output_path.is_dir():
        raise ValueError(f"--out {output_path} is a folder; name the output file (*.csv or *.parquet)")
    if output_path.resolve() == input_path.resolve():
        raise ValueError(f"--out {output_path} is the input file; write the predictions elsewhere")
    if not output_path.name.lower().endswith((".csv", ".parquet", ".pq")):
        raise ValueError(f"--out {output_path}: name the output *.csv or *.parquet")
    model, encoders, _ = load_run_model(run_dir)
    model = calibrated_model(model, run_dir)  # p_<task> through the run's calibration.json, if it has one
    keep = list(dict.fromkeys(keep))
    num_cols = [e.name for e in encoders.numeric]
    features = encoders.columns

    fmt = reader.detect_format(input_path)
    header = reader.read_header(input_path, fmt)
    missing = [c for c in features if c not in header]
    if missing:
        raise DataError(f"the input lacks feature column(s) {missing} the model was trained on "
                        f"(needed: {features}; header: {header}).", file=input_path, column=missing[0], line=1,
                        fix="add the column(s) to the input file (labels are not needed).")
    missing = [c for c in keep if c not in header]
    if missing:
        raise DataError(f"--keep column(s) {missing} are not in the input (header: {header}).",
                        file=input_path, column=missing[0], line=1, fix="fix the --keep list.")

    prob_cols = [PREFIX + name for name in model.output_names]
    clash = sorted(set(keep) & set(prob_cols))
    if clash:
        raise ValueError(f"--keep column(s) {clash} clash with the prediction columns {prob_cols}")
    out_schema = pa.schema([(c, pa.string()) for c in keep] + [(c, pa.float32()) for c in prob_cols])

    encoders.reset_counters()
    cat_fields = [f for f in encoders.fields if f.type == "categorical"]
    seq_fields = [f for f in encoders.fields if f.type == "sequence"]
    seq_cols = [f.name for f in seq_fields]
    problems = _Problems(input_path)
    rows = 0
    writer = _Writer(output_path, out_schema)
    scorer = _Scorer(model, batch_size, out_schema, len(keep), writer.write)
    try:
        for line0, df in reader.iter_chunks(input_path, list(dict.fromkeys(features + keep)), chunk_rows, fmt,
                                            seq_cols):
            kept = [_kept_text(df[c], input_path) for c in keep]
            _validate_categorical(df, cat_fields, line0, problems)
            _validate_numeric(df, num_cols, line0, problems)  # in place: float64, NaN = missing
            _validate_sequences(df, seq_fields, line0, problems)
            if problems:
                continue  # keep scanning to count every bad cell, predict nothing more
            encoded = encoders.transform(df)
            scorer.add(encoded.cat, encoded.num, encoded.seq, kept)
            rows += len(df)
        problems.raise_if_any()
        scorer.finish()
        writer.commit()
    except BaseException:
        writer.abort()
        raise

    counters = encoders.counters()
    summary = {
        "rows": rows,
        "columns": keep + prob_cols,
        "oov": {e.name: counters[e.name]["oov"] for e in encoders.categorical + encoders.sequences},
        "missing": {e.name: counters[e.name]["missing"] for e in encoders.categorical},
        "filled_na": {e.name: counters[e.name]["filled_na"] for e in encoders.numeric},
        "sequences": {e.name: counters[e.name] for e in encoders.sequences},
        "seconds": round(time.perf_counter() - t0, 3),
        "output": str(output_path),
    }
    if log:
        oov = ", ".join(f"{k} {v:,}" for k, v in summary["oov"].items() if v) or "none"
        truncated = ", ".join(f"{k} {c['truncated_rows']:,}" for k, c in summary["sequences"].items()
                              if c["truncated_rows"])
        log(f"[predict] {rows:,} rows -> {output_path} ({', '.join(summary['columns'])}) in "
            f"{summary['seconds']:.2f}s | OOV values: {oov}" + (f" | truncated rows: {truncated}" if truncated else ""))
    return summary


# ----------------------------------------------------------------------------- CLI
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mtl_final.predict",
        description="Score a CSV/Parquet file with a trained run (config.yaml, encoders.json, best.pt); "
                    "writes one row per input row: the --keep columns, then p_<task> probabilities.")
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--input", required=True, help="input file (.csv or .parquet); labels are not needed")
    parser.add_argument("--out", required=True, help="output file (.csv or .parquet)")
    parser.add_argument("--keep", default="", help="comma-separated input columns to copy into the output")
    parser.add_argument("--chunk-rows", type=int, default=262144, help="rows read per chunk (bounds memory)")
    parser.add_argument("--batch-size", type=int, default=65536, help="rows per model forward pass")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    args = parser.parse_args(argv)
    if args.threads < 0:
        parser.error(f"--threads must be >= 0 (0 = torch default), got {args.threads}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    keep = [c.strip() for c in args.keep.split(",") if c.strip()]
    try:
        summary = predict(args.run, args.input, args.out, args.chunk_rows, args.batch_size, keep=keep)
    except (ConfigError, DataError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
