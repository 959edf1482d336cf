"""The FINAL Frappe_x1 validation-set searches (FINAL(2B)+KD and FINAL 1B): variants and summaries.

    python benchmarks/final_search.py            # write results/frappe_x1_{2b_kd,1b,1b_eq1,2b_kd_eq1}_search/summary.md
    python benchmarks/final_search.py --check    # exit 1 if a summary is out of date

Each variant is the model's paper config (configs/benchmarks/frappe_x1/<config>.yaml) plus the
overrides below, run with

    python -m mtl_final.benchmark --dataset frappe_x1 --models MODEL --seeds SEEDS \
        --out DIR train.num_threads=1 OVERRIDES

and its CSV (DIR/frappe_x1.csv) and report are kept as results/<search folder>/<name>.{csv,md}
(each report logs the exact commands and git revisions). Selection rule: highest mean valid AUC over
seeds 2021-2023. The selected variant is also run on seeds 2024-2026 (and the paper config on
further seeds), which no choice looked at, and on PyTorch ops. Nothing here computes a number that
is not in those CSVs.
"""
from __future__ import annotations

import csv
import statistics
from dataclasses import dataclass, field
from pathlib import Path

from generated_file import write_or_check  # benchmarks/, on sys.path when run as a script

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
SELECTION_SEEDS = ("2021", "2022", "2023")
PAPER_CSV = "frappe_x1_native_mix32/frappe_x1.csv"  # the paper configs' fused-kernel acceptance runs
SPLITMIX_CSV = "frappe_x1_kernels/acceptance_splitmix.csv"  # the same on the SplitMix64 kernel
# `kernels` labels: the fused kernels drew their dropout masks from mix32 up to 4e6081c and from
# SplitMix64 since 40fca9d (benchmarks/hash_mask_dropout.py); torch = PyTorch ops
MIX32, SPLITMIX = "native, mix32", "native, SplitMix64"
OLD_CODE = (f"Kernels: `{MIX32}` = the fused kernels up to 4e6081c (mix32 dropout masks), `{SPLITMIX}` = since "
            "40fca9d, torch = PyTorch ops; every run shuffled with seed + epoch (up to 2bfbc23).")
HEAD = "native"  # the acceptance code: SplitMix64 masks, per-epoch shuffle seeded by epoch_seed (since 334c3db)
HEAD_CODE = (f"Kernels: `{HEAD}` = the fused kernels of the acceptance runs (SplitMix64 masks, each epoch's "
             "shuffle seeded by epoch_seed; the code at a983e12). Layers with sum, tanh or N = 3 have no fused "
             "kernel: they run as PyTorch modules.")


@dataclass(frozen=True)
class Search:
    model: str  # benchmark model id
    title: str
    folder: str  # under results/
    variants: dict[str, tuple[str, str, str]]  # name → (overrides, kernels the runs used, what it tests)
    checks: dict[str, tuple[str, str]]  # name → (variant, kernels): runs never used for selection
    sources: dict[str, str]  # name → CSV under results/ where it is not <folder>/<name>.csv
    caveat: str  # how the variants came about
    code: str = OLD_CODE  # what the `kernels` labels mean: the code the runs ran on
    seed_filter: dict[str, tuple[str, ...]] = field(default_factory=dict)  # name → the seeds it takes from its CSV

    def csv_path(self, name: str) -> Path:
        return RESULTS / self.sources.get(name, f"{self.folder}/{name}.csv")


