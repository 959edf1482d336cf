"""The markdown reports of the benchmark.

Single-task (one dataset): per-model mean ± std over seeds next to the paper's figure, a Welch
t-test of FINAL(2B)+KD against the strongest baseline, and the commands. Multi-task grid
(:func:`write_grid_report`): per (model, variant) mean ± std over seeds of every test AUC
column, the test loglosses, the difference of each variant to the model's mlp variant, and the
commands.

Both end with a calibration table (:func:`_calibration`): mean ± std over seeds of the test PCOC
(Σp / Σy) and ECE of every run, read from the runs' metrics.json under ``runs_dir`` (the results CSV
layout stays as it is); a run trained with ``calibration`` adds a row of its uncalibrated outputs.

Everything after the ``<!-- notes -->`` marker line of an existing report is hand-written and is
kept verbatim when the report is rewritten.
"""
from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from mtl_final.benchmark import paper_numbers
from mtl_final.benchmark.runner import (
    MODEL_IDS,
    MTL_MODEL_ORDER,
    MTL_TASKS,
    MTL_VARIANTS,
    columns_scored,
    csv_path,
    is_final_family,
    read_grid_rows,
    read_rows,
    run_dir_of,
)
from mtl_final.train.metrics import ECE_BINS

NOTES_MARKER = "<!-- notes -->"
FLAG_THRESHOLD = 0.5  # AUC points ×100
TTEST_MODEL = "FINAL_2B_KD"
DEFAULT_NOTES = (
    f"{NOTES_MARKER}\n## Notes\n\n"
    "_Hand-written; everything below the notes marker is kept when the report is regenerated._\n"
)


@dataclass
class ModelStats:
    model: str
    seeds: list[int]
    test_auc: list[float]  # fractions, as in the CSV
    test_logloss: list[float]
    valid_auc: list[float]
    best_epoch: list[int]
    seconds: list[float]

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def auc_mean(self) -> float:  # ×100
        return statistics.fmean(self.test_auc) * 100


def _mean_std(values: Sequence[float], scale: float = 1.0) -> tuple[float, float | None]:
    scaled = [v * scale for v in values]
    mean = statistics.fmean(scaled)
    std = statistics.stdev(scaled) if len(scaled) >= 2 else None  # sample std (n - 1)
    return mean, std


def format_mean_std(values: Sequence[float], scale: float = 1.0, digits: int = 3) -> str:
    """``"mean ± std"`` (sample std) with ``digits`` decimals; std "–" for a single value."""
    mean, std = _mean_std(values, scale)
    return f"{mean:.{digits}f} ± " + ("–" if std is None else f"{std:.{digits}f}")


def summarize(rows: Sequence[dict[str, Any]], log: Callable[[str], None] | None = None) -> dict[str, ModelStats]:
    """Rows grouped per model in paper order (unknown ids after, alphabetically). A repeated
    (model, seed) keeps its first row, like the runner's resume does."""
    seen: set[tuple[str, int]] = set()
    stats: dict[str, ModelStats] = {}
    for r in rows:
        key = (r["model"], r["seed"])
        if key in seen:
            if log:
                log(f"warning: duplicate row for {key[0]} seed {key[1]} ignored")
            continue
        seen.add(key)
        s = stats.setdefault(r["model"], ModelStats(r["model"], [], [], [], [], [], []))
        s.seeds.append(r["seed"])
        s.test_auc.append(r["test_auc"])
        s.test_logloss.append(r["test_logloss"])
        s.valid_auc.append(r["valid_auc"])
        s.best_epoch.append(r["best_epoch"])
        s.seconds.append(r["seconds"])
    order = [m for m in MODEL_IDS if m in stats] + sorted(m for m in stats if m not in MODEL_IDS)
    return {m: stats[m] for m in order}


