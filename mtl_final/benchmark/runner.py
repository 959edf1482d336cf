"""Benchmark cells of one results table: config resolution, resume and the results CSV.

Two kinds of table share one cell loop (:func:`_run_cells`), one CSV reader/writer and one resume
rule:

* single-task (``--dataset``): cells (model id × seed) of the paper-reproduction benchmark, one
  config per model id under ``configs/benchmarks/<dataset>/``;
* multi-task grid (``--grid``): cells (config × variant × seed), the variant being a named list of
  tower/expert overrides (:data:`MTL_VARIANTS`); the cell id is ``<config stem without its
  prefix>/<variant>``, e.g. ``esmm/final`` for ``hillstrom_esmm.yaml``. The grid's CSV columns
  follow what its configs score (:func:`scored_names`, the same for every config of one grid): for
  the funnel grids ctr, cvr and ctcvr (:data:`MULTI_TASK`).

Every finished cell is appended at once to ``<out>/<name>.csv`` (one row, flushed); a cell
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

from mtl_final.config import ConfigError, load_config
from mtl_final.models.base import task_output_names
from mtl_final.models.registry import MODELS
from mtl_final.train.run import can_resume, resolve_dataset, run_experiment
from mtl_final.train.run_dir import clear_run_dir

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

# ---- multi-task grid
# What a funnel grid's cells score: ctr (all rows), cvr (clicked rows), ctcvr = pctr·pcvr (all rows).
MTL_TASKS: tuple[str, ...] = ("ctr", "cvr", "ctcvr")
_MTL_HEAD: tuple[str, ...] = ("model", "variant", "seed")
_MTL_TAIL: tuple[str, ...] = (
    "es_cvr_auc",  # entire-space CVR AUC (simulator ground truth); empty for real data
    "best_epoch", "seconds",
)
_MTL_SCORES: tuple[tuple[str, str], ...] = (("valid", "auc"), ("test", "auc"), ("test", "logloss"))


def mtl_csv_columns(scored: Sequence[str]) -> tuple[str, ...]:
    """The columns of a grid CSV whose cells score ``scored`` (tasks and entire-space products)."""
    return (*_MTL_HEAD, *(f"{col}_{name}_{metric}" for name in scored for col, metric in _MTL_SCORES),
            *_MTL_TAIL)


MTL_CSV_COLUMNS: tuple[str, ...] = mtl_csv_columns(MTL_TASKS)
# The variants of the multi-task grid, in report order: overrides applied to every model. Models
# with experts (EXPERT_MODELS) also get ``expert=<the tower's kind>``, so a FINAL variant of
# MMoE / PLE has FINAL experts as well as FINAL towers (and the mlp variant MLP experts).
# The expert section has no dual/kd keys: dual + self-distillation only concern the towers.
MTL_VARIANTS: dict[str, tuple[str, ...]] = {
    "mlp": ("tower=mlp",),
    "final": ("tower=final",),
    "final_dual_kd": ("tower=final", "tower.dual=true", "tower.kd=true"),
}
EXPERT_MODELS: frozenset[str] = frozenset({"mmoe", "ple"})
# Report order of the grid's model ids (unknown ids follow, alphabetically).
MTL_MODEL_ORDER: tuple[str, ...] = ("shared_bottom", "esmm", "mmoe", "ple")


class BenchmarkError(ValueError):
    """Bad benchmark arguments (unknown dataset or model id, missing config, bad CSV)."""


def is_final_family(model: str) -> bool:
    """FINAL_1B / FINAL_dual / FINAL_2B_KD and the Table 2 drop-ins (``*_FINAL``)."""
    return "FINAL" in model.upper()


@dataclass(frozen=True)
class Cell:
    """One benchmark run. ``variant`` is None for single-task cells; ``overrides`` are the
    variant's config overrides (applied before the command line's); ``scored``: see
    :func:`scored_names`."""

    model: str
    seed: int
    config: Path
    variant: str | None = None
    overrides: tuple[str, ...] = ()
    scored: tuple[str, ...] = ()  # grid cells: what the run scores (its CSV columns)

    @property
    def label(self) -> str:
        """The cell id without the seed: ``LR`` or ``esmm/final``."""
        return self.model if self.variant is None else f"{self.model}/{self.variant}"


@dataclass
class RunSummary:
    """Cells as (label, seed) — label = model id, or ``model/variant`` in grid mode."""

    ran: list[tuple[str, int]] = field(default_factory=list)
    skipped: list[tuple[str, int]] = field(default_factory=list)
    failed: list[tuple[str, int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed


@dataclass(frozen=True)
class CsvLayout:
    """The columns of one kind of results CSV and how to parse them. Columns not named in
    ``strings`` / ``ints`` are floats; those in ``optional`` may be empty (parsed to None)."""

    columns: tuple[str, ...]
    key: tuple[str, ...]  # columns that, with seed, identify a cell
    strings: frozenset[str]
    ints: frozenset[str] = frozenset({"seed", "best_epoch"})
    optional: frozenset[str] = frozenset()

    def parse(self, values: Sequence[str]) -> dict[str, Any]:
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} fields")
        out: dict[str, Any] = {}
        for col, text in zip(self.columns, values):
            if col in self.strings:
                out[col] = text
            elif col in self.ints:
                out[col] = int(text)
            elif col in self.optional and text == "":
                out[col] = None
            else:
                value = float(text)
                if not math.isfinite(value):  # the runner never writes one (_check_finite)
                    raise ValueError(f"non-finite {col} {text!r}")
                out[col] = value
        return out

    def label(self, row: Mapping[str, Any]) -> str:
        return "/".join(str(row[k]) for k in self.key)


def mtl_layout(scored: Sequence[str]) -> CsvLayout:
    """The layout of a grid CSV whose cells score ``scored``."""
    return CsvLayout(mtl_csv_columns(scored), key=("model", "variant"), strings=frozenset({"model", "variant"}),
                     optional=frozenset({"es_cvr_auc"}))


def columns_scored(columns: Sequence[str]) -> tuple[str, ...]:
    """The scored names of grid CSV columns (``valid_<name>_auc``), in column order."""
    return tuple(c[len("valid_"):-len("_auc")] for c in columns if c.startswith("valid_") and c.endswith("_auc"))


SINGLE_TASK = CsvLayout(CSV_COLUMNS, key=("model",), strings=frozenset({"model"}))
MULTI_TASK = mtl_layout(MTL_TASKS)


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


def read_rows(path: str | Path, log: Callable[[str], None] | None = None,
              layout: CsvLayout = SINGLE_TASK) -> list[dict[str, Any]]:
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
        if tuple(header) != layout.columns:
            raise BenchmarkError(
                f"{path} has columns {header}, expected {list(layout.columns)}; move it away or fix it"
            )
        rows = []
        for line_no, values in enumerate(reader, start=2):
            if not values:
                continue
            try:
                parsed = layout.parse(values)
            except ValueError as exc:
                if log:
                    log(f"warning: {path}:{line_no}: malformed row skipped ({exc}): {values}")
                continue
            rows.append(parsed)
    return rows


def read_grid_rows(path: str | Path, log: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
    """The parsed rows of a grid CSV of any scored names, its layout taken from its header ([] when
    the file is absent or empty). A header that is no grid layout is a BenchmarkError."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), None)
    if header is None:
        return []
    scored = columns_scored(header)
    if tuple(header) != mtl_csv_columns(scored):
        raise BenchmarkError(f"{path} has columns {header}, which are not those of a multi-task grid "
                             f"(e.g. {list(MTL_CSV_COLUMNS)}); move it away or fix it")
    return read_rows(path, log, mtl_layout(scored))


