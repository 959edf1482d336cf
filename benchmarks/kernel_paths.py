"""Do the fused CPU kernels train models as well as PyTorch ops? Frappe_x1 runs of both paths, compared.

    python benchmarks/kernel_paths.py            # write results/frappe_x1_kernels.md
    python benchmarks/kernel_paths.py --check    # exit 1 if it is out of date

Both paths compute the same functions (tests/test_dense_tail.py); their runs differ as two seeds
do (other dropout draws, float sums in another order). So the question is statistical: per model,
the valid and test AUCs of every seed run on each path (benchmark CSVs under results/, each with its report
and command log), their means, and a Welch t-test of the difference. More arms are set against
both paths: PyTorch ops drawing the kernel's dropout masks or those of another counter-based hash
(benchmarks/hash_mask_dropout.py), and the public reference, FuxiCTR v2.0.2's FINAL, on the same
files (benchmarks/fuxictr_reference.py). Nothing here computes
a number that is not in those CSVs.
"""
from __future__ import annotations

import csv
import statistics
from pathlib import Path

from scipy import stats

from generated_file import write_or_check  # benchmarks/, on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
OUT = RESULTS / "frappe_x1_kernels.md"

# model → kernels → CSVs holding its runs (rows of other models are ignored)
SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "MLP": {"native": ("frappe_x1_native/frappe_x1.csv",), "torch": ("frappe_x1.csv",)},
    "FINAL_1B": {
        "native": ("frappe_x1_native/frappe_x1.csv", "frappe_x1_kernels/1b_native.csv",
                   "frappe_x1_kernels/1b_native_more.csv", "frappe_x1_kernels/1b_native_more2.csv"),
        "torch": ("frappe_x1.csv", "frappe_x1_kernels/1b_torch.csv", "frappe_x1_kernels/1b_torch_more.csv",
                  "frappe_x1_kernels/1b_torch_more2.csv", "frappe_x1_kernels/1b_torch_more3.csv"),
    },
    "FINAL_2B_KD": {
        "native": ("frappe_x1_native/frappe_x1.csv", "frappe_x1_2b_kd_search/paper_more.csv"),
        "torch": ("frappe_x1.csv",),
    },
}


# model → CSVs of PyTorch-ops runs drawing the fused kernel's dropout masks (benchmarks/hash_mask_dropout.py)
KERNEL_MASK_RUNS: dict[str, tuple[str, ...]] = {
    "FINAL_1B": ("frappe_x1_kernels/1b_torch_kernel_masks_a.csv", "frappe_x1_kernels/1b_torch_kernel_masks_b.csv"),
}

# model → CSVs of PyTorch-ops runs drawing masks from another counter-based hash, SplitMix64's finaliser
# (benchmarks/hash_mask_dropout.py --masks splitmix64), with the kernel's key draws
SPLITMIX_RUNS: dict[str, tuple[str, ...]] = {
    "FINAL_1B": ("frappe_x1_kernels/1b_torch_splitmix_a.csv", "frappe_x1_kernels/1b_torch_splitmix_b.csv"),
}

# model → CSVs of the public reference, FuxiCTR v2.0.2's FINAL, on the same files and configs
# (benchmarks/fuxictr_reference.py)
REFERENCE_RUNS: dict[str, tuple[str, ...]] = {
    "FINAL_1B": ("frappe_x1_fuxictr/final_1b.csv",),
    "FINAL_2B_KD": ("frappe_x1_fuxictr/final_2b_kd.csv",),
}


def aucs(model: str, paths: tuple[str, ...]) -> dict[str, tuple[float, float]]:
    """seed → (valid AUC, test AUC) of `model` over the CSVs (a seed in two files is an error)."""
    out: dict[str, tuple[float, float]] = {}
    for rel in paths:
        with (RESULTS / rel).open(encoding="utf-8") as f:
            for row in csv.DictReader(f):
                if row["model"] != model:
                    continue
                if row["seed"] in out:
                    raise SystemExit(f"kernel_paths: {model} seed {row['seed']} appears twice ({rel})")
                out[row["seed"]] = (float(row["valid_auc"]), float(row["test_auc"]))
    return out


def n_mean_std(values: list[float]) -> str:
    """Table cells `n | mean ± std` (AUC ×100)."""
    return f"{len(values)} | {100 * statistics.mean(values):.3f} ± {100 * statistics.stdev(values):.3f}"