def welch_ttest(a: Sequence[float], b: Sequence[float]) -> dict[str, float]:
    """Welch's t-test of a against b (scipy.stats.ttest_ind, equal_var=False): t, Welch–Satterthwaite
    df, two-sided p and one-sided p for mean(a) > mean(b)."""
    from scipy import stats as sps

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # zero variances give nan, reported as such
        two = sps.ttest_ind(a, b, equal_var=False)
        greater = sps.ttest_ind(a, b, equal_var=False, alternative="greater")
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    denom = va**2 / (len(a) - 1) + vb**2 / (len(b) - 1)
    if not denom > 0:  # both variances zero: t is 0/0 or ±inf (scipy: p = 0), the test is undefined
        nan = float("nan")
        return {"t": nan, "df": nan, "p_two_sided": nan, "p_greater": nan}
    df = (va + vb) ** 2 / denom
    return {"t": float(two.statistic), "df": df, "p_two_sided": float(two.pvalue),
            "p_greater": float(greater.pvalue)}


def mean_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of `values` (n ≥ 2): mean ± t_{(1+level)/2, n-1} · s / √n."""
    from scipy import stats as sps

    if len(values) < 2:
        raise ValueError(f"an interval of the mean needs at least 2 values, got {len(values)}")
    mean = statistics.fmean(values)
    half = float(sps.t.ppf((1 + level) / 2, len(values) - 1)) * statistics.stdev(values) / math.sqrt(len(values))
    return mean - half, mean + half


def _intervals(stats: dict[str, ModelStats]) -> list[str]:
    lines = ["## 95% interval of the mean test AUC", ""]
    rows = [s for s in stats.values() if s.n >= 2]
    if not rows:
        return lines + ["Needs at least 2 seeds of a model."]
    lines += ["Student-t interval over the seeds, ×100: how far the mean of this many runs may sit from the "
              "mean of many more.", "", "| model | n | mean | 95% interval |", "|---|---:|---:|---|"]
    for s in rows:
        lo, hi = mean_interval([100 * v for v in s.test_auc])
        lines.append(f"| {s.model} | {s.n} | {s.auc_mean:.3f} | [{lo:.3f}, {hi:.3f}] |")
    return lines


def _fmt(x: float, digits: int) -> str:
    return "nan" if not math.isfinite(x) else f"{x:.{digits}f}"


def best_baseline(stats: dict[str, ModelStats]) -> ModelStats | None:
    """The non-FINAL model with the highest mean test AUC (ties: paper order)."""
    base = [s for s in stats.values() if not is_final_family(s.model)]
    return max(base, key=lambda s: s.auc_mean) if base else None


def _table(dataset: str, stats: dict[str, ModelStats]) -> list[str]:
    lines = [
        "| model | n | seeds | test AUC ×100 | test logloss | valid AUC ×100 | paper AUC ×100 "
        "| ours − paper | flag | best epoch | train s |",
        "|---|---:|---|---:|---:|---:|---:|---:|:---:|---:|---:|",
    ]
    for s in stats.values():
        paper = paper_numbers.paper_auc(dataset, s.model)
        if paper is None:
            paper_txt, diff_txt, flag = "–", "–", ""
        else:
            diff = s.auc_mean - paper[0]
            paper_txt = f"{paper[0]:.2f} ({paper[1]})"
            diff_txt = f"{diff:+.3f}"
            flag = f"⚠ >{FLAG_THRESHOLD}" if abs(diff) > FLAG_THRESHOLD else ""
        lines.append(
            f"| {s.model} | {s.n} | {','.join(map(str, sorted(s.seeds)))} "
            f"| {format_mean_std(s.test_auc, 100, 3)} | {format_mean_std(s.test_logloss, 1, 4)} "
            f"| {format_mean_std(s.valid_auc, 100, 3)} | {paper_txt} | {diff_txt} | {flag} "
            f"| {statistics.fmean(s.best_epoch):.1f} | {statistics.fmean(s.seconds):.1f} |"
        )
    return lines


def _significance(stats: dict[str, ModelStats]) -> list[str]:
    lines = ["## Significance: FINAL(2B)+KD vs. the best baseline", ""]
    final = stats.get(TTEST_MODEL)
    base = best_baseline(stats)
    head = ("Welch t-test (scipy.stats.ttest_ind, equal_var=False) of "
            f"{TTEST_MODEL}'s test AUCs against the best non-FINAL baseline by mean test AUC")
    if final is None or base is None:
        missing = TTEST_MODEL if final is None else "any non-FINAL baseline"
        return lines + [f"{head}: not possible, no results for {missing}."]
    head += f", {base.model} ({base.auc_mean:.3f}, n={base.n})"
    if final.n < 2 or base.n < 2:
        return lines + [f"{head}: not enough seeds ({TTEST_MODEL} n={final.n}, {base.model} n={base.n}; "
                        "need ≥ 2 each)."]
    res = welch_ttest(final.test_auc, base.test_auc)
    lines += [
        f"{head}:",
        "",
        f"t = {_fmt(res['t'], 6)}, df = {_fmt(res['df'], 2)}, p (two-sided) = {_fmt(res['p_two_sided'], 4)}, "
        f"p (one-sided, {TTEST_MODEL} > {base.model}) = {_fmt(res['p_greater'], 4)}.",
        "",
        "Significant at p < 0.05 (one-sided, as the paper claims): "
        + ("undefined (both have zero variance)" if not math.isfinite(res["p_greater"])
           else "yes" if res["p_greater"] < 0.05 else "no") + ".",
    ]
    return lines


def _family_line(stats: dict[str, ModelStats]) -> list[str]:
    lines = ["## FINAL family vs. the strongest baseline", ""]
    base = best_baseline(stats)
    family = [s for s in stats.values() if is_final_family(s.model)]
    if base is None or not family:
        return lines + ["Not decidable yet: needs results of at least one baseline and one FINAL-family model."]
    best = max(family, key=lambda s: s.auc_mean)
    above = [s for s in family if s.auc_mean > base.auc_mean]
    verdict = "yes" if above else "no"
    detail = ", ".join(f"{s.model} {s.auc_mean:.3f} ({s.auc_mean - base.auc_mean:+.3f})" for s in family)
    return lines + [
        f"Strongest baseline: {base.model}, mean test AUC ×100 {base.auc_mean:.3f}. "
        f"Does the FINAL family beat it? **{verdict}** — best FINAL-family model {best.model} "
        f"{best.auc_mean:.3f} ({best.auc_mean - base.auc_mean:+.3f}); "
        f"{len(above)} of {len(family)} FINAL-family models above it: {detail}."
    ]


# ------------------------------------------------------------------------------- calibration

# (metrics.json entry, the table's "outputs" cell): what the run serves, then a calibrated run's raw outputs
CALIBRATION_ENTRIES = (("test", "as served"), ("test_uncalibrated", "uncalibrated"))


def _run_metrics(path: Path, log: Callable[[str], None] | None) -> dict[str, Any] | None:
    """A run's metrics.json, or None when it is missing or unreadable (logged)."""
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        if log:
            log(f"warning: {path} unreadable, left out of the calibration table ({exc})")
        return None


