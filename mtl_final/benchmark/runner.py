"""Benchmark cells (model × seed) of one dataset: config resolution, resume and the results CSV.

Every finished cell is appended at once to ``<out>/<dataset>.csv`` (one row, flushed); a cell
already in the CSV is skipped, so an interrupted benchmark resumes where it stopped. A cell that
raises is reported, not written, and retried by the next invocation.
"""
from __future__ import annotations

import csv
import io
import math
import os
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

from mtl_final.config import load_config
from mtl_final.train.run import run_experiment

# Paper order: Table 1 (baselines, then the FINAL variants), then Table 2's MLP and drop-ins.
MODEL_IDS: tuple[str, ...] = (
    "LR", "FM", "AFM", "CrossNet", "CrossNetV2", "CIN", "DCN", "DCNV2", "DeepFM", "AutoInt",
    "xDeepFM", "SAM", "MLP", "FINAL_1B", "FINAL_dual", "FINAL_2B_KD", "MLP_FINAL", "DeepFM_FINAL",
    "xDeepFM_FINAL", "DCN_FINAL",
)
CSV_COLUMNS: tuple[str, ...] = (
    "model", "seed", "valid_auc", "valid_logloss", "test_auc", "test_logloss", "best_epoch", "seconds",
)
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIGS_DIR = REPO_ROOT / "configs" / "benchmarks"


class BenchmarkError(ValueError):
    """Bad benchmark arguments (unknown dataset or model id, missing config, bad CSV)."""


def is_final_family(model: str) -> bool:
    """FINAL_1B / FINAL_dual / FINAL_2B_KD and the Table 2 drop-ins (``*_FINAL``)."""
    return "FINAL" in model.upper()


@dataclass(frozen=True)
class Cell:
    model: str
    seed: int
    config: Path


@dataclass
class RunSummary:
    ran: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


# ------------------------------------------------------------------------------------- resolution