def against_both_paths(arm: str, sources: dict[str, tuple[str, ...]],
                       runs: dict[str, dict[str, list[tuple[float, float]]]]) -> list[str]:
    """Table rows: the arm's runs per model and split, minus each path's mean, with Welch p."""
    lines = [f"| model | split | n | {arm} AUC ×100 | − native | p | − torch | p |",
             "|---|---|---:|---:|---:|---:|---:|---:|"]
    for model, paths in sources.items():
        arm_runs = list(aucs(model, paths).values())
        for column, split in enumerate(("valid", "test")):
            mine = [r[column] for r in arm_runs]
            cells = []
            for k in ("native", "torch"):
                other = [r[column] for r in runs[model][k]]
                cells.append(f"{100 * (statistics.mean(mine) - statistics.mean(other)):+.3f} | "
                             f"{stats.ttest_ind(mine, other, equal_var=False).pvalue:.3f}")
            lines.append(f"| {model} | {split} | {n_mean_std(mine)} | {cells[0]} | {cells[1]} |")
    return lines


def by_mask_generator(runs: dict[str, dict[str, list[tuple[float, float]]]]) -> list[str]:
    """Table rows: hash-mask runs against PyTorch-mask runs, for the models that have both extra arms."""
    lines = ["| model | split | hash n | hash masks AUC ×100 | PyTorch n | PyTorch masks AUC ×100 | difference | "
             "p (means) | p (spreads) |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for model in [m for m in KERNEL_MASK_RUNS if m in REFERENCE_RUNS]:
        hashed = runs[model]["native"] + list(aucs(model, KERNEL_MASK_RUNS[model]).values())
        philox = runs[model]["torch"] + list(aucs(model, REFERENCE_RUNS[model]).values())
        for column, split in enumerate(("valid", "test")):
            a, b = [r[column] for r in hashed], [r[column] for r in philox]
            lines.append(f"| {model} | {split} | {n_mean_std(a)} | {n_mean_std(b)} | "
                         f"{100 * (statistics.mean(a) - statistics.mean(b)):+.3f} | "
                         f"{stats.ttest_ind(a, b, equal_var=False).pvalue:.3f} | {stats.levene(a, b).pvalue:.3f} |")
    return lines


def report() -> str:
    runs = {model: {k: list(aucs(model, paths).values()) for k, paths in by.items()} for model, by in SOURCES.items()}
    lines = [
        "# Frappe_x1: fused CPU kernels vs PyTorch ops (and the FuxiCTR reference)",
        "",
        "Generated by `python benchmarks/kernel_paths.py`. AUC ×100, mean ± sample std over the seeds run "
        "on each path (`train.kernels=native` / `torch`); Welch t-test (scipy.stats.ttest_ind, equal_var=False) "
        "of the difference. Sources: " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {' + '.join(p)}" for k, p in by.items()) for m, by in SOURCES.items()) + ".",
        "",
        "| model | split | native n | native AUC ×100 | torch n | torch AUC ×100 | native − torch | p (two-sided) |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for model in SOURCES:
        for column, split in enumerate(("valid", "test")):
            native, torch = ([r[column] for r in runs[model][k]] for k in ("native", "torch"))
            p = stats.ttest_ind(native, torch, equal_var=False).pvalue
            lines.append(f"| {model} | {split} | {n_mean_std(native)} | {n_mean_std(torch)} | "
                         f"{100 * (statistics.mean(native) - statistics.mean(torch)):+.3f} | {p:.3f} |")
    lines += [
        "",
        "The paths differ in float order and in their dropout masks. PyTorch ops drawing the fused kernel's "
        "masks (`benchmarks/hash_mask_dropout.py`; sources: " + "; ".join(
            f"{m}: {' + '.join(p)}" for m, p in KERNEL_MASK_RUNS.items()) + ") separate the two:",
        "",
        *against_both_paths("torch + kernel masks", KERNEL_MASK_RUNS, runs),
        "",
        "The same with masks from another counter-based hash, SplitMix64's finaliser of key + (e + 1)·golden "
        "(`benchmarks/hash_mask_dropout.py --masks splitmix64`; sources: " + "; ".join(
            f"{m}: {' + '.join(p)}" for m, p in SPLITMIX_RUNS.items()) + "):",
        "",
        *against_both_paths("torch + SplitMix64 masks", SPLITMIX_RUNS, runs),
        "",
        "The public reference on the same files: FuxiCTR v2.0.2's FINAL, the code of the BARS logs, run with "
        "the parameters of the same configs (`benchmarks/fuxictr_reference.py`; sources: " + "; ".join(
            f"{m}: {' + '.join(p)}" for m, p in REFERENCE_RUNS.items()) + "):",
        "",
        *against_both_paths("FuxiCTR 2.0.2", REFERENCE_RUNS, runs),
        "",
        "Grouped by the dropout masks a run drew (a grouping made after these runs were seen): the fused "
        "kernel's hash (native, and PyTorch ops with the kernel's masks) against PyTorch's generator (PyTorch "
        "ops, and FuxiCTR). Welch t-test of the means, Levene test (median-centred, scipy.stats.levene) of the "
        "spreads:",
        "",
        *by_mask_generator(runs),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    write_or_check({OUT: report()}, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