def _calibration(groups: dict[tuple[str, ...], list[Path]], key_heads: Sequence[str], tasks: Sequence[str] | None,
                 runs_dir: str | Path | None, log: Callable[[str], None] | None) -> list[str]:
    """The calibration section: per group (the key cells) and entry of CALIBRATION_ENTRIES, n runs and
    mean ± std of test PCOC and ECE per task (tasks None: each run's own task, as the CSV row's)."""
    lines = ["## Calibration", ""]
    if runs_dir is None:
        return lines + ["Not shown: the report was written without the run directories (runs_dir)."]
    lines += [f"Test PCOC (Σp / Σy; 1 = as many predicted as observed, 1.2 = a 20% overbid) and ECE ({ECE_BINS} "
              f"equal-mass bins) of each run's metrics.json under `{runs_dir}`; mean ± sample std over the runs "
              "found. Runs trained with `calibration` serve calibrated outputs; their raw ones follow as "
              "`uncalibrated`.", ""]
    heads = [f"test{'' if t is None else ' ' + t} {metric}{' (clicked rows)' if t == 'cvr' else ''}"
             for t in (tasks or [None]) for metric in ("PCOC", "ECE")]
    rows = []
    for key, dirs in groups.items():
        found = [m for m in (_run_metrics(d / "metrics.json", log) for d in dirs) if m]
        for entry, label in CALIBRATION_ENTRIES:
            runs = [m[entry] for m in found if isinstance(m.get(entry), dict)]
            if not runs:
                continue
            cells = []
            for t in tasks or [None]:
                per_task = [r.get(t or _run_task(r), {}) for r in runs]
                for metric, digits in (("pcoc", 3), ("ece", 4)):
                    values = [v[metric] for v in per_task if v.get(metric) is not None]
                    cells.append(format_mean_std(values, 1, digits) if values else "–")
            rows.append(f"| {' | '.join(key)} | {label} | {len(runs)} | " + " | ".join(cells) + " |")
    if not rows:
        return lines + ["No run directory with PCOC / ECE found."]
    return lines + ["| " + " | ".join([*key_heads, "outputs", "n", *heads]) + " |",
                    "|" + "---|" * (len(key_heads) + 1) + "---:|" * (1 + len(heads))] + rows