def available_datasets(configs_dir: str | Path) -> list[str]:
    root = Path(configs_dir)
    return sorted(p.name for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def resolve_models(spec: str | Sequence[str], dataset: str,
                   configs_dir: str | Path = DEFAULT_CONFIGS_DIR) -> list[tuple[str, Path]]:
    """``"all"`` or ``"M1,M2"`` (ids matched case-insensitively) → [(canonical id, config path)]."""
    folder = Path(configs_dir) / dataset
    if not folder.is_dir():
        raise BenchmarkError(
            f"no benchmark configs for dataset {dataset!r} in {folder.parent}; "
            f"available: {available_datasets(configs_dir)}"
        )
    if isinstance(spec, str):
        names = [s.strip() for s in spec.split(",") if s.strip()]
    else:
        names = [str(s).strip() for s in spec if str(s).strip()]
    if not names:
        raise BenchmarkError(f"no model ids given; valid ids: {', '.join(MODEL_IDS)} (or 'all')")
    if len(names) == 1 and names[0].lower() == "all":
        ids = list(MODEL_IDS)
    else:
        by_lower = {m.lower(): m for m in MODEL_IDS}
        unknown = [n for n in names if n.lower() not in by_lower]
        if unknown:
            raise BenchmarkError(
                f"unknown model id(s) {unknown}; valid ids: {', '.join(MODEL_IDS)} (or 'all')"
            )
        ids = list(dict.fromkeys(by_lower[n.lower()] for n in names))
    out = [(m, folder / f"{m.lower()}.yaml") for m in ids]
    missing = [str(p) for _, p in out if not p.is_file()]
    if missing:
        raise BenchmarkError(f"missing benchmark config file(s): {missing}")
    return out


def parse_seeds(text: str | Iterable[int]) -> list[int]:
    if isinstance(text, str):
        parts = [s.strip() for s in text.split(",") if s.strip()]
        try:
            seeds = [int(s) for s in parts]
        except ValueError as exc:
            raise BenchmarkError(f"seeds must be comma-separated integers, got {text!r}") from exc
    else:
        seeds = [int(s) for s in text]
    if not seeds:
        raise BenchmarkError("no seeds given")
    return list(dict.fromkeys(seeds))


# ---------------------------------------------------------------------------------------- CSV


def csv_path(out_dir: str | Path, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset}.csv"


def read_rows(path: str | Path, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The parsed rows of a results CSV ([] when absent). Malformed rows are skipped (and logged),
    so their cells count as not done and run again."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            return []
        if tuple(header) != CSV_COLUMNS:
            raise BenchmarkError(
                f"{path} has columns {header}, expected {list(CSV_COLUMNS)}; move it away or fix it"
            )
        rows = []
        for line_no, values in enumerate(reader, start=2):
            if not values:
                continue
            try:
                if len(values) != len(CSV_COLUMNS):
                    raise ValueError(f"{len(values)} fields")
                row = dict(zip(CSV_COLUMNS, values))
                parsed = {
                    "model": row["model"],
                    "seed": int(row["seed"]),
                    **{k: float(row[k]) for k in ("valid_auc", "valid_logloss", "test_auc", "test_logloss",
                                                  "seconds")},
                    "best_epoch": int(row["best_epoch"]),
                }
            except ValueError as exc:
                if log:
                    log(f"warning: {path}:{line_no}: malformed row skipped ({exc}): {values}")
                continue
            rows.append(parsed)
    return rows


def _format(value: Any) -> str:
    if isinstance(value, float):
        return repr(value)
    return str(value)


def append_row(path: str | Path, row: Mapping[str, Any]) -> None:
    """Append one results row (writing the header into a new or empty file), flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    new = not path.is_file() or path.stat().st_size == 0
    prefix = ""
    if new:
        writer.writerow(CSV_COLUMNS)
    else:
        with path.open("rb") as fh:  # a row cut short by a crash must not swallow this one
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    writer.writerow([_format(row[c]) for c in CSV_COLUMNS])
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(prefix + buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def metrics_row(model: str, seed: int, metrics: Mapping[str, Any], task: str = "ctr") -> dict[str, Any]:
    """The CSV row of one finished run (``run_experiment``'s metrics dict)."""
    test, valid = metrics["test"], metrics["valid"]
    if task not in test:
        if len(test) != 1:
            raise KeyError(f"no task {task!r} in the metrics (tasks: {sorted(test)})")
        task = next(iter(test))
    row = {
        "model": model,
        "seed": int(seed),
        "valid_auc": float(valid[task]["auc"]),
        "valid_logloss": float(valid[task]["logloss"]),
        "test_auc": float(test[task]["auc"]),
        "test_logloss": float(test[task]["logloss"]),
        "best_epoch": int(metrics["best_epoch"]),
        "seconds": round(float(metrics["train_seconds"]), 3),
    }
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metric(s) {bad} in run {model} seed {seed}")
    return row


# -------------------------------------------------------------------------------------- cells


def plan_cells(dataset: str, models: str | Sequence[str], seeds: str | Iterable[int],
               configs_dir: str | Path = DEFAULT_CONFIGS_DIR) -> list[Cell]:
    """Every (model, seed) cell in run order: models in the given order, seeds within each model."""
    resolved = resolve_models(models, dataset, configs_dir)
    return [Cell(m, s, p) for m, p in resolved for s in parse_seeds(seeds)]


def run_dir_of(runs_dir: str | Path, dataset: str, model: str, seed: int) -> Path:
    return Path(runs_dir) / dataset / model / f"seed{seed}"


def run_benchmark(dataset: str, models: str | Sequence[str], seeds: str | Iterable[int],
                  out_dir: str | Path = "results", runs_dir: str | Path = "runs/benchmarks",
                  overrides: Sequence[str] = (), configs_dir: str | Path = DEFAULT_CONFIGS_DIR,
                  log: Callable[[str], None] = print) -> RunSummary:
    """Run every cell of ``dataset`` not yet in ``<out_dir>/<dataset>.csv``, appending a row per
    finished cell. Failures are logged and collected in the summary; the remaining cells still run."""
    cells = plan_cells(dataset, models, seeds, configs_dir)
    path = csv_path(out_dir, dataset)
    done = {(r["model"], r["seed"]) for r in read_rows(path, log)}
    summary = RunSummary()
    todo = [c for c in cells if (c.model, c.seed) not in done]
    log(f"benchmark {dataset}: {len(cells)} cells, {len(cells) - len(todo)} already in {path}, "
        f"{len(todo)} to run")
    for cell in cells:
        key = (cell.model, cell.seed)
        if key in done:
            summary.skipped.append(key)
            continue
        index = len(summary.ran) + len(summary.failed) + 1
        log(f"[{index}/{len(todo)}] {dataset} {cell.model} seed {cell.seed} ({cell.config})")
        try:
            cfg = load_config(cell.config, [f"seed={cell.seed}", "train.progress=false", *overrides])
            metrics = run_experiment(cfg, run_dir=run_dir_of(runs_dir, dataset, cell.model, cell.seed), log=log)
            row = metrics_row(cell.model, cell.seed, metrics)
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the benchmark
            log(f"FAILED {dataset} {cell.model} seed {cell.seed}: {type(exc).__name__}: {exc}\n"
                + traceback.format_exc())
            summary.failed.append((cell.model, cell.seed, f"{type(exc).__name__}: {exc}"))
            continue
        append_row(path, row)
        done.add(key)
        summary.ran.append(key)
        log(f"done {cell.model} seed {cell.seed}: test auc {row['test_auc']:.6f} "
            f"logloss {row['test_logloss']:.6f} (best epoch {row['best_epoch']}, {row['seconds']:.1f}s)")
    return summary
