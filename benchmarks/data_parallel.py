"""Accuracy of data-parallel runs: each (config, seed) trained by torchrun with --processes ranks.

    python benchmarks/data_parallel.py --configs configs/benchmarks/frappe_x1/final_2b_kd.yaml \\
        --seeds 2021,2022,2023 --processes 2 --threads 1 --runs-dir /tmp/ddp_runs --out results/frappe_x1_ddp

Every cell is `torchrun --standalone --nproc-per-node P -m mtl_final.train --config C --out RUNS/<stem>-<seed>
seed=S train.num_threads=T train.progress=false [overrides]`; a cell whose run directory already holds
metrics.json is read, not trained again. Writes OUT/data_parallel.csv (one row per run) and
OUT/data_parallel.md (mean ± sample std per config, the command and the git revision).
"""
from __future__ import annotations

import argparse
import csv
import json
import shlex
import statistics
import subprocess
import sys
from pathlib import Path

from mtl_final.benchmark.report import git_revision

COLUMNS = ("config", "seed", "processes", "valid_auc", "test_auc", "test_logloss", "best_epoch", "epochs_run",
           "train_seconds")


def run_cell(config: str, seed: int, processes: int, threads: int, run_dir: Path, overrides: list[str]) -> dict:
    """Train one cell under torchrun (unless run_dir/metrics.json exists); its CSV row."""
    metrics_path = run_dir / "metrics.json"
    if not metrics_path.is_file():
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}",
                   "-m", "mtl_final.train", "--config", config, "--out", str(run_dir), f"seed={seed}",
                   f"train.num_threads={threads}", "train.progress=false", *overrides]
        print("+", shlex.join(command), flush=True)
        done = subprocess.run(command)
        if done.returncode:
            raise SystemExit(f"data_parallel: {Path(config).stem} seed {seed} failed (exit {done.returncode})")
    return row(config, seed, json.loads(metrics_path.read_text()))


def row(config: str, seed: int, metrics: dict) -> dict:
    """The CSV row of one finished run's metrics.json (task ctr)."""
    return {"config": Path(config).stem, "seed": seed, "processes": metrics["world_size"],
            "valid_auc": metrics["valid"]["ctr"]["auc"], "test_auc": metrics["test"]["ctr"]["auc"],
            "test_logloss": metrics["test"]["ctr"]["logloss"], "best_epoch": metrics["best_epoch"],
            "epochs_run": metrics["epochs_run"], "train_seconds": metrics["train_seconds"]}


def summary_markdown(rows: list[dict], command: str, revision: str) -> str:
    """Mean ± sample std (×100) of valid and test AUC per config, in first-seen order."""
    lines = ["# Data-parallel runs", "", f"Command: `{command}`", f"Code: `{revision}`", "",
             "| config | processes | seeds | valid AUC ×100 | test AUC ×100 | test logloss | epochs (best) |",
             "|---|---|---|---|---|---|---|"]
    for config in dict.fromkeys(r["config"] for r in rows):
        group = [r for r in rows if r["config"] == config]

        def stat(key: str, scale: float = 100.0, digits: int = 3) -> str:
            values = [scale * r[key] for r in group]
            spread = f" ± {statistics.stdev(values):.{digits}f}" if len(values) > 1 else ""
            return f"{statistics.fmean(values):.{digits}f}{spread}"

        processes = ", ".join(str(p) for p in sorted({r["processes"] for r in group}))
        seeds = ", ".join(str(r["seed"]) for r in group)
        epochs = ", ".join(f"{r['epochs_run']} ({r['best_epoch']})" for r in group)
        lines.append(f"| {config} | {processes} | {seeds} | {stat('valid_auc')} | {stat('test_auc')} | "
                     f"{stat('test_logloss', 1.0, 5)} | {epochs} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--configs", required=True, help="comma-separated run configs")
    parser.add_argument("--seeds", default="2021,2022,2023")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--runs-dir", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    rows = [run_cell(config, int(seed), args.processes, args.threads,
                     Path(args.runs_dir) / f"{Path(config).stem}-{seed}", args.overrides)
            for config in args.configs.split(",") for seed in args.seeds.split(",")]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "data_parallel.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    command = shlex.join(["python", "benchmarks/data_parallel.py", *sys.argv[1:]])
    (out / "data_parallel.md").write_text(summary_markdown(rows, command, git_revision()))
    print((out / "data_parallel.md").read_text())


if __name__ == "__main__":
    main()
