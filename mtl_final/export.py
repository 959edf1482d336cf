"""ONNX export of a trained run, for serving outside Python.

    python -m mtl_final.export --run RUN_DIR [--out DIR] [--raw-inputs] [--opset 18] [--check-rows 4096]

Writes DIR (default RUN_DIR/export): ``model.onnx``, ``encoders.json`` (the run's, copied) and
``manifest.json`` (inputs, outputs, fields and the check below); the manifest is written last, so
a folder with one holds a complete export.

The graph takes *encoded* features, as ``FeatureEncoders.transform`` returns them from raw rows:

- ``categorical``: int64 [batch, n_categorical] vocabulary ids, fields in manifest order;
- ``numeric``: float32 [batch, n_numeric] filled and normalised values;
- one input per sequence field, named as the field: int64 [batch, max_len] ids, left-aligned, padding 0
  after them (the most recent max_len values of a longer sequence).

Each input exists only where the model has such fields. Outputs: ``p_<name>`` float32 [batch] for
every probability the model returns (e.g. p_ctr, p_cvr, p_ctcvr), and ``invalid_ids`` int64 [batch],
the number of the row's categorical and sequence ids outside their field's vocabulary [0, vocab_size).
Such an id is scored as its field's OOV id; the eager model refuses them, a serving graph cannot raise,
so it counts them. The batch axis is dynamic, max_len fixed. A run trained with ``calibration`` (its
calibration.json) gets its calibration inside the graph: p_<task> calibrated, p_ctcvr the product of
the calibrated parts.

With ``--raw-inputs`` it also writes ``model_raw.onnx``: the same model behind the run's encoders as
ONNX operators (mtl_final/onnx_encoders.py), taking one raw input per field (string or float64) and
returning also ``unseen_values`` [batch], so serving needs neither Python nor encoders.json. A sequence
field's raw input is its cell text (split inside the graph, which needs ``--opset 20`` or later).

Before anything is written the ONNX model is run with onnxruntime on ``check_rows`` random in-vocabulary
rows and on one row, and compared with the PyTorch model; an export further from it than
max(atol, 2 x the PyTorch model's own float32 error against float64) is refused. The raw graph is
checked on raw rows (vocabulary values, missing cells, unseen values) against
``FeatureEncoders.transform`` followed by the PyTorch model: the encoded ids must be equal, the
probabilities within the same tolerance. Both checks compare the model's own probabilities; the
calibration is then added to each graph and checked apart: on the same rows, every calibrated output must
equal ``Calibration.apply`` of the graph's own probabilities within 1e-6 (a steep isotonic segment
magnifies the float32 difference between onnxruntime and PyTorch, which the first check bounds).
Needs the ``export`` extra: ``pip install -e ".[export]"`` (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import importlib.util
import json
import logging
import os
import shutil
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from torch import nn

from mtl_final.calibration import calibrate_onnx_file, load_calibration
from mtl_final.config import ConfigError
from mtl_final.data.encoders import FeatureEncoders
from mtl_final.data.errors import DataError
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.models.base import RankingModel
from mtl_final.onnx_encoders import (UNSEEN_VALUES, check_raw_inputs, default_opset, encoded_sequence, encoder_graph,
                                     raw_inputs_doc, sample_raw_rows, sequence_encoders, with_raw_inputs)
from mtl_final.predict import PREFIX, load_run_model

__all__ = ["ExportError", "ServingGraph", "export_onnx", "export_raw_onnx", "export_run", "main", "sample_inputs"]

INVALID_IDS = "invalid_ids"
DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """An export that cannot be made or does not match the PyTorch model."""


class ServingGraph(nn.Module):
    """The traced module: encoded inputs → (p_<name> [batch] ..., invalid_ids [batch]).

    ``forward(categorical [batch, Fc] int64, numeric [batch, Fn] float32, <sequence> [batch, max_len]
    int64 ...)``; the argument of a kind of field the model lacks is omitted (categorical only, or
    numeric only), and there is one sequence argument per sequence field, in FeatureSpec order."""

    def __init__(self, model: RankingModel, features: FeatureSpec) -> None:
        super().__init__()
        self.model = model.eval()
        self.prob_names = model.output_names
        self.n_cat, self.n_num = len(features.categorical), len(features.numeric)
        self.sequences = [(s.name, s.vocab_size) for s in features.sequences]
        taken = sorted({name for name, _ in self.sequences} & {"categorical", "numeric", *self.output_names})
        if taken:
            raise ExportError(f"sequence field(s) {taken} are named like another input or output of the serving "
                              "graph; rename the field(s) in the dataset schema to export")
        sizes = torch.tensor([size for _, size in features.categorical], dtype=torch.long)
        self.register_buffer("vocab_sizes", sizes, persistent=False)
        self.register_buffer("oov_ids", sizes - 1, persistent=False)  # the encoders' OOV: each field's last id

    @property
    def input_names(self) -> list[str]:
        return ((["categorical"] if self.n_cat else []) + (["numeric"] if self.n_num else [])
                + [name for name, _ in self.sequences])

    @property
    def output_names(self) -> list[str]:
        return [PREFIX + name for name in self.prob_names] + [INVALID_IDS]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(inputs)
        cat = next(it) if self.n_cat else None
        num = next(it) if self.n_num else None
        rows = inputs[0].shape[0]
        if cat is None:
            cat = torch.zeros(rows, 0, dtype=torch.long)
        if num is None:
            num = torch.zeros(rows, 0, dtype=torch.float32)
        bad = (cat < 0) | (cat >= self.vocab_sizes)
        cat = torch.where(bad, self.oov_ids.expand_as(cat), cat)
        invalid = bad.sum(dim=1)
        seq = {}
        for name, size in self.sequences:
            ids = next(it)
            wrong = (ids < 0) | (ids >= size)
            seq[name] = torch.where(wrong, size - 1, ids)
            invalid = invalid + wrong.sum(dim=1)
        probs = self.model(Batch(cat, num, seq=seq)).probs
        return (*(probs[name] for name in self.prob_names), invalid)


def _require_exporter() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs the package(s) {missing}: pip install -e \".[export]\"")
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 6):
        raise ExportError(f"ONNX export needs torch >= 2.6 (dynamic batch axis); this is torch {torch.__version__}")


def sample_inputs(features: FeatureSpec, rows: int, seed: int = 0) -> list[np.ndarray]:
    """Random in-vocabulary graph inputs: ids uniform in [0, vocab_size) per field, numerics N(0, 1); per
    sequence field [rows, max_len] ids uniform in [1, vocab_size), left-aligned, lengths uniform in
    0..max_len (padding 0 after them)."""
    rng = np.random.default_rng(seed)
    out = []
    if features.categorical:
        sizes = np.array([size for _, size in features.categorical])
        out.append((rng.random((rows, len(sizes))) * sizes).astype(np.int64))
    if features.numeric:
        out.append(rng.standard_normal((rows, len(features.numeric))).astype(np.float32))
    for s in features.sequences:
        ids = rng.integers(1, s.vocab_size, (rows, s.max_len), dtype=np.int64)
        lengths = rng.integers(0, s.max_len + 1, rows)
        out.append(np.where(np.arange(s.max_len) < lengths[:, None], ids, 0))
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs progress and optional-package notices (torchvision) and warns about its own
    internals (deprecations, axis naming); none of it concerns the user."""
    # torch.onnx logs progress; onnxscript's version converter a notice, and a traceback where it cannot
    # reach the opset asked for (export_onnx checks the written file's opset itself); onnx_ir, the
    # optimiser's passes, logs at INFO
    quiet = {"torch.onnx": logging.ERROR, "onnxscript": logging.CRITICAL, "onnx_ir": logging.WARNING}
    loggers = {name: logging.getLogger(name) for name in quiet}
    levels = {name: log.level for name, log in loggers.items()}
    for name, log in loggers.items():
        log.setLevel(quiet[name])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name", category=UserWarning)
            # MMoE / PLE keep their last gate weights as plain attributes for inspection; not part of the graph
            warnings.filterwarnings("ignore", message=r".*were assigned during export", category=UserWarning)
            yield
    finally:
        for name, log in loggers.items():
            log.setLevel(levels[name])