# test_entire_space keys of the ground-truth table (mtl_final/data/simulator_metrics.py), ×100 where AUC
GROUND_TRUTH_COLUMNS: tuple[tuple[str, str, float, int], ...] = (
    ("ctr_oracle_auc", "oracle ctr AUC ×100", 100, 3),
    ("cvr_auc", "entire-space cvr AUC ×100", 100, 3),
    ("cvr_oracle_auc", "oracle", 100, 3),
    ("cvr_auc_unclicked", "unclicked cvr AUC ×100", 100, 3),
    ("cvr_oracle_auc_unclicked", "oracle", 100, 3),
    ("cvr_logloss_true_pcvr", "cross-entropy to true pCVR", 1, 4),
    ("cvr_oracle_logloss_true_pcvr", "oracle", 1, 4),
)


def _ground_truth(groups: dict[tuple[str, ...], list[Path]], key_heads: Sequence[str],
                  runs_dir: str | Path | None, log: Callable[[str], None] | None) -> list[str]:
    """The ground-truth section of runs on simulated data: per group, mean ± std over its runs of each
    test_entire_space value of GROUND_TRUTH_COLUMNS; [] when no run has them."""
    if runs_dir is None:
        return []
    rows = []
    for key, dirs in groups.items():
        found = [m["test_entire_space"] for m in (_run_metrics(d / "metrics.json", log) for d in dirs)
                 if m and isinstance(m.get("test_entire_space"), dict) and m["test_entire_space"]]
        if not found:
            continue
        cells = []
        for name, _, scale, digits in GROUND_TRUTH_COLUMNS:
            values = [r[name] for r in found if isinstance(r.get(name), (int, float)) and math.isfinite(r[name])]
            cells.append(format_mean_std(values, scale, digits) if values else "–")
        rows.append(f"| {' | '.join(key)} | {len(found)} | " + " | ".join(cells) + " |")
    if not rows:
        return []
    heads = [head for _, head, _, _ in GROUND_TRUTH_COLUMNS]
    return ["## Against the simulator's ground truth", "",
            "From each run's metrics.json (`test_entire_space`): cvr over every test impression and over the "
            "unclicked ones against the data's fixed conversion labels, pCVR's cross-entropy to the true pCVR "
            "(lower is better), each beside its oracle (the true probabilities' own score); mean ± sample std "
            "over the runs.", "",
            "| " + " | ".join([*key_heads, "n", *heads]) + " |",
            "|" + "---|" * len(key_heads) + "---:|" * (1 + len(heads))] + rows


def _run_task(test: dict[str, Any]) -> str:
    """The task a single-task CSV row reports (runner.metrics_row): ctr, or the run's only task."""
    return next(iter(test)) if "ctr" not in test and len(test) == 1 else "ctr"


# ---------------------------------------------------------------------------------- commands


def commands_path(out_dir: str | Path, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset}.commands"


