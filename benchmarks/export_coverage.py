"""Export every registered model family to ONNX and compare onnxruntime with PyTorch.

    python benchmarks/export_coverage.py [--out results/export_coverage.json]

Each case is a model with small widths, its default init (seed 0) but embeddings drawn from N(0, 1)
("p_ctr_std" is the spread of its p_ctr over the check rows) on 3 categorical + 2 numeric fields,
exported with mtl_final.export.export_onnx (4,096 random rows and one row checked). The multi-task families
are also exported with dual FINAL towers, MMoE/PLE with FINAL experts, and FINAL as 1B, 2B+KD behind the
field gate, and with the other forms of eq. (1) (sum aggregation, tanh, N = 3). DIN, and DeepFM, MLP and MMoE
again, take SEQUENCE_FEATURES (the same fields plus an attention-pooled history of a, and mean / max pooled
fields of their own). Prints one line per case and
writes a JSON list of {model, overrides, ok, p_ctr_std, max_abs_diff, float32_error (PyTorch float32 against
float64, which sets the tolerance), seconds, error}; exits 1 when any case fails.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mtl_final.config import load_config
from mtl_final.data.features import FeatureSpec, SequenceSpec
from mtl_final.data.schema import TaskSpec
from mtl_final.export import ServingGraph, export_onnx, sample_inputs
from mtl_final.models import MODELS, build_model
from mtl_final.nn.embedding import FeatureEmbedding

FEATURES = FeatureSpec(categorical=(("a", 6), ("b", 9), ("c", 4)), numeric=("x", "y"))
SEQUENCE_FEATURES = FeatureSpec(FEATURES.categorical, FEATURES.numeric, sequences=(
    SequenceSpec("hist", 8, 6, "a", "attention", "a"), SequenceSpec("tags", 4, 7, None, "mean", None),
    SequenceSpec("tags_max", 3, 7, None, "max", None)))
SEQUENCE_MODELS = ("din",)  # need an attention sequence field: not in cases(), whose fields have none
SEQUENCE_CASES = ("deepfm", "din", "mlp", "mmoe")
SMALL = ("model.embedding_dim=4", "block.hidden_units=[8,8]", "tower.hidden_units=[8,4]", "expert.hidden_units=[8]")
EMBEDDING_STD = 1.0
MULTI_TASK = tuple(sorted(name for name, cls in MODELS.items() if cls.MULTI_TASK))  # trained on ctr + cvr
FINAL_VARIANTS = (
    ("block.kind=final",),
    ("block.kind=final", "model.num_blocks=2", "model.kd=true", "model.field_gate=true",
     "model.block2.hidden_units=[8]"),
    ("block.kind=final", "block.aggregation=sum", "block.sigma=tanh", "block.num_steps=3"),
)


def cases() -> list[tuple[str, tuple[str, ...]]]:
    """(model name, config overrides) for every registered family and its block variants."""
    out = []
    for name in sorted(set(MODELS) - set(SEQUENCE_MODELS)):
        base = ("model.shared_units=[8]",) if name == "shared_bottom" else ()
        variants: tuple[tuple[str, ...], ...] = ((),)
        if name == "final":
            variants = FINAL_VARIANTS
        elif name in MULTI_TASK:
            variants = ((), ("tower=final", "tower.dual=true")) + ((("expert=final",),) if name in ("mmoe", "ple") else ())
        out += [(name, base + v) for v in variants]
    return out


def run_case(name: str, overrides: tuple[str, ...], features: FeatureSpec = FEATURES) -> dict:
    tasks = [TaskSpec("ctr", "click")] + ([TaskSpec("cvr", "conversion", "ctr")] if name in MULTI_TASK else [])
    torch.manual_seed(0)
    model = build_model(load_config(None, [f"model={name}", *SMALL, *overrides]), features, tasks).eval()
    with torch.no_grad():  # the init's N(0, 1e-4) embeddings put every probability at ~0.5: compare real values
        for m in model.modules():
            if isinstance(m, FeatureEmbedding):
                m.table.weight.normal_(0.0, EMBEDDING_STD)
                m.numeric.normal_(0.0, EMBEDDING_STD)
        inputs = [torch.from_numpy(a) for a in sample_inputs(features, 4096, seed=4096)]
        p_ctr = ServingGraph(model, features)(*inputs)[0]
    row = {"model": name, "overrides": list(overrides), "sequences": [q.name for q in features.sequences],
           "ok": False, "p_ctr_std": round(float(p_ctr.std()), 4),
           "max_abs_diff": None, "float32_error": None, "seconds": None, "error": None}
    t0 = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            doc = export_onnx(model, features, Path(tmp) / "model.onnx")
        row.update(ok=True, max_abs_diff=max(doc["check"]["max_abs_diff"].values()),
                   float32_error=max(doc["check"]["float32_error"].values()))
    except Exception as e:  # a coverage report: record the failure and go on with the next family
        row["error"] = f"{type(e).__name__}: {e}"
    row["seconds"] = round(time.perf_counter() - t0, 2)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=None, help="JSON file for the results (default: print only)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    rows = []
    every = [(name, overrides, FEATURES) for name, overrides in cases()] + [
        (name, (), SEQUENCE_FEATURES) for name in SEQUENCE_CASES]
    for name, overrides, features in every:
        row = run_case(name, overrides, features)
        rows.append(row)
        detail = (f"p_ctr std {row['p_ctr_std']:.3f}, max |ort - torch| {row['max_abs_diff']:.2g}, "
                  f"|torch fp32 - fp64| {row['float32_error']:.2g}" if row["ok"] else row["error"])
        label = " ".join(overrides) + (" [sequences]" if features.sequences else "")
        print(f"{'ok  ' if row['ok'] else 'FAIL'} {name:14s} {label:70s} {detail} ({row['seconds']} s)",
              flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps({"torch": torch.__version__, "cases": rows}, indent=2) + "\n")
    failed = sum(not r["ok"] for r in rows)
    print(f"{len(rows) - failed} of {len(rows)} cases exported")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
