"""ONNX export of a trained run, for serving outside Python.

    python -m mtl_final.export --run RUN_DIR [--out DIR] [--opset 18] [--check-rows 4096]

Writes DIR (default RUN_DIR/export): ``model.onnx``, ``encoders.json`` (the run's, copied) and
``manifest.json`` (inputs, outputs, fields and the check below); the manifest is written last, so
a folder with one holds a complete export.

The graph takes *encoded* features, as ``FeatureEncoders.transform`` returns them from raw rows:

- ``categorical``: int64 [batch, n_categorical] vocabulary ids, fields in manifest order;
- ``numeric``: float32 [batch, n_numeric] filled and normalised values.

Each input exists only where the model has such fields. Outputs: ``p_<name>`` float32 [batch] for
every probability the model returns (e.g. p_ctr, p_cvr, p_ctcvr), and ``invalid_ids`` int64 [batch],
the number of the row's categorical ids outside their field's vocabulary [0, vocab_size). Such an id
is scored as its field's OOV id; the eager model refuses them, a serving graph cannot raise, so it
counts them. The batch axis is dynamic.

Before anything is written the ONNX model is run with onnxruntime on ``check_rows`` random in-vocabulary
rows and on one row, and compared with the PyTorch model; an export further from it than
max(atol, 2 x the PyTorch model's own float32 error against float64) is refused.
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

from mtl_final.config import ConfigError
from mtl_final.data.errors import DataError
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.models.base import RankingModel
from mtl_final.predict import PREFIX, load_run_model

__all__ = ["ExportError", "ServingGraph", "export_onnx", "export_run", "main", "sample_inputs"]

INVALID_IDS = "invalid_ids"
DEFAULT_OPSET = 18


class ExportError(RuntimeError):
    """An export that cannot be made or does not match the PyTorch model."""


class ServingGraph(nn.Module):
    """The traced module: encoded inputs → (p_<name> [batch] ..., invalid_ids [batch]).

    ``forward(categorical [batch, Fc] int64, numeric [batch, Fn] float32)``; the argument of a kind of
    field the model lacks is omitted (categorical only, or numeric only)."""

    def __init__(self, model: RankingModel, features: FeatureSpec) -> None:
        super().__init__()
        self.model = model.eval()
        self.n_cat, self.n_num = len(features.categorical), len(features.numeric)
        sizes = torch.tensor([size for _, size in features.categorical], dtype=torch.long)
        self.register_buffer("vocab_sizes", sizes, persistent=False)
        self.register_buffer("oov_ids", sizes - 1, persistent=False)  # the encoders' OOV: each field's last id
        with torch.no_grad():
            probe = model(Batch(torch.zeros(1, self.n_cat, dtype=torch.long), torch.zeros(1, self.n_num)))
        self.prob_names = list(probe.probs)

    @property
    def input_names(self) -> list[str]:
        return (["categorical"] if self.n_cat else []) + (["numeric"] if self.n_num else [])

    @property
    def output_names(self) -> list[str]:
        return [PREFIX + name for name in self.prob_names] + [INVALID_IDS]

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        it = iter(inputs)
        cat = next(it) if self.n_cat else None
        num = next(it) if self.n_num else None
        rows = (cat if cat is not None else num).shape[0]
        if cat is None:
            cat = torch.zeros(rows, 0, dtype=torch.long)
        if num is None:
            num = torch.zeros(rows, 0, dtype=torch.float32)
        bad = (cat < 0) | (cat >= self.vocab_sizes)
        cat = torch.where(bad, self.oov_ids.expand_as(cat), cat)
        probs = self.model(Batch(cat, num)).probs
        return (*(probs[name] for name in self.prob_names), bad.sum(dim=1))


def _require_exporter() -> None:
    missing = [m for m in ("onnx", "onnxscript", "onnxruntime") if importlib.util.find_spec(m) is None]
    if missing:
        raise ExportError(f"ONNX export needs the package(s) {missing}: pip install -e \".[export]\"")
    if tuple(int(p) for p in torch.__version__.split(".")[:2]) < (2, 6):
        raise ExportError(f"ONNX export needs torch >= 2.6 (dynamic batch axis); this is torch {torch.__version__}")


def sample_inputs(features: FeatureSpec, rows: int, seed: int = 0) -> list[np.ndarray]:
    """Random in-vocabulary graph inputs: ids uniform in [0, vocab_size) per field, numerics N(0, 1)."""
    rng = np.random.default_rng(seed)
    out = []
    if features.categorical:
        sizes = np.array([size for _, size in features.categorical])
        out.append((rng.random((rows, len(sizes))) * sizes).astype(np.int64))
    if features.numeric:
        out.append(rng.standard_normal((rows, len(features.numeric))).astype(np.float32))
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter logs progress and optional-package notices (torchvision) and warns about its own
    internals (deprecations, axis naming); none of it concerns the user."""
    log = logging.getLogger("torch.onnx")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.filterwarnings("ignore", message=r".*axis name", category=UserWarning)
            # MMoE / PLE keep their last gate weights as plain attributes for inspection; not part of the graph
            warnings.filterwarnings("ignore", message=r".*were assigned during export", category=UserWarning)
            yield
    finally:
        log.setLevel(level)