def git_revision() -> str:
    """Short HEAD sha of this checkout, "+dirty" with uncommitted changes to tracked files; "unknown" without git."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        return sha + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def log_command(out_dir: str | Path, dataset: str, command: str) -> None:
    """Append a benchmark invocation (time, cwd, git revision, command line) to the commands log."""
    path = commands_path(out_dir, dataset)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields = [time.strftime("%Y-%m-%d %H:%M:%S"), os.getcwd(), git_revision(), command]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("\t".join(f.replace("\t", " ").replace("\n", " ") for f in fields) + "\n")


def read_commands(out_dir: str | Path, dataset: str) -> list[list[str]]:
    path = commands_path(out_dir, dataset)
    if not path.is_file():
        return []
    return [line.split("\t", 3) for line in path.read_text(encoding="utf-8").splitlines()
            if line.count("\t") >= 3]


def _commands(out_dir: str | Path, dataset: str, current: str | None) -> list[str]:
    lines = ["## Commands", ""]
    logged = read_commands(out_dir, dataset)
    if logged:
        lines += ["Benchmark runs that wrote the CSV (oldest first):", "", "```"]
        for stamp, cwd, rev, cmd in logged:
            lines += [f"# {stamp}  cwd {cwd}  git {rev}", cmd]
        lines += ["```"]
    else:
        lines += ["No benchmark run logged in " f"`{commands_path(out_dir, dataset)}`."]
    if current:
        lines += ["", f"This report was written by: `{current}`"]
    return lines


# ------------------------------------------------------------------------------------ report


def render_report(dataset: str, rows: Sequence[dict[str, Any]], out_dir: str | Path = "results",
                  command: str | None = None, log: Callable[[str], None] | None = None,
                  runs_dir: str | Path | None = None) -> str:
    """The generated part of the report (everything above the notes marker); the calibration table reads
    the runs' metrics.json under ``runs_dir`` (none without it)."""
    stats = summarize(rows, log)
    src = csv_path(out_dir, dataset)
    lines = [
        f"# Benchmark {dataset}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `mtl_final.benchmark` from `{src}` "
        f"({sum(s.n for s in stats.values())} runs).",
        "Test AUC ×100 and logloss: mean ± sample std over seeds (the model's best-validation-AUC "
        "checkpoint). Paper: FINAL (SIGIR 2023) Table 1 / Table 2 figure for this dataset. "
        f"ours − paper in AUC points ×100; ⚠ when |ours − paper| > {FLAG_THRESHOLD}.",
        "",
    ]
    if stats:
        lines += _table(dataset, stats)
    else:
        lines += ["No results yet."]
    missing = [m for m in MODEL_IDS if m not in stats]
    if missing and stats:
        lines += ["", f"Not run yet: {', '.join(missing)}."]
    bars = paper_numbers.BARS_FINAL.get(dataset)
    if bars:
        lines += ["", "Public BARS runs of the best FINAL configs (seed 2021, test AUC ×100 / logloss): "
                  + "; ".join(f"{m} {a * 100:.4f} / {ll:.6f}" for m, (a, ll) in bars.items()) + "."]
    lines += [""] + _intervals(stats) + [""] + _significance(stats) + [""] + _family_line(stats) + [""]
    groups = {(s.model,): [run_dir_of(runs_dir, dataset, s.model, seed) for seed in s.seeds] for s in stats.values()} \
        if runs_dir is not None else {}
    lines += _calibration(groups, ["model"], None, runs_dir, log) + [""]
    lines += _commands(out_dir, dataset, command) + [""]
    return "\n".join(lines)


def report_path(out_dir: str | Path, dataset: str) -> Path:
    return Path(out_dir) / f"{dataset}.md"