def _onnx_session(model: Path | bytes) -> Any:
    """An onnxruntime CPU session of an ONNX file or of a serialised model."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model if isinstance(model, bytes) else str(model), options,
                                providers=["CPUExecutionProvider"])


def _named_outputs(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def export_dir(run_dir: str | Path, out_dir: str | Path | None = None) -> Path:
    """Where export_run writes: out_dir, by default run_dir/export."""
    return Path(out_dir) if out_dir is not None else Path(run_dir) / "export"


def export_onnx(model: RankingModel, features: FeatureSpec, path: str | Path, opset: int = DEFAULT_OPSET,
                check_rows: int = 4096, atol: float = 1e-5) -> dict[str, Any]:
    """Write ``model`` (eval mode, any registered family) as a ServingGraph to the ONNX file ``path`` and
    compare onnxruntime with PyTorch on ``check_rows`` random rows and on one row, allowing per output
    max(atol, 2 x |PyTorch float32 - PyTorch float64|).

    Returns {"inputs", "outputs", "check"} for the manifest. Raises ExportError when the exporter
    packages are missing, the graph cannot be exported or an output differs by more than its tolerance."""
    _require_exporter()
    if check_rows < 1:
        raise ValueError(f"check_rows must be >= 1, got {check_rows}")
    path = Path(path)
    graph = ServingGraph(model, features).eval()
    example = [torch.from_numpy(a) for a in sample_inputs(features, 8)]
    batch = torch.export.Dim("batch", min=1)
    dynamic = (tuple({0: batch} for _ in example),)  # one entry: forward(*inputs)
    with torch.no_grad(), _quiet_exporter():
        try:
            torch.onnx.export(graph, tuple(example), str(path), dynamo=True, opset_version=opset,
                              input_names=graph.input_names, output_names=graph.output_names,
                              dynamic_shapes=dynamic, external_data=False, verbose=False)
        except Exception as e:  # the exporter's own errors are pages long: the first line, the rest chained
            first = (str(e).strip() or type(e).__name__).splitlines()[0]
            raise ExportError(f"torch.onnx could not export {type(model).__name__}: {first}") from e

    import onnx
    import onnxruntime

    written = default_opset(onnx.load(str(path), load_external_data=False))
    if written != opset:  # the exporter writes opset 18 and leaves it there where it cannot convert
        raise ExportError(f"torch.onnx could not write ONNX opset {opset} for {type(model).__name__} (the file has "
                          f"opset {written}); choose another --opset ({DEFAULT_OPSET}, the default, always works)")

    # A float32 model is only as exact as its conditioning allows (SAM's stacked products reach logits of 3e7
    # from N(0, 1) embeddings): onnxruntime may differ from PyTorch by what PyTorch itself differs from float64.
    reference = copy.deepcopy(graph).double()
    names = graph.output_names
    diffs, noise = dict.fromkeys(names, 0.0), dict.fromkeys(names, 0.0)
    sizes = sorted({check_rows, 1}, reverse=True)
    session = _onnx_session(path)
    for rows in sizes:
        inputs = sample_inputs(features, rows, seed=rows)
        with torch.no_grad():
            want = [t.numpy() for t in graph(*(torch.from_numpy(a) for a in inputs))]
            exact = [t.numpy() for t in reference(*(torch.from_numpy(a if a.dtype == np.int64 else a.astype(np.float64))
                                                    for a in inputs))]
        by_name = _named_outputs(session, dict(zip(graph.input_names, inputs)))
        got = [by_name[name] for name in names]
        for name, g, w, e in zip(names, got, want, exact):
            if g.shape != w.shape:
                raise ExportError(f"output {name}: onnxruntime shape {g.shape} != PyTorch {w.shape} "
                                  f"for a batch of {rows}")
            diffs[name] = max(diffs[name], float(np.abs(g.astype(np.float64) - w).max(initial=0.0)))
            noise[name] = max(noise[name], float(np.abs(w.astype(np.float64) - e).max(initial=0.0)))
    tolerance = {name: max(atol, 2 * noise[name]) for name in names}
    for name in names:
        if diffs[name] > tolerance[name]:
            raise ExportError(f"onnxruntime differs from PyTorch by {diffs[name]:.3g} on {name}, more than "
                              f"max(atol {atol:g}, 2 x PyTorch's own float32 error {noise[name]:.3g})")
    inputs_doc: dict[str, Any] = {}
    if graph.n_cat:
        inputs_doc["categorical"] = {"dtype": "int64", "shape": ["batch", graph.n_cat], "fields": [
            {"name": name, "vocab_size": size, "oov_index": size - 1} for name, size in features.categorical]}
    if graph.n_num:
        inputs_doc["numeric"] = {"dtype": "float32", "shape": ["batch", graph.n_num],
                                 "fields": list(features.numeric)}
    for s in features.sequences:
        inputs_doc[s.name] = {"dtype": "int64", "shape": ["batch", s.max_len], "sequence": True, "padding": 0,
                              "vocab_size": s.vocab_size, "oov_index": s.vocab_size - 1, "pooling": s.pooling,
                              "share_embedding": s.share_embedding}
    return {
        "inputs": inputs_doc,
        "outputs": [{"name": n, "dtype": "float32", "shape": ["batch"]} for n in graph.output_names[:-1]]
                   + [{"name": INVALID_IDS, "dtype": "int64", "shape": ["batch"]}],
        "check": {"runtime": f"onnxruntime {onnxruntime.__version__}", "rows": sizes, "atol": atol,
                  "max_abs_diff": diffs, "float32_error": noise, "tolerance": tolerance},
    }


def export_raw_onnx(model: RankingModel, encoders: FeatureEncoders, encoded_path: str | Path, path: str | Path,
                    tolerance: dict[str, float], check_rows: int = 4096) -> dict[str, Any]:
    """Write the checked encoded-input export ``encoded_path`` behind the encoders' ONNX graph to ``path``
    and check it on ``check_rows`` raw rows and one row: encoder graph ids equal to
    FeatureEncoders.transform's, numerics within 1e-6 · (1 + |x|), and every p_<name> within ``tolerance``
    (export_onnx's) of the PyTorch model on the Python-encoded rows. Returns the manifest entry."""
    import onnx
    import pandas as pd

    try:
        merged = with_raw_inputs(onnx.load(str(encoded_path)), encoders)
        onnx.checker.check_model(merged)
    except (ValueError, onnx.checker.ValidationError) as e:
        raise ExportError(f"cannot put the encoders in front of the model: {e}") from e
    onnx.save(merged, str(path))
    graph = ServingGraph(model, encoders.feature_spec()).eval()
    names = graph.output_names
    diffs = dict.fromkeys([*names, UNSEEN_VALUES], 0.0)
    encoded_diff = 0.0
    sizes = sorted({check_rows, 1}, reverse=True)
    counts_unseen = bool(graph.n_cat or graph.sequences)
    session = _onnx_session(Path(path))
    front = _onnx_session(encoder_graph(encoders, default_opset(merged)).SerializeToString())  # encoders alone
    try:
        for rows in sizes:
            raw = sample_raw_rows(encoders, rows, seed=rows)
            cat, num, seq = _transform(encoders, pd.DataFrame(raw))
            cat = cat.astype(np.int64)
            seq = {name: seq[name].astype(np.int64) for name, _ in graph.sequences}
            encoded = ([cat] if graph.n_cat else []) + ([num] if graph.n_num else []) + list(seq.values())
            got_encoded = _named_outputs(front, raw)
            _check_encoded_ids(got_encoded, cat if graph.n_cat else None, seq, raw, encoders)
            if graph.n_num:
                gap = np.abs(got_encoded["numeric"].astype(np.float64) - num) / (1 + np.abs(num))
                encoded_diff = max(encoded_diff, float(gap.max(initial=0.0)))
            with torch.no_grad():
                want = [t.numpy() for t in graph(*(torch.from_numpy(a) for a in encoded))]
            unseen = (cat == np.array([e.oov_index for e in encoders.categorical])).sum(axis=1) if graph.n_cat \
                else np.zeros(rows, dtype=np.int64)
            for e in sequence_encoders(encoders):
                unseen = unseen + (seq[e.name] == e.oov_index).sum(axis=1)
            got = _named_outputs(session, raw)
            for name, w in zip(names, want):
                diffs[name] = max(diffs[name], float(np.abs(got[name].astype(np.float64) - w).max(initial=0.0)))
            if counts_unseen:
                diffs[UNSEEN_VALUES] = max(diffs[UNSEEN_VALUES], float(np.abs(got[UNSEEN_VALUES] - unseen).max()))
    finally:
        encoders.reset_counters()
    if encoded_diff > 1e-6:
        raise ExportError(f"the ONNX encoders' numerics differ from FeatureEncoders by {encoded_diff:.3g} (relative)")
    limits = {**tolerance, INVALID_IDS: 0.0, UNSEEN_VALUES: 0.0}
    for name, diff in diffs.items():
        if diff > limits[name]:
            raise ExportError(f"the raw-input graph differs from encoders + PyTorch by {diff:.3g} on {name} "
                              f"(allowed {limits[name]:.3g})")
    outputs = names[:-1] + [INVALID_IDS] + ([UNSEEN_VALUES] if counts_unseen else [])
    return {"file": Path(path).name, "inputs": raw_inputs_doc(encoders),
            "outputs": [{"name": n, "dtype": "float32" if n.startswith(PREFIX) else "int64", "shape": ["batch"]}
                        for n in outputs],
            "check": {"rows": sizes, "max_abs_diff": diffs, "numeric_max_relative_diff": encoded_diff,
                      "ids": "equal"}}


def _transform(encoders: FeatureEncoders, frame: Any) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """FeatureEncoders.transform as (cat [N, Fc], num [N, Fn], seq: name -> [N, max_len])."""
    rows = encoders.transform(frame)
    cat, num = rows
    return cat, num, rows.seq


def _check_encoded_ids(got: dict[str, np.ndarray], cat: np.ndarray | None, seq: dict[str, np.ndarray],
                       raw: dict[str, np.ndarray], encoders: FeatureEncoders) -> None:
    """Raise ExportError naming the field and its raw value where the encoder graph's ids (``got``) differ
    from FeatureEncoders' (cat [N, Fc] or None, seq: name -> [N, max_len])."""
    expected = ([("categorical", cat, [e.name for e in encoders.categorical])] if cat is not None else []) + [
        (encoded_sequence(name), ids, [name] * ids.shape[1]) for name, ids in seq.items()]
    for output, want, fields in expected:
        if not np.array_equal(got[output], want):
            row, col = np.argwhere(got[output] != want)[0]
            field = fields[col]
            raise ExportError(f"the ONNX encoders give id {got[output][row, col]} for {field}={raw[field][row]!r}"
                              f"{f' (position {col})' if output != 'categorical' else ''}, FeatureEncoders gives "
                              f"{want[row, col]}")


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
               check_rows: int = 4096, atol: float = 1e-5, raw_inputs: bool = False) -> dict[str, Any]:
    """Export ``run_dir``'s best.pt model to ``out_dir`` (default run_dir/export); returns the manifest.
    raw_inputs=True also writes model_raw.onnx (see export_raw_onnx).

    Nothing in out_dir changes unless the export passes its check. Raises FileNotFoundError /
    ConfigError for an unusable run directory, ExportError as export_onnx does, ValueError where the
    run's calibration does not fit the graph (calibrate_onnx_file)."""
    run_dir = Path(run_dir)
    out_dir = export_dir(run_dir, out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file; name a folder for the export")
    _require_exporter()
    model, encoders, cfg = load_run_model(run_dir)
    if raw_inputs:  # before the encoded export: what the raw-input graph cannot encode fails at once
        try:
            check_raw_inputs(encoders, opset)
        except ValueError as e:
            raise ExportError(f"{run_dir}: --raw-inputs: {e}; {out_dir} was left as it was") from e
    calibration = load_calibration(run_dir)  # None: the run serves its model's own probabilities
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    done = False
    try:
        files = ["model.onnx", "encoders.json", "manifest.json"]
        try:
            graph_doc = export_onnx(model, encoders.feature_spec(), work / "model.onnx", opset, check_rows, atol)
            if raw_inputs:
                graph_doc["raw_inputs"] = export_raw_onnx(model, encoders, work / "model.onnx", work / "model_raw.onnx",
                                                          graph_doc["check"]["tolerance"], check_rows)
                files.insert(1, "model_raw.onnx")
            if calibration is not None:  # into the checked graphs; the check rows again, to check it
                sizes, features = graph_doc["check"]["rows"], encoders.feature_spec()
                feeds = {"model.onnx": [dict(zip(graph_doc["inputs"], sample_inputs(features, n, seed=n)))
                                        for n in sizes]}
                if raw_inputs:
                    feeds["model_raw.onnx"] = [sample_raw_rows(encoders, n, seed=n) for n in sizes]
                graph_doc["calibration"] = {"method": calibration.method, "check": {
                    name: calibrate_onnx_file(work / name, calibration, PREFIX, rows, _onnx_session)
                    for name, rows in feeds.items()}}
        except ExportError as e:
            raise ExportError(f"{run_dir}: {e}; {out_dir} was left as it was") from e
        manifest = {
            "format": "onnx",
            "file": "model.onnx",
            "opset": opset,
            "run": str(run_dir),
            "model": cfg["model"]["name"],
            "calibration": "none",
            **graph_doc,
            "encoders": "encoders.json",
            "encode_with": "mtl_final.data.encoders.FeatureEncoders.load('encoders.json').transform(df)",
            "torch": torch.__version__,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        shutil.copyfile(run_dir / "encoders.json", work / "encoders.json")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (out_dir / "manifest.json").unlink(missing_ok=True)  # no manifest = no complete export, until the new one lands
        if not raw_inputs:
            (out_dir / "model_raw.onnx").unlink(missing_ok=True)  # an older export's, no longer this model
        for name in files:
            os.replace(work / name, out_dir / name)
        done = True
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if created and not done:
            shutil.rmtree(out_dir, ignore_errors=True)  # made here, holds nothing else
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mtl_final.export",
        description="Export a trained run (config.yaml, encoders.json, best.pt) to ONNX: model.onnx, "
                    "encoders.json and manifest.json, checked against PyTorch with onnxruntime.")
    parser.add_argument("--run", required=True, help="training run directory")
    parser.add_argument("--out", default=None, help="output folder (default RUN/export)")
    parser.add_argument("--format", default="onnx", choices=["onnx"], help="export format")
    parser.add_argument("--raw-inputs", action="store_true",
                        help="also write model_raw.onnx, which takes raw field values (the encoders as ONNX ops)")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument("--check-rows", type=int, default=4096, help="random rows compared with PyTorch")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="accepted |onnxruntime - PyTorch| (raised to 2x PyTorch's own float32 error where larger)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = export_dir(args.run, args.out)
        manifest = export_run(args.run, out, args.opset, args.check_rows, args.atol, args.raw_inputs)
    except (ConfigError, DataError, ExportError, OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    worst = max(manifest["check"]["max_abs_diff"].values())
    print(f"[export] {out / 'model.onnx'}: inputs {list(manifest['inputs'])}, outputs "
          f"{[o['name'] for o in manifest['outputs']]}; max |onnxruntime - torch| {worst:.2g} "
          f"on {manifest['check']['rows']} rows")
    if "raw_inputs" in manifest:
        raw = manifest["raw_inputs"]
        worst = max(v for k, v in raw["check"]["max_abs_diff"].items() if k.startswith(PREFIX))
        print(f"[export] {out / raw['file']}: raw inputs {[i['name'] for i in raw['inputs']]}, outputs "
              f"{[o['name'] for o in raw['outputs']]}; max |onnxruntime - encoders + torch| {worst:.2g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