def _onnx_session(path: Path) -> Any:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def _onnx_outputs(session: Any, names: list[str], inputs: list[np.ndarray]) -> list[np.ndarray]:
    return session.run(None, dict(zip(names, inputs)))


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

    import onnxruntime

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
        got = _onnx_outputs(session, graph.input_names, inputs)
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
    return {
        "inputs": inputs_doc,
        "outputs": [{"name": n, "dtype": "float32", "shape": ["batch"]} for n in graph.output_names[:-1]]
                   + [{"name": INVALID_IDS, "dtype": "int64", "shape": ["batch"]}],
        "check": {"runtime": f"onnxruntime {onnxruntime.__version__}", "rows": sizes, "atol": atol,
                  "max_abs_diff": diffs, "float32_error": noise, "tolerance": tolerance},
    }


def export_run(run_dir: str | Path, out_dir: str | Path | None = None, opset: int = DEFAULT_OPSET,
               check_rows: int = 4096, atol: float = 1e-5) -> dict[str, Any]:
    """Export ``run_dir``'s best.pt model to ``out_dir`` (default run_dir/export); returns the manifest.

    Nothing in out_dir changes unless the export passes its check. Raises FileNotFoundError /
    ConfigError for an unusable run directory, ExportError as export_onnx does."""
    run_dir = Path(run_dir)
    out_dir = export_dir(run_dir, out_dir)
    _require_exporter()
    model, encoders, cfg = load_run_model(run_dir)
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".export-", dir=out_dir))
    done = False
    try:
        try:
            graph_doc = export_onnx(model, encoders.feature_spec(), work / "model.onnx", opset, check_rows, atol)
        except ExportError as e:
            raise ExportError(f"{run_dir}: {e}; {out_dir} was left as it was") from e
        manifest = {
            "format": "onnx",
            "file": "model.onnx",
            "opset": opset,
            "run": str(run_dir),
            "model": cfg["model"]["name"],
            **graph_doc,
            "encoders": "encoders.json",
            "encode_with": "mtl_final.data.encoders.FeatureEncoders.load('encoders.json').transform(df)",
            "torch": torch.__version__,
            "exported_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        shutil.copyfile(run_dir / "encoders.json", work / "encoders.json")
        (work / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (out_dir / "manifest.json").unlink(missing_ok=True)  # no manifest = no complete export, until the new one lands
        for name in ("model.onnx", "encoders.json", "manifest.json"):
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
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, help="ONNX opset version")
    parser.add_argument("--check-rows", type=int, default=4096, help="random rows compared with PyTorch")
    parser.add_argument("--atol", type=float, default=1e-5,
                        help="accepted |onnxruntime - PyTorch| (raised to 2x PyTorch's own float32 error where larger)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        out = export_dir(args.run, args.out)
        manifest = export_run(args.run, out, args.opset, args.check_rows, args.atol)
    except (ConfigError, DataError, ExportError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    worst = max(manifest["check"]["max_abs_diff"].values())
    print(f"[export] {out / 'model.onnx'}: inputs {list(manifest['inputs'])}, outputs "
          f"{[o['name'] for o in manifest['outputs']]}; max |onnxruntime - torch| {worst:.2g} "
          f"on {manifest['check']['rows']} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
