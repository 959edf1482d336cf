"""CLI of the benchmark: the paper-reproduction tables (single-task) and multi-task grids.

Single-task (one dataset, cells model × seed):

    python -m mtl_final.benchmark --dataset frappe_x1 --models all --seeds 2021,2022,2023 \
        [--out results] [--runs-dir runs/benchmarks] [--configs DIR] [--report-only] [key=value ...]

Runs every (model, seed) cell not yet in ``<out>/<dataset>.csv`` (resume), appending one row per
finished cell, then writes ``<out>/<dataset>.md``.

Multi-task grid (cells config × variant × seed):

    python -m mtl_final.benchmark --grid configs/mtl/hillstrom_*.yaml --name hillstrom \
        --variants mlp,final,final_dual_kd --seeds 2021,2022,2023 [--out results] \
        [--runs-dir runs/benchmarks] [--report-only] [key=value ...]

Cell id ``<config stem without its prefix>/<variant>`` (``hillstrom_esmm.yaml`` + ``final`` →
``esmm/final``); ``*_base.yaml`` files matched by the glob are skipped (they are includes). The
variants' overrides are defined once, in ``runner.MTL_VARIANTS``. Results go to
``<out>/<name>.csv`` / ``.md``, runs to ``<runs-dir>/<name>/<model>/<variant>/seed<seed>``.
``--name NAME --report-only`` (without --grid) rewrites the grid report only.

``key=value`` overrides apply to every run, after a grid variant's own overrides (e.g.
``data.root=DIR train.max_steps=2``); with --grid they may also follow the config paths. Exit
status: 0 all cells done, 1 some cell failed (re-run to retry it), 2 bad arguments.
"""
from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Sequence

from mtl_final.benchmark import report
from mtl_final.benchmark.runner import (
    DEFAULT_CONFIGS_DIR,
    MODEL_IDS,
    MTL_VARIANTS,
    BenchmarkError,
    csv_path,
    grid_layout,
    plan_cells,
    plan_grid,
    read_rows,
    run_benchmark,
    run_grid,
)
from mtl_final.distributed import launched_world_size


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m mtl_final.benchmark",
        description="Run benchmark cells with resume and write the results CSV and markdown report: the "
                    "FINAL paper's cells (model x seed) of one dataset (--dataset), or a multi-task grid "
                    "(config x variant x seed) (--grid ... --name NAME).",
    )
    p.add_argument("--dataset", help="single-task: benchmark dataset, e.g. frappe_x1 (a folder of --configs)")
    p.add_argument("--models", default=None,
                   help=f"single-task: 'all' (default; in this order: {','.join(MODEL_IDS)}) or a "
                        "comma-separated list of ids")
    p.add_argument("--grid", nargs="+", metavar="CONFIG.yaml",
                   help="multi-task: config files, one model each (model id = stem without its prefix; "
                        "*_base.yaml skipped)")
    p.add_argument("--name", help="multi-task: name of the grid's results (<out>/<name>.csv / .md)")
    p.add_argument("--variants", default=None,
                   help=f"multi-task: 'all' (default: {','.join(MTL_VARIANTS)}) or a comma-separated list; "
                        + "; ".join(f"{v} = {' '.join(o)}" for v, o in MTL_VARIANTS.items())
                        + " (MMoE/PLE also expert=<tower kind>)")
    p.add_argument("--seeds", default="2021", help="comma-separated seeds, e.g. 2021,2022,2023")
    p.add_argument("--out", default="results", help="folder of <dataset|name>.csv / .md / .commands (default: results)")
    p.add_argument("--runs-dir", default="runs/benchmarks",
                   help="run directories go to <runs-dir>/<dataset>/<model>/seed<seed> "
                        "(grid: <runs-dir>/<name>/<model>/<variant>/seed<seed>)")
    p.add_argument("--configs", default=None,
                   help="single-task: folder of <dataset>/<model id lower>.yaml (default: the repository's "
                        "configs/benchmarks)")
    p.add_argument("--report-only", action="store_true", help="run nothing; only rewrite <out>/<dataset|name>.md")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides applied to every run")
    return p