def _format(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def append_row(path: str | Path, row: Mapping[str, Any], layout: CsvLayout = SINGLE_TASK) -> None:
    """Append one results row (writing the header into a new or empty file), flushed to disk."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    new = not path.is_file() or path.stat().st_size == 0
    prefix = ""
    if new:
        writer.writerow(layout.columns)
    else:
        with path.open("rb") as fh:  # a row cut short by a crash must not swallow this one
            fh.seek(-1, os.SEEK_END)
            if fh.read(1) != b"\n":
                prefix = "\n"
    writer.writerow([_format(row[c]) for c in layout.columns])
    with path.open("a", encoding="utf-8", newline="") as fh:
        fh.write(prefix + buf.getvalue())
        fh.flush()
        os.fsync(fh.fileno())


def _check_finite(row: Mapping[str, Any], label: str, seed: int) -> None:
    bad = [k for k, v in row.items() if isinstance(v, float) and not math.isfinite(v)]
    if bad:
        raise ValueError(f"non-finite metric(s) {bad} in run {label} seed {seed}")


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
    _check_finite(row, model, seed)
    return row


def mtl_metrics_row(model: str, variant: str, seed: int, metrics: Mapping[str, Any],
                    scored: Sequence[str] = MTL_TASKS) -> dict[str, Any]:
    """The multi-task CSV row of one finished run: valid/test AUC and test logloss of every name in
    ``scored`` (by default ctr, cvr on clicked rows and ctcvr on all rows), and the entire-space CVR
    AUC when the run had the simulator's ground truth (``metrics["test_entire_space"]["cvr_auc"]``;
    else None, written empty)."""
    test, valid = metrics["test"], metrics["valid"]
    missing = [t for t in scored if t not in test or t not in valid]
    if missing:
        raise KeyError(f"no task(s) {missing} in the metrics (tasks: {sorted(test)}); this grid's CSV "
                       f"holds {list(scored)}")
    row: dict[str, Any] = {"model": model, "variant": variant, "seed": int(seed)}
    for t in scored:
        row[f"valid_{t}_auc"] = float(valid[t]["auc"])
        row[f"test_{t}_auc"] = float(test[t]["auc"])
        row[f"test_{t}_logloss"] = float(test[t]["logloss"])
    es = metrics.get("test_entire_space") or {}
    row["es_cvr_auc"] = float(es["cvr_auc"]) if "cvr_auc" in es else None
    row["best_epoch"] = int(metrics["best_epoch"])
    row["seconds"] = round(float(metrics["train_seconds"]), 3)
    _check_finite(row, f"{model}/{variant}", seed)
    return row


# -------------------------------------------------------------------------------------- cells


def plan_cells(dataset: str, models: str | Sequence[str], seeds: str | Iterable[int],
               configs_dir: str | Path = DEFAULT_CONFIGS_DIR,
               overrides: Sequence[str] | None = None) -> list[Cell]:
    """Every (model, seed) cell in run order: models in the given order, seeds within each model.
    With ``overrides``, every model's config is loaded with them, so a bad key fails here, before
    anything runs (as in :func:`plan_grid`)."""
    resolved = resolve_models(models, dataset, configs_dir)
    if overrides is not None:
        for _, path in resolved:
            _load_checked(path, ["train.progress=false", *overrides])
    return [Cell(m, s, p) for m, p in resolved for s in parse_seeds(seeds)]


def run_dir_of(runs_dir: str | Path, dataset: str, model: str, seed: int) -> Path:
    """``<runs_dir>/<dataset>/<model>/seed<seed>``; a grid cell's ``model`` is its label
    ``model/variant``, hence ``<runs_dir>/<name>/<model>/<variant>/seed<seed>``."""
    return Path(runs_dir) / dataset / model / f"seed{seed}"


def _run_cells(title: str, cells: Sequence[Cell], path: Path, layout: CsvLayout,
               make_row: Callable[[Cell, Mapping[str, Any]], dict[str, Any]],
               describe: Callable[[Mapping[str, Any]], str], runs_dir: str | Path,
               overrides: Sequence[str], log: Callable[[str], None]) -> RunSummary:
    """The cell loop of both modes: skip cells already in the CSV at ``path``, run the others in
    order (config <- seed, no progress bar, the cell's own overrides, then ``overrides``), append
    one row per finished cell; a failure is logged and collected, and the remaining cells still run.
    A cell whose run directory holds an interrupted run of the same config continues it (last.pt); any
    other run there is replaced."""
    done = {(layout.label(r), r["seed"]) for r in read_rows(path, log, layout)}
    summary = RunSummary()
    todo = [c for c in cells if (c.label, c.seed) not in done]
    log(f"benchmark {title}: {len(cells)} cells, {len(cells) - len(todo)} already in {path}, "
        f"{len(todo)} to run")
    for cell in cells:
        key = (cell.label, cell.seed)
        if key in done:
            summary.skipped.append(key)
            continue
        index = len(summary.ran) + len(summary.failed) + 1
        log(f"[{index}/{len(todo)}] {title} {cell.label} seed {cell.seed} ({cell.config})")
        try:
            cfg = load_config(cell.config, [f"seed={cell.seed}", "train.progress=false", *cell.overrides,
                                            *overrides])
            run_dir = run_dir_of(runs_dir, title, cell.label, cell.seed)
            resume = can_resume(run_dir, cfg)
            if not resume:  # a finished run, another config's, or one that cannot go on: start over
                clear_run_dir(run_dir, log)
            metrics = run_experiment(cfg, run_dir=run_dir, log=log, resume=resume)
            row = make_row(cell, metrics)
        except Exception as exc:  # noqa: BLE001 - one failed cell must not stop the benchmark
            log(f"FAILED {title} {cell.label} seed {cell.seed}: {type(exc).__name__}: {exc}\n"
                + traceback.format_exc())
            summary.failed.append((cell.label, cell.seed, f"{type(exc).__name__}: {exc}"))
            continue
        append_row(path, row, layout)
        done.add(key)
        summary.ran.append(key)
        log(f"done {cell.label} seed {cell.seed}: {describe(row)} "
            f"(best epoch {row['best_epoch']}, {row['seconds']:.1f}s)")
    return summary


def run_benchmark(dataset: str, models: str | Sequence[str], seeds: str | Iterable[int],
                  out_dir: str | Path = "results", runs_dir: str | Path = "runs/benchmarks",
                  overrides: Sequence[str] = (), configs_dir: str | Path = DEFAULT_CONFIGS_DIR,
                  log: Callable[[str], None] = print) -> RunSummary:
    """Run every cell of ``dataset`` not yet in ``<out_dir>/<dataset>.csv``, appending a row per
    finished cell. Failures are logged and collected in the summary; the remaining cells still run."""
    cells = plan_cells(dataset, models, seeds, configs_dir, overrides)
    return _run_cells(
        dataset, cells, csv_path(out_dir, dataset), SINGLE_TASK,
        make_row=lambda cell, metrics: metrics_row(cell.model, cell.seed, metrics),
        describe=lambda row: f"test auc {row['test_auc']:.6f} logloss {row['test_logloss']:.6f}",
        runs_dir=runs_dir, overrides=overrides, log=log,
    )


# ----------------------------------------------------------------------------- multi-task grid


def is_base_config(config: str | Path) -> bool:
    """``base.yaml`` / ``*_base.yaml``: a file other configs include, not a grid cell (so that
    ``--grid configs/mtl/hillstrom_*.yaml`` may match ``hillstrom_base.yaml``)."""
    stem = Path(config).stem
    return stem == "base" or stem.endswith("_base")


def grid_model_id(config: str | Path) -> str:
    """The model id of a grid config: its stem without the prefix up to the first ``_``
    (``hillstrom_shared_bottom.yaml`` → ``shared_bottom``; a stem without ``_`` is kept whole)."""
    stem = Path(config).stem
    prefix, sep, rest = stem.partition("_")
    return rest if sep and rest else stem


def parse_variants(spec: str | Sequence[str]) -> list[str]:
    """``"all"`` or ``"mlp,final"`` → variant names (of :data:`MTL_VARIANTS`), in the given order."""
    names = [s.strip() for s in (spec.split(",") if isinstance(spec, str) else spec) if str(s).strip()]
    if len(names) == 1 and names[0].lower() == "all":
        return list(MTL_VARIANTS)
    unknown = [n for n in names if n not in MTL_VARIANTS]
    if unknown or not names:
        raise BenchmarkError(f"unknown or no variant(s) {unknown}; valid variants: "
                             f"{', '.join(MTL_VARIANTS)} (or 'all')")
    return list(dict.fromkeys(names))


def variant_overrides(variant: str, model_name: str) -> list[str]:
    """The config overrides of ``variant`` for a model of name ``model_name`` (config model.name):
    :data:`MTL_VARIANTS`' list, plus ``expert=<tower kind>`` for models with experts."""
    if variant not in MTL_VARIANTS:
        raise BenchmarkError(f"unknown variant {variant!r}; valid variants: {', '.join(MTL_VARIANTS)}")
    out = list(MTL_VARIANTS[variant])
    if model_name in EXPERT_MODELS:
        kinds = [o.partition("=")[2] for o in out if o.partition("=")[0].strip() == "tower"]
        if kinds:
            out.append(f"expert={kinds[-1]}")
    return out


def _load_checked(config: Path, overrides: Sequence[str]) -> dict[str, Any]:
    try:
        return load_config(config, list(overrides))
    except ConfigError as exc:
        raise BenchmarkError(f"{config}: {exc}") from exc


def scored_names(cfg: Mapping[str, Any]) -> tuple[str, ...]:
    """What a run of ``cfg`` scores, from its dataset schema and its ``tasks``: every task, then the
    entire-space product of each task declared on another (``ctr, cvr, ctcvr`` for the funnel)."""
    schema, _ = resolve_dataset(cfg)
    if cfg["tasks"]:
        schema = schema.select_tasks(list(cfg["tasks"]))
    return tuple(task_output_names(schema.tasks))


def grid_layout(cells: Sequence[Cell]) -> CsvLayout:
    """The CSV layout of a planned grid (:func:`plan_grid` checked that every cell scores the same)."""
    return mtl_layout(cells[0].scored)


def plan_grid(configs: Sequence[str | Path], variants: str | Sequence[str], seeds: str | Iterable[int],
              overrides: Sequence[str] = (), log: Callable[[str], None] | None = None) -> list[Cell]:
    """Every (config, variant, seed) cell in run order: configs in the given order, variants within
    each config, seeds within each variant. Base configs (:func:`is_base_config`) are skipped.
    Every (config, variant) is loaded once with its overrides, so a bad key fails here, before
    anything runs."""
    paths = [Path(c) for c in configs]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise BenchmarkError(f"missing grid config file(s): {missing}")
    skipped = [p for p in paths if is_base_config(p)]
    if skipped and log:
        log(f"grid: skipping base config(s) {[str(p) for p in skipped]}")
    paths = list(dict.fromkeys(p for p in paths if not is_base_config(p)))
    if not paths:
        raise BenchmarkError("no grid configs given (base configs *_base.yaml are not cells)")
    ids = [grid_model_id(p) for p in paths]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise BenchmarkError(f"grid configs share model id(s) {dupes} (the stem after its prefix): "
                             f"{[str(p) for p in paths]}")
    variant_names, seed_list = parse_variants(variants), parse_seeds(seeds)
    cells: list[Cell] = []
    for path, model in zip(paths, ids):
        cfg = _load_checked(path, overrides)
        model_name = cfg["model"]["name"]
        if not MODELS[model_name].MULTI_TASK and variant_names != ["mlp"]:
            raise BenchmarkError(f"{path}: model {model_name!r} has no towers or experts, which the variants "
                                 "change; give it a grid of its own with --variants mlp")
        try:
            scored = scored_names(cfg)
        except (OSError, ValueError) as exc:  # a missing or bad schema, an unknown task
            raise BenchmarkError(f"{path}: {exc}") from exc
        if cells and scored != cells[0].scored:
            raise BenchmarkError(f"{path} scores {list(scored)} but {cells[0].config} scores "
                                 f"{list(cells[0].scored)}: one grid CSV holds one set of tasks; run "
                                 "configs of other tasks as a grid of their own (--name)")
        for variant in variant_names:
            ovr = tuple(variant_overrides(variant, model_name))
            _load_checked(path, [*ovr, *overrides])
            cells += [Cell(model, seed, path, variant, ovr, scored) for seed in seed_list]
    return cells


def run_grid(name: str, configs: Sequence[str | Path], variants: str | Sequence[str],
             seeds: str | Iterable[int], out_dir: str | Path = "results",
             runs_dir: str | Path = "runs/benchmarks", overrides: Sequence[str] = (),
             log: Callable[[str], None] = print) -> RunSummary:
    """Run every (config, variant, seed) cell not yet in ``<out_dir>/<name>.csv`` (columns
    :func:`mtl_csv_columns` of what the configs score), appending a row per finished cell; run directories go to
    ``<runs_dir>/<name>/<model>/<variant>/seed<seed>``. Same resume and failure rules as
    :func:`run_benchmark`."""
    cells = plan_grid(configs, variants, seeds, overrides, log)
    layout = grid_layout(cells)
    scored = cells[0].scored

    def describe(row: Mapping[str, Any]) -> str:
        text = "test auc " + " ".join(f"{t} {row[f'test_{t}_auc']:.6f}" for t in scored)
        if row["es_cvr_auc"] is not None:
            text += f" entire-space cvr {row['es_cvr_auc']:.6f}"
        return text

    return _run_cells(
        name, cells, csv_path(out_dir, name), layout,
        make_row=lambda cell, metrics: mtl_metrics_row(cell.model, cell.variant, cell.seed, metrics, scored),
        describe=describe, runs_dir=runs_dir, overrides=overrides, log=log,
    )
