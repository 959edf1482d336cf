"""Run the public reference, FuxiCTR v2.0.2's FINAL, on our Frappe_x1 files for comparison.

This harness holds no FuxiCTR code. It needs its own environment, kept apart from
mtl_final's, because FuxiCTR's model zoo is not in its wheel:

    python3 -m venv /tmp/fuxienv
    /tmp/fuxienv/bin/pip install torch==2.13.0
    /tmp/fuxienv/bin/pip install fuxictr==2.0.2 --no-deps
    # FuxiCTR calls log_loss(eps=), which scikit-learn 1.5 removed; pyarrow: our config loader
    /tmp/fuxienv/bin/pip install h5py pandas "scikit-learn<1.5" tqdm pyyaml pyarrow
    # model_zoo/FINAL/src from a FuxiCTR v2.0.2 checkout (the code BARS ran):
    /tmp/fuxienv/bin/python benchmarks/fuxictr_reference.py --model-src FuxiCTR/model_zoo/FINAL/src \\
        --model FINAL_1B --seeds 2021,2022,2023 --out results/frappe_x1_fuxictr/final_1b.csv

FuxiCTR gets the parameters of one of our configs (`fuxictr_params`): --config, by default
configs/benchmarks/frappe_x1/final_{1b,2b_kd}.yaml (the BARS configs of the FINAL paper), with
key=value overrides; settings FuxiCTR's FINAL cannot express are refused. Each seed runs in its own
process, `--jobs` at a time, with `--threads` torch threads each. Rows of seeds
already in the CSV are kept and not rerun; each invocation is appended to <out>.commands.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import importlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "datasets" / "frappe_x1"
FIELDS = ["user", "item", "daytime", "weekday", "isweekend", "homework", "cost", "weather", "country", "city"]

if str(REPO_ROOT) not in sys.path:  # mtl_final is not installed in FuxiCTR's venv
    sys.path.insert(0, str(REPO_ROOT))

CONFIGS = {"FINAL_1B": "configs/benchmarks/frappe_x1/final_1b.yaml",
           "FINAL_2B_KD": "configs/benchmarks/frappe_x1/final_2b_kd.yaml"}


# our settings FuxiCTR's FINAL run has no parameter for: it takes only these values
FIXED = {"model.name": "final", "block.kind": "final", "block.num_steps": 2, "block.aggregation": "concat",
         "block.sigma": "identity", "train.optimizer": "adam", "train.monitor": "ctr.auc",
         "train.lr_decay_factor": 0.1, "train.min_lr": 1e-6, "train.eval_every_steps": 0,
         "train.weight_decay": 0.0, "train.precision": "fp32", "train.matmul_precision": "highest"}


def fuxictr_params(cfg: dict) -> dict:
    """FuxiCTR v2.0.2 FINAL parameters equal to a resolved mtl_final FINAL config.

    Raises ValueError for settings FuxiCTR's FINAL cannot express (its 2B always distils,
    its layers are N = 2 "concat" with identity σ).
    """
    from mtl_final.config import get

    for key, wanted in FIXED.items():
        if get(cfg, key) != wanted:
            raise ValueError(f"{key}={get(cfg, key)!r}: FuxiCTR's FINAL run needs {wanted!r}")
    model, block, train = cfg["model"], cfg["block"], cfg["train"]
    if model["num_blocks"] == 2 and not model["kd"]:
        raise ValueError("model.kd=false with 2 blocks: FuxiCTR's 2B FINAL always distils")
    two = model["num_blocks"] == 2
    activation = {"relu": "ReLU"}.get(block["activation"], block["activation"])
    return {
        "loss": "binary_crossentropy", "metrics": ["AUC", "logloss"], "task": "binary_classification",
        "optimizer": "adam", "learning_rate": train["lr"], "batch_size": train["batch_size"],
        "epochs": train["epochs"], "early_stop_patience": train["patience"],
        "max_gradient_norm": train["grad_clip_norm"], "monitor": "AUC", "monitor_mode": "max",
        "embedding_dim": model["embedding_dim"], "embedding_regularizer": model["embedding_regularizer"],
        "net_regularizer": model["net_regularizer"], "shuffle": True, "save_best_only": True,
        "eval_steps": None, "verbose": 0, "residual_type": "concat",
        "block_type": "2B" if two else "1B", "use_field_gate": model["field_gate"],
        "batch_norm": block["batch_norm"], "block1_hidden_units": list(block["hidden_units"]),
        "block1_hidden_activations": activation, "block1_dropout": block["dropout"],
        # FuxiCTR's own defaults for the unused block 2 of a 1B run, as in the BARS 1B log
        "block2_hidden_units": list(model["block2"]["hidden_units"]) if two else [64, 64, 64],
        "block2_hidden_activations": activation if two else None,
        "block2_dropout": model["block2"]["dropout"] if two else 0,
    }


def model_params(config: Path, overrides: list[str]) -> dict:
    """Load one of our configs and translate it."""
    from mtl_final.config import load_config
    return fuxictr_params(load_config(config, overrides))


COLUMNS = ["model", "seed", "valid_auc", "valid_logloss", "test_auc", "test_logloss",
           "best_epoch", "epochs_run", "train_seconds", "reference"]


def dataset_id(data_root: Path) -> str:
    """FuxiCTR's dataset id, which names its h5 folder: keyed by the csv files' path, size and
    mtime, because FuxiCTR reuses an existing folder without looking at its sources."""
    files = [data_root / f"{split}.csv" for split in ("train", "valid", "test")]
    key = "|".join(f"{f.resolve()}:{f.stat().st_size}:{f.stat().st_mtime_ns}" for f in files)
    return "frappe_x1_" + hashlib.sha256(key.encode()).hexdigest()[:12]


def dataset_params(data_root: Path, work_dir: Path) -> dict:
    """FuxiCTR's dataset config for Frappe_x1 as BARS wrote it (all fields categorical)."""
    return {
        "dataset_id": dataset_id(data_root), "data_root": str(work_dir), "data_format": "csv",
        "train_data": str(data_root / "train.csv"), "valid_data": str(data_root / "valid.csv"),
        "test_data": str(data_root / "test.csv"), "min_categr_count": 1,
        "feature_cols": [{"active": True, "dtype": "float", "name": FIELDS, "type": "categorical"}],
        "label_col": {"dtype": "float", "name": "label"},
    }


