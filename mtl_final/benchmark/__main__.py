"""CLI of the paper-reproduction benchmark.

    python -m mtl_final.benchmark --dataset frappe_x1 --models all --seeds 2021,2022,2023 \
        [--out results] [--runs-dir runs/benchmarks] [--configs DIR] [--report-only] [key=value ...]

Runs every (model, seed) cell not yet in ``<out>/<dataset>.csv`` (resume), appending one row per
finished cell, then writes ``<out>/<dataset>.md``. ``key=value`` overrides apply to every run
(e.g. ``data.root=DIR train.max_steps=2``). Exit status: 0 all cells done, 1 some cell failed
(re-run to retry it), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from typing import Sequence

from mtl_final.benchmark import report
from mtl_final.benchmark.runner import DEFAULT_CONFIGS_DIR, MODEL_IDS, BenchmarkError, plan_cells, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtl_final.benchmark",
        description="Run the FINAL paper's benchmark cells (model x seed) of one dataset with resume, "
                    "and write the results CSV and markdown report.",
    )
    p.add_argument("--dataset", required=True, help="benchmark dataset, e.g. frappe_x1 (a folder of --configs)")
    p.add_argument("--models", default="all",
                   help=f"'all' (in this order: {','.join(MODEL_IDS)}) or a comma-separated list of ids")
    p.add_argument("--seeds", default="2021", help="comma-separated seeds, e.g. 2021,2022,2023")
    p.add_argument("--out", default="results", help="folder of <dataset>.csv / .md / .commands (default: results)")
    p.add_argument("--runs-dir", default="runs/benchmarks",
                   help="run directories go to <runs-dir>/<dataset>/<model>/seed<seed>")
    p.add_argument("--configs", default=str(DEFAULT_CONFIGS_DIR),
                   help="folder of <dataset>/<model id lower>.yaml (default: the repository's configs/benchmarks)")
    p.add_argument("--report-only", action="store_true", help="run nothing; only rewrite <out>/<dataset>.md")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every run")
    return p


def command_line(argv: Sequence[str]) -> str:
    return shlex.join([sys.executable, "-m", "mtl_final.benchmark", *argv])


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    command = command_line(argv)

    def log(msg: str) -> None:
        print(msg, flush=True)

    bad = [o for o in args.overrides if "=" not in o]
    if bad:
        print(f"error: overrides must be key=value, got {bad}", file=sys.stderr)
        return 2
    failed: list[tuple[str, int, str]] = []
    if not args.report_only:
        try:
            plan_cells(args.dataset, args.models, args.seeds, args.configs)  # bad ids/seeds: fail before logging
            report.log_command(args.out, args.dataset, command)
            summary = run_benchmark(args.dataset, args.models, args.seeds, out_dir=args.out,
                                    runs_dir=args.runs_dir, overrides=args.overrides,
                                    configs_dir=args.configs, log=log)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        failed = summary.failed
        log(f"benchmark {args.dataset}: {len(summary.ran)} ran, {len(summary.skipped)} skipped (already in CSV), "
            f"{len(failed)} failed")
    try:
        path = report.write_report(args.dataset, args.out, command=command, log=log)
    except BenchmarkError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    log(f"report: {path}")
    if failed:
        log("failed cells (not written; re-run the same command to retry them):")
        for model, seed, err in failed:
            log(f"  {model} seed {seed}: {err}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