SEARCHES = (
    Search(
        model="FINAL_2B_KD", title="FINAL(2B)+KD", folder="frappe_x1_2b_kd_search",
        variants={  # the torch-path paper rows are in results/frappe_x1.csv
            "paper": ("", MIX32, "paper_notes §4 as it is"),
            "drop02": ("block.dropout=0.2 model.block2.dropout=0.2", "torch", "more dropout in both blocks"),
            "drop005": ("block.dropout=0.05 model.block2.dropout=0.05", MIX32, "less dropout in both blocks"),
            "reg005": ("model.embedding_regularizer=0.05", "torch", "weaker embedding L2"),
            "reg02": ("model.embedding_regularizer=0.2", "torch", "stronger embedding L2"),
            "eval25": ("train.eval_every_steps=25", "torch", "valid evaluation every half epoch (seed 2021 only)"),
            "lr2e3": ("train.lr=2.0e-3", MIX32, "twice the learning rate"),
            "wide": ("block.hidden_units=[800,800] model.block2.hidden_units=[800]", MIX32, "twice the width"),
            "b2deep": ("model.block2.hidden_units=[400,400]", "torch", "block 2 two layers deep"),
            "b2deep3": ("model.block2.hidden_units=[400,400,400]", MIX32, "block 2 three layers deep"),
            "b1deep3": ("block.hidden_units=[400,400,400] model.block2.hidden_units=[400,400]", MIX32,
                        "both blocks one layer deeper"),
            "b2deep_d02": ("model.block2.hidden_units=[400,400] block.dropout=0.2", MIX32,
                           "block 2 two layers deep, block 1 dropout 0.2"),
            "b2deep_d02both": ("model.block2.hidden_units=[400,400] block.dropout=0.2 model.block2.dropout=0.2",
                               MIX32, "block 2 two layers deep, dropout 0.2 in both blocks"),
        },
        checks={"b2deep_d02_more": ("b2deep_d02", MIX32), "b2deep_d02_more2": ("b2deep_d02", MIX32),
                "paper_more": ("paper", MIX32), "b2deep_d02_torch": ("b2deep_d02", "torch"),
                "b2deep_d02_torch_more": ("b2deep_d02", "torch"), "paper_splitmix": ("paper", SPLITMIX),
                "b2deep_d02_splitmix": ("b2deep_d02", SPLITMIX)},
        sources={"paper": PAPER_CSV, "paper_splitmix": SPLITMIX_CSV},
        caveat="Test columns were visible while variants were added, so the selected variant and the paper "
               "config also ran on seeds 2024-2026, which no choice looked at.",
    ),
    Search(
        model="FINAL_1B", title="FINAL 1B", folder="frappe_x1_1b_search",
        variants={
            "paper": ("", MIX32, "paper_notes §4 as it is"),
            "drop01": ("block.dropout=0.1", MIX32, "less dropout"),
            "drop03": ("block.dropout=0.3", MIX32, "more dropout"),
            "reg005": ("model.embedding_regularizer=0.05", MIX32, "weaker embedding L2"),
            "reg02": ("model.embedding_regularizer=0.2", MIX32, "stronger embedding L2"),
            "deep3": ("block.hidden_units=[400,400,400]", MIX32, "three layers"),
            "wide": ("block.hidden_units=[800,800]", MIX32, "twice the width"),
            "gate": ("model.field_gate=true", MIX32, "with the field gate"),
        },
        checks={"paper_more": ("paper", MIX32), "paper_more2": ("paper", MIX32),
                "paper_more3": ("paper", MIX32), "paper_torch": ("paper", "torch"),
                "paper_torch_more": ("paper", "torch"), "paper_torch_more2": ("paper", "torch"),
                "paper_torch_more3": ("paper", "torch"), "paper_torch_more4": ("paper", "torch"),
                "paper_splitmix": ("paper", SPLITMIX), "paper_splitmix_more": ("paper", SPLITMIX),
                "paper_splitmix_more2": ("paper", SPLITMIX)},
        sources={"paper": PAPER_CSV, "paper_splitmix": SPLITMIX_CSV,
                 "paper_splitmix_more": "frappe_x1_kernels/1b_native_splitmix_a.csv",
                 "paper_splitmix_more2": "frappe_x1_kernels/1b_native_splitmix_b.csv",
                 "paper_more": "frappe_x1_kernels/1b_native.csv",
                 "paper_more2": "frappe_x1_kernels/1b_native_more.csv",
                 "paper_more3": "frappe_x1_kernels/1b_native_more2.csv", "paper_torch": "frappe_x1.csv",
                 "paper_torch_more": "frappe_x1_kernels/1b_torch.csv",
                 "paper_torch_more2": "frappe_x1_kernels/1b_torch_more.csv",
                 "paper_torch_more3": "frappe_x1_kernels/1b_torch_more2.csv",
                 "paper_torch_more4": "frappe_x1_kernels/1b_torch_more3.csv"},
        caveat="All variants were fixed before any of them ran.",
    ),
    Search(
        model="FINAL_1B", title="FINAL 1B, the forms of eq. (1)", folder="frappe_x1_1b_eq1_search",
        variants={
            "paper": ("", HEAD, "paper_notes §4 as it is: N = 2, concat, identity σ (the public reference's form)"),
            "sum": ("block.aggregation=sum", HEAD, "the paper's aggregation x_l = h_1 + h_2"),
            "tanh": ("block.sigma=tanh", HEAD, "σ = tanh, as in the MindSpore implementation"),
            "n3sum": ("block.num_steps=3 block.aggregation=sum", HEAD, "N = 3 steps, summed"),
        },
        checks={"paper_more": ("paper", HEAD), "tanh_check": ("tanh", HEAD), "tanh_check2": ("tanh", HEAD),
                "sum_check": ("sum", HEAD), "sum_check2": ("sum", HEAD)},
        sources={"paper": "frappe_x1_native/frappe_x1.csv", "paper_more": "frappe_x1_native_seeds/frappe_x1.csv"},
        seed_filter={"paper_more": tuple(str(s) for s in range(2024, 2030))},
        caveat="All variants were fixed before any of them ran, and so were the checks' seeds (2024-2029, for "
               "the selected variant and for sum) before any check ran.",
        code=HEAD_CODE,
    ),
    Search(
        model="FINAL_2B_KD", title="FINAL(2B)+KD, the forms of eq. (1)", folder="frappe_x1_2b_kd_eq1_search",
        variants={
            "paper": ("", HEAD, "paper_notes §4 as it is: N = 2, concat, identity σ in both blocks"),
            "sum": ("block.aggregation=sum", HEAD, "the paper's aggregation x_l = h_1 + h_2 in both blocks"),
            "tanh": ("block.sigma=tanh", HEAD, "σ = tanh in both blocks"),
        },
        checks={},
        sources={"paper": "frappe_x1_native/frappe_x1.csv"},
        caveat="Both variants were fixed before either ran (N = 3, planned too, was dropped for time: its "
               "epochs take about 2.5 times as long).",
        code=HEAD_CODE,
    ),
)