def _write_keeping_notes(path: Path, generated: str) -> Path:
    """Write ``generated`` + the notes of the existing ``path`` (from the marker on; the default
    notes section when there are none), atomically."""
    notes = DEFAULT_NOTES
    if path.is_file():
        old = path.read_text(encoding="utf-8")
        if NOTES_MARKER in old:
            notes = old[old.index(NOTES_MARKER):]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(generated + "\n" + notes, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_report(dataset: str, out_dir: str | Path = "results", command: str | None = None,
                 log: Callable[[str], None] | None = print, runs_dir: str | Path | None = None) -> Path:
    """(Re)write ``<out_dir>/<dataset>.md`` from the CSV (and the runs under ``runs_dir``), keeping the
    notes below the marker."""
    rows = read_rows(csv_path(out_dir, dataset), log)
    return _write_keeping_notes(report_path(out_dir, dataset),
                                render_report(dataset, rows, out_dir, command, log, runs_dir))


# ------------------------------------------------------------------------- multi-task grid report

BASE_VARIANT = "mlp"


def grid_auc_columns(scored: Sequence[str]) -> list[tuple[str, str]]:
    """(CSV column, table heading) of the grid report's AUC table for the scored names; es_cvr_auc
    is last (the report drops it when no row has it)."""
    return [*((f"test_{t}_auc", f"test {t} AUC ×100" + (" (clicked rows)" if t == "cvr" else "")) for t in scored),
            ("es_cvr_auc", "entire-space cvr AUC ×100")]


def grid_logloss_columns(scored: Sequence[str]) -> list[tuple[str, str]]:
    """(CSV column, table heading) of the grid report's logloss table."""
    return [(f"test_{t}_logloss", f"test {t} logloss") for t in scored]


def summarize_grid(rows: Sequence[dict[str, Any]],
                   log: Callable[[str], None] | None = None) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """Grid rows grouped per (model, variant): models in MTL_MODEL_ORDER, variants in MTL_VARIANTS
    order (unknown ones after, alphabetically), seeds in CSV order. A repeated (model, variant,
    seed) keeps its first row, like the runner's resume does."""
    seen: set[tuple[str, str, int]] = set()
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        key = (r["model"], r["variant"], r["seed"])
        if key in seen:
            if log:
                log(f"warning: duplicate row for {key[0]}/{key[1]} seed {key[2]} ignored")
            continue
        seen.add(key)
        groups.setdefault((r["model"], r["variant"]), []).append(r)

    def rank(key: tuple[str, str]) -> tuple:
        model, variant = key
        m = MTL_MODEL_ORDER.index(model) if model in MTL_MODEL_ORDER else len(MTL_MODEL_ORDER)
        v = list(MTL_VARIANTS).index(variant) if variant in MTL_VARIANTS else len(MTL_VARIANTS)
        return (m, model, v, variant)

    return {k: groups[k] for k in sorted(groups, key=rank)}


def _column_mean_std(group: Sequence[dict[str, Any]], column: str, scale: float, digits: int) -> str:
    values = [r[column] for r in group if r[column] is not None]
    if not values:
        return "–"
    text = format_mean_std(values, scale, digits)
    return text if len(values) == len(group) else f"{text} (n={len(values)})"


def _column_mean(group: Sequence[dict[str, Any]], column: str) -> float | None:
    values = [r[column] for r in group if r[column] is not None]
    return statistics.fmean(values) if values else None


def _grid_tables(groups: dict[tuple[str, str], list[dict[str, Any]]], scored: Sequence[str]) -> list[str]:
    auc_cols = [(c, h) for c, h in grid_auc_columns(scored)
                if c != "es_cvr_auc" or any(r["es_cvr_auc"] is not None for g in groups.values() for r in g)]
    logloss_cols = grid_logloss_columns(scored)
    lines = ["## Test AUC ×100", "",
             "| model | variant | n | seeds | " + " | ".join(h for _, h in auc_cols) + " | best epoch | train s |",
             "|---|---|---:|---|" + "---:|" * len(auc_cols) + "---:|---:|"]
    for (model, variant), g in groups.items():
        lines.append(
            f"| {model} | {variant} | {len(g)} | {','.join(str(r['seed']) for r in g)} | "
            + " | ".join(_column_mean_std(g, c, 100, 3) for c, _ in auc_cols)
            + f" | {statistics.fmean(r['best_epoch'] for r in g):.1f} | {statistics.fmean(r['seconds'] for r in g):.1f} |"
        )
    lines += ["", "## Test logloss", "",
              "| model | variant | n | " + " | ".join(h for _, h in logloss_cols) + " |",
              "|---|---|---:|" + "---:|" * len(logloss_cols)]
    for (model, variant), g in groups.items():
        lines.append(f"| {model} | {variant} | {len(g)} | "
                     + " | ".join(_column_mean_std(g, c, 1, 4) for c, _ in logloss_cols) + " |")
    deltas = []
    for (model, variant), g in groups.items():
        base = groups.get((model, BASE_VARIANT))
        if variant == BASE_VARIANT or base is None:
            continue
        cells = []
        for c, _ in auc_cols:
            a, b = _column_mean(g, c), _column_mean(base, c)
            cells.append("–" if a is None or b is None else f"{(a - b) * 100:+.3f}")
        deltas.append(f"| {model} | {variant} | {len(g)} vs {len(base)} | " + " | ".join(cells) + " |")
    lines += ["", f"## Difference to the model's {BASE_VARIANT} variant", "",
              f"Mean test AUC ×100 of the variant minus that of the same model's `{BASE_VARIANT}` variant "
              "(means over each one's own seeds; no significance test).", ""]
    if deltas:
        lines += ["| model | variant | n | " + " | ".join(h for _, h in auc_cols) + " |",
                  "|---|---|---|" + "---:|" * len(auc_cols)] + deltas
    else:
        lines += [f"Not available yet: needs a `{BASE_VARIANT}` variant and another variant of the same model."]
    return lines


def render_grid_report(name: str, rows: Sequence[dict[str, Any]], out_dir: str | Path = "results",
                       command: str | None = None, log: Callable[[str], None] | None = None,
                       runs_dir: str | Path | None = None) -> str:
    """The generated part of a multi-task grid report (everything above the notes marker); the
    calibration table reads the runs' metrics.json under ``runs_dir`` (none without it)."""
    groups = summarize_grid(rows, log)
    scored = columns_scored(list(rows[0])) if rows else ()
    src = csv_path(out_dir, name)
    variants = "; ".join(f"`{v}` = `{' '.join(o)}`" for v, o in MTL_VARIANTS.items())
    scoring = ("cvr is scored on clicked rows only, ctcvr = pctr·pcvr on all rows; entire-space cvr "
               "(simulator only) scores pcvr on every test row against a label drawn from the true pCVR."
               if "ctcvr" in scored else
               f"Tasks {', '.join(scored)}: each scored on the rows it is defined on (all rows unless "
               "declared `on` another task).")
    lines = [
        f"# Multi-task benchmark {name}",
        "",
        f"Generated {time.strftime('%Y-%m-%d %H:%M:%S')} by `mtl_final.benchmark --grid` from `{src}` "
        f"({sum(len(g) for g in groups.values())} runs).",
        "Mean ± sample std over seeds, from each run's best-validation checkpoint (train.monitor of its "
        f"config). {scoring}",
        f"Variants: {variants}; MMoE / PLE also get `expert=<the tower's kind>`.",
        "",
    ]
    lines += _grid_tables(groups, scored) if groups else ["No results yet."]
    runs = {key: [run_dir_of(runs_dir, name, "/".join(key), r["seed"]) for r in g] for key, g in groups.items()} \
        if runs_dir is not None else {}
    lines += [""] + _calibration(runs, ["model", "variant"], scored or MTL_TASKS, runs_dir, log)
    truth = _ground_truth(runs, ["model", "variant"], runs_dir, log)
    lines += [""] + truth if truth else []
    lines += [""] + _commands(out_dir, name, command) + [""]
    return "\n".join(lines)


def write_grid_report(name: str, out_dir: str | Path = "results", command: str | None = None,
                      log: Callable[[str], None] | None = print, runs_dir: str | Path | None = None) -> Path:
    """(Re)write ``<out_dir>/<name>.md`` from the grid CSV (and the runs under ``runs_dir``), keeping the
    notes below the marker."""
    rows = read_grid_rows(csv_path(out_dir, name), log)
    return _write_keeping_notes(report_path(out_dir, name),
                                render_grid_report(name, rows, out_dir, command, log, runs_dir))