def command_line(argv: Sequence[str], entry: str | Sequence[str] | None = None) -> str:
    """The command as the command log records it: `python -m mtl_final.benchmark ARGS`, or
    `python ENTRY ARGS` for a script that runs the benchmark through `main(argv, entry=...)`
    (entry: the script, or the script and the arguments it consumed itself)."""
    head = ["-m", "mtl_final.benchmark"] if not entry else [entry] if isinstance(entry, str) else list(entry)
    return shlex.join([sys.executable, *head, *argv])


def _mode_error(args: argparse.Namespace) -> str | None:
    grid = args.grid is not None or args.name is not None
    if args.dataset and grid:
        return "give either --dataset (single-task) or --grid/--name (multi-task), not both"
    if not args.dataset and not grid:
        return "give --dataset DATASET (single-task) or --grid CONFIG.yaml ... --name NAME (multi-task)"
    if grid:
        if not args.name:
            return "--grid needs --name NAME (the results go to <out>/<name>.csv)"
        if args.grid is None and not args.report_only:
            return "--name without --grid only works with --report-only"
        if args.models is not None or args.configs is not None:
            return "--models / --configs are single-task options; a grid's models are its --grid config files"
    elif args.variants is not None:
        return "--variants is a multi-task option (use it with --grid)"
    return None


def main(argv: Sequence[str] | None = None, entry: str | Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_intermixed_args(argv)
    command = command_line(argv, entry)

    def log(msg: str) -> None:
        print(msg, flush=True)

    problem = _mode_error(args)
    if launched_world_size() > 1:
        problem = ("mtl_final.benchmark runs its cells one after another in one process; start it with "
                   "python, not torchrun (data-parallel runs: torchrun ... -m mtl_final.train)")
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return 2
    overrides = list(args.overrides)
    if args.grid is not None:  # key=value given after the config paths land in --grid
        overrides += [g for g in args.grid if "=" in g and not Path(g).is_file()]
        args.grid = [g for g in args.grid if not ("=" in g and not Path(g).is_file())]
    bad = [o for o in overrides if "=" not in o]
    if bad:
        print(f"error: overrides must be key=value, got {bad}", file=sys.stderr)
        return 2
    grid = args.name is not None
    title = args.name if grid else args.dataset
    failed: list[tuple[str, int, str]] = []
    if not args.report_only:
        try:
            if grid:
                cells = plan_grid(args.grid, args.variants or "all", args.seeds, overrides)  # fail before logging
                read_rows(csv_path(args.out, title), layout=grid_layout(cells))
                report.log_command(args.out, title, command)
                summary = run_grid(title, args.grid, args.variants or "all", args.seeds, out_dir=args.out,
                                   runs_dir=args.runs_dir, overrides=overrides, log=log)
            else:
                configs = args.configs or str(DEFAULT_CONFIGS_DIR)
                models = args.models or "all"
                plan_cells(title, models, args.seeds, configs, overrides)  # bad ids/seeds/keys: fail before logging
                read_rows(csv_path(args.out, title))  # a CSV of other columns: fail before logging
                report.log_command(args.out, title, command)
                summary = run_benchmark(title, models, args.seeds, out_dir=args.out,
                                        runs_dir=args.runs_dir, overrides=overrides,
                                        configs_dir=configs, log=log)
        except BenchmarkError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        failed = summary.failed
        log(f"benchmark {title}: {len(summary.ran)} ran, {len(summary.skipped)} skipped (already in CSV), "
            f"{len(failed)} failed")
    try:
        if grid:
            path = report.write_grid_report(title, args.out, command=command, log=log, runs_dir=args.runs_dir)
        else:
            path = report.write_report(title, args.out, command=command, log=log, runs_dir=args.runs_dir)
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
