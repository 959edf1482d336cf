"""Do the fused CPU kernels train models as well as PyTorch ops? Frappe_x1 runs of both paths, compared.

    python benchmarks/kernel_paths.py            # write results/frappe_x1_kernels.md
    python benchmarks/kernel_paths.py --check    # exit 1 if it is out of date

Both paths compute the same functions (tests/test_dense_tail.py); their runs differ as two seeds
do (other dropout draws, float sums in another order). So the question is statistical: per model,
the valid and test AUCs of every seed run on each path (benchmark CSVs under results/, each with its report
and command log), their means, and a Welch t-test of the difference. More arms are set against
both paths: the fused kernels up to 4e6081c (mix32 dropout masks), PyTorch ops drawing either
kernel's masks (benchmarks/hash_mask_dropout.py), and the public reference, FuxiCTR v2.0.2's FINAL,
on the same files (benchmarks/fuxictr_reference.py). Nothing here computes a number that is not in
those CSVs.
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

# model → kernels → CSVs holding its runs (rows of other models are ignored); native: the fused
# kernels since 40fca9d, which draw their dropout masks from SplitMix64's finaliser. Every run here
# shuffled with seed + epoch (up to 2bfbc23), so the paths saw the same data orders.
ACCEPTANCE_SPLITMIX = "frappe_x1_kernels/acceptance_splitmix.csv"
SOURCES: dict[str, dict[str, tuple[str, ...]]] = {
    "MLP": {"native": (ACCEPTANCE_SPLITMIX,), "torch": ("frappe_x1.csv",)},
    "FINAL_1B": {
        "native": (ACCEPTANCE_SPLITMIX, "frappe_x1_kernels/1b_native_splitmix_a.csv",
                   "frappe_x1_kernels/1b_native_splitmix_b.csv"),
        "torch": ("frappe_x1.csv", "frappe_x1_kernels/1b_torch.csv", "frappe_x1_kernels/1b_torch_more.csv",
                  "frappe_x1_kernels/1b_torch_more2.csv", "frappe_x1_kernels/1b_torch_more3.csv"),
    },
    "FINAL_2B_KD": {"native": (ACCEPTANCE_SPLITMIX,), "torch": ("frappe_x1.csv",)},
}

# model → CSVs of the fused kernels up to 4e6081c, whose masks were mix32(mix32(e + key_lo) ^ key_hi)
MIX32_FUSED_RUNS: dict[str, tuple[str, ...]] = {
    "MLP": ("frappe_x1_native_mix32/frappe_x1.csv",),
    "FINAL_1B": ("frappe_x1_native_mix32/frappe_x1.csv", "frappe_x1_kernels/1b_native.csv",
                 "frappe_x1_kernels/1b_native_more.csv", "frappe_x1_kernels/1b_native_more2.csv"),
    "FINAL_2B_KD": ("frappe_x1_native_mix32/frappe_x1.csv", "frappe_x1_2b_kd_search/paper_more.csv"),
}

# model → CSVs of PyTorch-ops runs drawing the mix32 kernel's masks (benchmarks/hash_mask_dropout.py
# up to 4e6081c; now `--masks mix32`)
MIX32_MASK_RUNS: dict[str, tuple[str, ...]] = {
    "FINAL_1B": ("frappe_x1_kernels/1b_torch_kernel_masks_a.csv", "frappe_x1_kernels/1b_torch_kernel_masks_b.csv"),
}

# model → CSVs of PyTorch-ops runs drawing SplitMix64 masks, the kernel's since 40fca9d
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

# the fresh seeds of the test planned before the SplitMix64 kernel's runs: fused against PyTorch ops
PLANNED_SEEDS = tuple(str(s) for s in range(2041, 2071))


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


def sources_text(sources: dict[str, tuple[str, ...]]) -> str:
    return "; ".join(f"{m}: {' + '.join(p)}" for m, p in sources.items())


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


def two_groups(label: str, model: str, a: list[tuple[float, float]], b: list[tuple[float, float]]) -> list[str]:
    """Rows `label | model | split | a | b | a − b | Welch p | Levene p`, valid then test."""
    rows = []
    for column, split in enumerate(("valid", "test")):
        x, y = [r[column] for r in a], [r[column] for r in b]
        rows.append(f"| {label} | {model} | {split} | {n_mean_std(x)} | {n_mean_std(y)} | "
                    f"{100 * (statistics.mean(x) - statistics.mean(y)):+.3f} | "
                    f"{stats.ttest_ind(x, y, equal_var=False).pvalue:.3f} | {stats.levene(x, y).pvalue:.3f} |")
    return rows


def planned_test() -> list[str]:
    """Table rows: FINAL 1B on the fused kernels (each hash) against PyTorch ops and against each other,
    seeds PLANNED_SEEDS only (every arm drew the same data orders and dropout keys for a seed)."""
    model = "FINAL_1B"
    arms = {"SplitMix64 fused (since 40fca9d)": aucs(model, SOURCES[model]["native"]),
            "mix32 fused (up to 4e6081c)": aucs(model, MIX32_FUSED_RUNS[model]),
            "PyTorch ops": aucs(model, SOURCES[model]["torch"])}
    lines = ["| A vs B | model | split | A n | A AUC ×100 | B n | B AUC ×100 | A − B | p (means) | p (spreads) |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    names = list(arms)
    for a, b in ((names[0], names[2]), (names[1], names[2]), (names[0], names[1])):
        lines += two_groups(f"{a} vs {b}", model, [arms[a][s] for s in PLANNED_SEEDS], [arms[b][s] for s in PLANNED_SEEDS])
    return lines


def by_mask_generator(runs: dict[str, dict[str, list[tuple[float, float]]]]) -> list[str]:
    """Table rows: each hash's runs (fused kernels + PyTorch ops drawing that hash's masks) against
    PyTorch-generator runs (PyTorch ops + FuxiCTR), for the models with runs of every arm."""
    lines = ["| masks | model | split | hash n | hash masks AUC ×100 | PyTorch n | PyTorch masks AUC ×100 | difference | "
             "p (means) | p (spreads) |", "|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    hashes = (("mix32", MIX32_FUSED_RUNS, MIX32_MASK_RUNS), ("SplitMix64", {m: by["native"] for m, by in SOURCES.items()},
                                                             SPLITMIX_RUNS))
    for name, fused, torch_masks in hashes:
        for model in [m for m in torch_masks if m in REFERENCE_RUNS]:
            hashed = list(aucs(model, fused[model]).values()) + list(aucs(model, torch_masks[model]).values())
            philox = runs[model]["torch"] + list(aucs(model, REFERENCE_RUNS[model]).values())
            lines += two_groups(name, model, hashed, philox)
    return lines


def report() -> str:
    runs = {model: {k: list(aucs(model, paths).values()) for k, paths in by.items()} for model, by in SOURCES.items()}
    lines = [
        "# Frappe_x1: fused CPU kernels vs PyTorch ops (and the FuxiCTR reference)",
        "",
        "Generated by `python benchmarks/kernel_paths.py`. AUC ×100, mean ± sample std over the seeds run "
        "on each path (`train.kernels=native` / `torch`; native is the fused kernels since 40fca9d, whose dropout "
        "masks come from SplitMix64's finaliser); Welch t-test (scipy.stats.ttest_ind, equal_var=False) "
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
        "The test planned before the SplitMix64 kernel ran: FINAL 1B, fresh seeds 2041–2070 on each path, "
        "Welch t-test of the means and Levene test (median-centred, scipy.stats.levene) of the spreads; the "
        "mix32 kernel's runs of the same seeds beside them:",
        "",
        *planned_test(),
        "",
        "The fused kernels up to 4e6081c, whose masks were mix32(mix32(e + key_lo) ^ key_hi) (sources: "
        + sources_text(MIX32_FUSED_RUNS) + "):",
        "",
        *against_both_paths("fused, mix32 masks", MIX32_FUSED_RUNS, runs),
        "",
        "The paths differ in float order and in their dropout masks. PyTorch ops drawing the mix32 kernel's "
        "masks (`benchmarks/hash_mask_dropout.py --masks mix32`; sources: " + sources_text(MIX32_MASK_RUNS)
        + ") separate the two:",
        "",
        *against_both_paths("torch + mix32 masks", MIX32_MASK_RUNS, runs),
        "",
        "The same with the SplitMix64 masks, SplitMix64's finaliser of key + (e + 1)·golden, the kernel's "
        "since 40fca9d (`benchmarks/hash_mask_dropout.py --masks splitmix64`; sources: "
        + sources_text(SPLITMIX_RUNS) + "):",
        "",
        *against_both_paths("torch + SplitMix64 masks", SPLITMIX_RUNS, runs),
        "",
        "The public reference on the same files: FuxiCTR v2.0.2's FINAL, the code of the BARS logs, run with "
        "the parameters of the same configs (`benchmarks/fuxictr_reference.py`; sources: "
        + sources_text(REFERENCE_RUNS) + "):",
        "",
        *against_both_paths("FuxiCTR 2.0.2", REFERENCE_RUNS, runs),
        "",
        "Grouped by the dropout masks a run drew: each hash (the fused kernels with it, and PyTorch ops "
        "drawing its masks) against PyTorch's generator (PyTorch ops, and FuxiCTR). The mix32 grouping was "
        "made after its runs were seen. Welch t-test of the means, Levene test of the spreads:",
        "",
        *by_mask_generator(runs),
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    write_or_check({OUT: report()}, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