def read_rows(search: Search, name: str) -> list[dict[str, str]]:
    path = search.csv_path(name)
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as f:
        rows = [row for row in csv.DictReader(f) if row["model"] == search.model]
    seeds = search.seed_filter.get(name)
    return [row for row in rows if row["seed"] in seeds] if seeds else rows


def mean_std(values: list[float]) -> str:
    if not values:
        return "–"
    std = statistics.stdev(values) if len(values) > 1 else float("nan")
    return f"{100 * statistics.mean(values):.3f} ± {100 * std:.3f}" if len(values) > 1 else f"{100 * values[0]:.3f}"


def run_cells(rows: list[dict[str, str]]) -> str:
    """Table cells of a variant's runs: seeds | valid mean ± std | test mean ± std | per seed valid / test."""
    rows = sorted(rows, key=lambda r: r["seed"])
    per_seed = ", ".join(f"{r['seed']}: {100 * float(r['valid_auc']):.3f} / {100 * float(r['test_auc']):.3f}"
                         for r in rows)
    return (f"{','.join(r['seed'] for r in rows)} | {mean_std([float(r['valid_auc']) for r in rows])} | "
            f"{mean_std([float(r['test_auc']) for r in rows])} | {per_seed}")


def summary(search: Search) -> str:
    sources = ", ".join(f"{name}: `results/{rel}`" for name, rel in search.sources.items())
    lines = [
        f"# {search.title} on Frappe_x1: validation-set search",
        "",
        "Generated by `python benchmarks/final_search.py` from the CSVs in this folder (elsewhere: "
        f"{sources}). AUC ×100, mean ± sample std over seeds. Selection rule: highest mean valid AUC over "
        f"seeds 2021-2023. {search.caveat} {search.code}",
        "",
        "| variant | overrides | kernels | seeds | valid AUC ×100 | test AUC ×100 | per seed valid / test |",
        "|---|---|---|---|---:|---:|---|",
    ]
    ranked = []
    for name, (overrides, kernels, _) in search.variants.items():
        rows = [r for r in read_rows(search, name) if r["seed"] in SELECTION_SEEDS]
        if not rows:
            continue
        complete = len(rows) == len(SELECTION_SEEDS)
        ranked.append((statistics.mean(float(r["valid_auc"]) for r in rows) if complete else -1.0, name))
        lines.append(f"| {name} | `{overrides or '(none)'}` | {kernels} | {run_cells(rows)} |")
    best = max(ranked)[1] if ranked else None
    lines += ["", f"Selected by valid AUC: **{best}** ({search.variants[best][2]})." if best else "Nothing run yet.", ""]
    checks = [(name, base, kernels) for name, (base, kernels) in search.checks.items() if read_rows(search, name)]
    if checks:
        lines += ["Checks (never used for selection):", "",
                  "| variant | kernels | seeds | valid AUC ×100 | test AUC ×100 | per seed valid / test |",
                  "|---|---|---|---:|---:|---|"]
        for name, base, kernels in checks:
            lines.append(f"| {base} | {kernels} | {run_cells(read_rows(search, name))} |")
        lines += ["", "Pooled over every run above (selection seeds and checks, every kernel path):", "",
                  "| variant | runs | valid AUC ×100 | test AUC ×100 |", "|---|---:|---:|---:|"]
        for base in dict.fromkeys(["paper", best, *(b for _, b, _ in checks)]):
            rows = [r for r in read_rows(search, base) if r["seed"] in SELECTION_SEEDS]
            rows += [r for name, b, _ in checks if b == base for r in read_rows(search, name)]
            lines.append(f"| {base} | {len(rows)} | {mean_std([float(r['valid_auc']) for r in rows])} | "
                         f"{mean_std([float(r['test_auc']) for r in rows])} |")
        lines.append("")
    lines += ["Variants: " + "; ".join(f"{n} = {d}" for n, (_, _, d) in search.variants.items()) + ".", ""]
    return "\n".join(lines)


def main() -> None:
    write_or_check({RESULTS / s.folder / "summary.md": summary(s) for s in SEARCHES}, __doc__.splitlines()[0])


if __name__ == "__main__":
    main()