def build_data(params: dict) -> None:
    """Encode the csv files to FuxiCTR's h5 once (skipped when feature_map.json exists)."""
    from fuxictr.preprocess import FeatureProcessor, build_dataset
    build_dataset(FeatureProcessor(**params), **params)


def run_one(model: str, config: Path, overrides: list[str], seed: int, model_src: Path, data_root: Path,
            work_dir: Path, threads: int) -> dict:
    """One seed, in this process. Returns the CSV row."""
    import logging
    import numpy as np
    import torch
    from fuxictr.features import FeatureMap
    from fuxictr.pytorch.dataloaders import H5DataLoader
    from fuxictr.pytorch.torch_utils import seed_everything

    if not hasattr(np, "Inf"):  # FuxiCTR 2.0.2 predates numpy 2, which dropped the alias
        np.Inf = np.inf
    torch.set_num_threads(threads)
    logging.basicConfig(level=logging.WARNING)
    sys.path.insert(0, str(model_src.parent))
    final_cls = getattr(importlib.import_module(model_src.name), "FINAL")

    params = {**dataset_params(data_root, work_dir), **model_params(config, overrides), "seed": seed,
              "model": "FINAL", "model_id": f"{model}_{seed}", "gpu": -1, "num_workers": 0,
              "model_root": str(work_dir / "checkpoints")}
    data_dir = work_dir / params["dataset_id"]
    seed_everything(seed=seed)
    params["train_data"], params["valid_data"], params["test_data"] = (
        str(data_dir / f"{split}.h5") for split in ("train", "valid", "test"))
    feature_map = FeatureMap(params["dataset_id"], str(data_dir))
    feature_map.load(str(data_dir / "feature_map.json"), params)
    net = final_cls(feature_map, **params)
    os.makedirs(net.model_dir, exist_ok=True)
    saved_at: list[int] = []
    save_weights = net.save_weights
    net.save_weights = lambda path: (saved_at.append(net._epoch_index + 1), save_weights(path))
    train_gen, valid_gen = H5DataLoader(feature_map, stage="train", **params).make_iterator()
    start = time.perf_counter()
    net.fit(train_gen, validation_data=valid_gen, **params)
    seconds = time.perf_counter() - start
    valid = net.evaluate(valid_gen)
    test = net.evaluate(H5DataLoader(feature_map, stage="test", **params).make_iterator())
    import fuxictr
    return {"model": model, "seed": seed, "valid_auc": valid["AUC"], "valid_logloss": valid["logloss"],
            "test_auc": test["AUC"], "test_logloss": test["logloss"], "best_epoch": saved_at[-1],
            "epochs_run": net._epoch_index + 1, "train_seconds": round(seconds, 1),
            "reference": f"fuxictr {fuxictr.__version__} torch {torch.__version__}"}


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = sorted(rows, key=lambda row: (row["model"], int(row["seed"])))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-src", type=Path, required=True,
                        help="FuxiCTR v2.0.2 model_zoo/FINAL/src (a package exposing FINAL)")
    parser.add_argument("--model", choices=sorted(CONFIGS), required=True, help="the CSV's model column")
    parser.add_argument("--config", type=Path, help="our FINAL config to translate (default: the model's "
                        "benchmark config)")
    parser.add_argument("--seeds", required=True, help="comma-separated, e.g. 2021,2022,2023")
    parser.add_argument("--out", type=Path, required=True, help="CSV; existing seeds are kept")
    parser.add_argument("--data-root", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/fuxictr_reference"))
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--one-seed", type=int, help=argparse.SUPPRESS)
    parser.add_argument("overrides", nargs="*", help="key=value overrides of --config")
    args = parser.parse_args(argv)
    config = (args.config or REPO_ROOT / CONFIGS[args.model]).resolve()
    if not (args.model_src / "__init__.py").exists():
        parser.error(f"--model-src {args.model_src}: no __init__.py there; point it at "
                     "model_zoo/FINAL/src of a FuxiCTR v2.0.2 checkout")
    for split in ("train", "valid", "test"):
        if not (args.data_root / f"{split}.csv").exists():
            parser.error(f"--data-root {args.data_root}: {split}.csv is missing")
    try:
        model_params(config, args.overrides)
    except ValueError as err:
        parser.error(f"{config}: {err}")

    if args.one_seed is not None:
        row = run_one(args.model, config, args.overrides, args.one_seed, args.model_src.resolve(),
                      args.data_root.resolve(), args.work_dir.resolve(), args.threads)
        print("ROW " + json.dumps(row), flush=True)
        return 0

    from mtl_final.benchmark.report import log_command
    log_command(args.out.parent, args.out.stem,
                shlex.join([sys.executable, "benchmarks/fuxictr_reference.py", *(sys.argv[1:] if argv is None else argv)]))
    build_data(dataset_params(args.data_root.resolve(), args.work_dir.resolve()))
    rows = read_rows(args.out)
    done = {int(row["seed"]) for row in rows if row["model"] == args.model}
    todo = [int(s) for s in args.seeds.split(",") if int(s) not in done]
    base = [sys.executable, str(Path(__file__).resolve()), "--model-src", str(args.model_src),
            "--model", args.model, "--config", str(config), "--out", str(args.out),
            "--data-root", str(args.data_root), "--work-dir", str(args.work_dir),
            "--threads", str(args.threads), "--seeds", args.seeds]
    running: list[tuple[int, subprocess.Popen]] = []
    failed = []
    while todo or running:
        while todo and len(running) < args.jobs:
            seed = todo.pop(0)
            running.append((seed, subprocess.Popen(base + ["--one-seed", str(seed), *args.overrides],
                                                   stdout=subprocess.PIPE, text=True)))
        seed, proc = running.pop(0)
        out, _ = proc.communicate()
        lines = [line for line in out.splitlines() if line.startswith("ROW ")]
        if proc.returncode != 0 or not lines:
            failed.append(seed)
            continue
        rows.append(json.loads(lines[-1][4:]))
        write_rows(args.out, rows)
        print(f"{args.model} seed {seed}: test AUC {rows[-1]['test_auc']:.6f}", flush=True)
    if failed:
        print(f"seeds {failed} failed; see their output above", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
