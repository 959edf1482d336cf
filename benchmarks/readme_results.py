"""Write the generated results pages from the committed reports under results/.

    python benchmarks/readme_results.py            # rewrite docs/results.md, docs/frappe_x1_investigation.md
                                                   # and README.md's results block
    python benchmarks/readme_results.py --check    # exit 1 if any of them is out of date

docs/results.md holds every table; README.md keeps one short table per area between its
`<!-- results:begin -->` and `<!-- results:end -->` lines; docs/frappe_x1_investigation.md holds the
kernel-path, dropout-mask and FINAL search studies. Tables are copied from reports that code in this
repository wrote (`mtl_final.benchmark`, `benchmarks/*.py`) or computed here from the run CSVs and
speed JSONs with mtl_final.benchmark.report's functions. Provenance (git revision, machine, time of
each run) stays in the results files; the pages name the file each table comes from.
"""
from __future__ import annotations

import argparse
import csv
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from mtl_final.benchmark.paper_numbers import BARS_FINAL, paper_auc  # noqa: E402
from mtl_final.benchmark.report import format_mean_std, mean_interval  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
README = ROOT / "README.md"
RESULTS_DOC = ROOT / "docs" / "results.md"
INVESTIGATION = ROOT / "docs" / "frappe_x1_investigation.md"
BEGIN, END = "<!-- results:begin -->", "<!-- results:end -->"
ACCEPTANCE_MODELS = ("MLP", "FINAL_1B", "FINAL_2B_KD")

FRAPPE_CMD = ".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models all --seeds 2021,2022,2023 train.num_threads=1"
SPEED_CMD = ".venv/bin/python benchmarks/epoch_speed.py --config configs/benchmarks/frappe_x1/final_2b_kd.yaml --threads 2 --runs 3"
SPEED_JSONS = tuple(f"epoch_speed_frappe_final_2b_kd{s}.json" for s in
                    ("", "_torch", "_bf16", "_medium", "_epyc", "_epyc_medium", "_epyc_blas", "_epyc2", "_epyc3"))
LATEST_SPEED = "epoch_speed_frappe_final_2b_kd_epyc3.json"
NATIVE_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models MLP,FINAL_1B,FINAL_2B_KD "
              "--seeds 2021,2022,2023 --out results/frappe_x1_native train.num_threads=1")
NATIVE_ALL_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models all --seeds 2021,2022,2023 "
                  "--out results/frappe_x1_native_all train.num_threads=1")
SEEDS_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models FINAL_1B,FINAL_2B_KD "
             "--seeds 2024,2025,2026,2027,2028,2029 --out results/frappe_x1_native_seeds train.num_threads=1")
FUXICTR_CMD = ("FUXIENV/bin/python benchmarks/fuxictr_reference.py --model-src FINAL/src --model FINAL_1B "
               "--seeds 2021,...,2040 --out results/frappe_x1_fuxictr/final_1b.csv --jobs 2 --threads 1   "
               "# the setup and both commands: results/frappe_x1_fuxictr/")
TUNED_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models FINAL_2B_KD --seeds 2021,2022,2023 "
             "--out results/frappe_x1_native_tuned train.num_threads=1 \"model.block2.hidden_units=[400,400]\" block.dropout=0.2")
AB_RUNS = (  # JSON under results/, what head changed against base
    ("epoch_speed_ab_splitmix.json", "the fused kernels' SplitMix64 dropout masks against the mix32 ones"),
    ("epoch_speed_ab_w512.json", "the kernels built 512 bits wide against the 256-bit build"),
    ("epoch_speed_ab_matmul_medium.json", "train.matmul_precision=medium against highest (AMX CPU)"),
    ("epoch_speed_ab_export.json", "the ONNX export work (on the training path: two torch.export flag reads)"),
    ("epoch_speed_ab_export2.json", "the same, again"),
    ("epoch_speed_ab_cpu_matmul.json", "train.cpu_matmul=onednn against blas"),
    ("epoch_speed_ab_cpu_matmul_scope_final_2b_kd.json",
     "FINAL(2B)+KD: oneDNN for every float32 matmul against the fused kernels' only"),
    ("epoch_speed_ab_cpu_matmul_scope_dcnv2.json", "DCNv2 (cross layers unfused): the same change"),
    ("epoch_speed_ab_cpu_matmul_scope_autoint.json", "AutoInt+ (attention unfused): the same change"),
    ("epoch_speed_ab_fused_attention_autoint.json", "AutoInt+: attention core as one fused CPU op against PyTorch ops"),
    ("epoch_speed_ab_fused_attention_autoint_epyc.json", "AutoInt+: the same, on another CPU"),
    ("epoch_speed_ab_front_door.json",
     "the config spec, fast-path module, run-directory lock, sequence fields and calibration (1 thread)"),
)
BF16_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models FINAL_2B_KD --seeds 2021,2022,2023 "
            "--out results/frappe_x1_bf16 train.num_threads=1 train.precision=bf16")
MEDIUM_CMDS = (
    ".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models MLP,FINAL_1B,FINAL_2B_KD "
    "--seeds 2021,2022,2023 --out results/frappe_x1_matmul_medium train.num_threads=1 train.matmul_precision=medium",
    ".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models FINAL_1B,FINAL_2B_KD "
    "--seeds 2024,2025,2026,2027,2028,2029 --out results/frappe_x1_matmul_medium train.num_threads=1 "
    "train.matmul_precision=medium",
)
ONEDNN_CMD = (".venv/bin/python -m mtl_final.benchmark --dataset frappe_x1 --models FINAL_2B_KD --seeds 2021,2022,2023 "
              "--out results/frappe_x1_onednn train.num_threads=1")
HILLSTROM_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/mtl/hillstrom_*.yaml --name hillstrom "
                 "--variants mlp,final,final_dual_kd --seeds 2021,2022,2023 train.num_threads=1")
SIM_CMDS = (
    ".venv/bin/python -m mtl_final.benchmark --grid configs/mtl/sim_esmm.yaml --name sim "
    "--variants mlp,final,final_dual_kd --seeds 2021,2022,2023 train.num_threads=1",
    ".venv/bin/python -m mtl_final.benchmark --grid configs/mtl/sim_shared_bottom.yaml --name sim "
    "--variants mlp --seeds 2021,2022,2023 train.num_threads=1",
)
ML_SEQ_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/sequences/movielens_mlp_nohist.yaml "
              "configs/sequences/movielens_mlp_mean.yaml configs/sequences/movielens_din.yaml "
              "configs/sequences/movielens_final_attention.yaml --name movielens_seq --variants mlp "
              "--seeds 2021,2022,2023 --runs-dir DIR train.num_threads=1")
ML_NOUSER_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/sequences/movielens_nouser_mlp_nohist.yaml "
                 "configs/sequences/movielens_nouser_mlp_mean.yaml configs/sequences/movielens_nouser_din.yaml "
                 "--name movielens_seq_nouser --variants mlp --seeds 2021,2022,2023 --runs-dir DIR train.num_threads=1")
ML_OWNVOCAB_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/sequences/movielens_ownvocab_mlp_mean.yaml "
                   "--name movielens_seq_ownvocab --variants mlp --seeds 2021,2022,2023 --runs-dir DIR train.num_threads=1")
ML_DATA_CMD = ".venv/bin/python data_tools/movielens_sequences.py --raw DIR --out .cache/movielens_seq"
SIM2_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/sequences/sim2_esmm_nohist.yaml "
            "configs/sequences/sim2_esmm_mean.yaml configs/sequences/sim2_esmm_attention.yaml --name sim2_seq "
            "--variants final --seeds 2021,2022,2023 --runs-dir DIR train.num_threads=1")
CENSUS_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/mtl/census_shared_bottom.yaml "
              "configs/mtl/census_mmoe.yaml configs/mtl/census_ple.yaml --name census "
              "--variants mlp,final,final_dual_kd --seeds 2021,2022,2023 train.num_threads=1")
CENSUS_SINGLE_CMD = (".venv/bin/python -m mtl_final.benchmark --grid configs/mtl/census_single_income.yaml "
                     "--name census_single_income --variants mlp --seeds 2021,2022,2023 train.num_threads=1   "
                     "# and census_single_never_married")
RECHUB_CMD = ("RECHUBENV/bin/python benchmarks/torch_rechub_compare.py --seeds 2021,2022,2023 --threads 1   "
              "# its own venv: the setup is in the script's docstring")
# the simulator-with-histories steps: (label, model id) in order, and the CSV columns they are judged on
SIM2_STEPS = (("no history", "esmm_nohist"), ("mean pooling", "esmm_mean"), ("target attention", "esmm_attention"))
SIM2_STEP_COLUMNS = (("test_ctr_auc", "ctr AUC"), ("es_cvr_auc", "entire-space cvr AUC"))
SEQ_SPEED = (("epoch_speed_ab_sequences_attention.json",
              "two attention-pooled histories, max_len 50, against none (same data, same model)"),
             ("epoch_speed_ab_sequences_mean.json",
              "two mean-pooled histories, max_len 50, against none (same data, same model)"))

DDP_SPEED = ("epoch_speed_ddp_1proc_2threads.json", "epoch_speed_ddp_2procs_1thread.json",
             "epoch_speed_ddp_2procs_1thread_epyc2.json", "epoch_speed_ddp_2procs_1thread_syncbn_epyc2.json")
DDP_SPEED_CMD = ".venv/bin/python benchmarks/epoch_speed.py --config configs/benchmarks/frappe_x1/final_2b_kd.yaml --runs 3"
DDP_ACCURACY_CMD = (".venv/bin/python benchmarks/data_parallel.py --configs configs/benchmarks/frappe_x1/final_2b_kd.yaml,"
                    "configs/benchmarks/frappe_x1/final_1b.yaml --seeds 2021,2022,2023 --processes 2 --threads 1 "
                    "--runs-dir DIR --out results/frappe_x1_ddp")
DDP_SYNC_ACCURACY_CMD = (DDP_ACCURACY_CMD.replace("results/frappe_x1_ddp", "results/frappe_x1_ddp_syncbn")
                         + " distributed.sync_batchnorm=true")
# "(since abc1234)", "(up to abc1234)", "at abc1234": revision labels inside copied report text
_REVISION = re.compile(r"\s*\((?:since|up to|at) [0-9a-f]{7,40}\)|\s+at [0-9a-f]{7,40}\b")


# --- reading the reports -------------------------------------------------------------------

def read(rel: str) -> str:
    """The text of results/<rel>, with revision labels taken out (provenance stays in the file)."""
    return _REVISION.sub("", (RESULTS / rel).read_text(encoding="utf-8"))


def read_json(rel: str) -> dict[str, Any]:
    return json.loads((RESULTS / rel).read_text(encoding="utf-8"))


def section(text: str, heading: str) -> str:
    """Body of the markdown section whose heading line starts with `heading` (up to the next
    heading of the same or a higher level), stripped."""
    lines = text.splitlines()
    level = len(heading) - len(heading.lstrip("#"))
    for i, line in enumerate(lines):
        if line.startswith(heading):
            body = []
            for nxt in lines[i + 1:]:
                hashes = len(nxt) - len(nxt.lstrip("#"))
                if hashes and hashes <= level and nxt[hashes:hashes + 1] == " ":
                    break
                body.append(nxt)
            return "\n".join(body).strip()
    raise SystemExit(f"readme_results: no section {heading!r} in the report; regenerate it with mtl_final.benchmark")


def first_table(text: str) -> str:
    """The first markdown table (consecutive lines starting with '|')."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("|"))
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return "\n".join(lines[start:end])


def search_rows(summary: str, every_variant: bool = False) -> str:
    """The search summary's table (cut to the paper config and the selected variant unless
    every_variant), then its checks (further seeds, the other kernels)."""
    selected = summary.split("Selected by valid AUC: **", 1)[1].split("**", 1)[0]
    table = first_table(summary).splitlines()
    keep = [line for line in table[2:] if every_variant or line.split("|")[1].strip() in ("paper", selected)]
    if "Checks (" not in summary:
        return "\n".join([*table[:2], *keep])
    checks = first_table(summary.split("Checks (", 1)[1])
    pooled = first_table(summary.split("Pooled over", 1)[1])
    return "\n".join([*table[:2], *keep, "", "Checks, never used for selection:", "", checks, "",
                      "Pooled over every run of these tables:", "", pooled])


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _test_aucs(rows: list[dict[str, str]], model: str, seeds: set[int] | None = None) -> list[float]:
    return [float(r["test_auc"]) for r in rows
            if r["model"] == model and (seeds is None or int(r["seed"]) in seeds)]


def commands(*lines: str) -> str:
    return "\n".join("    " + line for line in lines)


def _percent(share: float | None) -> str:
    return "–" if share is None else f"{100 * share:.1f} %"


def _cpu(speed: dict[str, Any]) -> str:
    # speed JSONs written before the CPU was recorded come from a CPU with AMX-BF16
    return speed.get("cpu") or "Intel Xeon (amx_bf16)"


def _overrides(speed: dict[str, Any]) -> str:
    return " ".join(o for o in speed.get("overrides", []) if not o.startswith("data.")) or "–"


# --- tables computed here ------------------------------------------------------------------

def glance_table() -> str:
    """The acceptance models on Frappe_x1: ours (3 and 9 seeds), FuxiCTR 2.0.2 on the same files,
    the BARS log on the original train file, the paper. Test AUC ×100."""
    native = _csv_rows(RESULTS / "frappe_x1_native" / "frappe_x1.csv")
    nine = _csv_rows(RESULTS / "frappe_x1_native_seeds" / "frappe_x1.csv")
    lines = ["| model | ours, seeds 2021–23 | ours, 9 seeds: mean [95% interval] | "
             "FuxiCTR 2.0.2, same files: mean ± std (runs) | BARS log, original train (seed 2021) | paper |",
             "|---|---:|---|---|---:|---:|"]
    for model in ACCEPTANCE_MODELS:
        ours = _test_aucs(native, model, {2021, 2022, 2023})
        pooled = _test_aucs(nine, model)
        if len(pooled) >= 2:
            low, high = mean_interval([v * 100 for v in pooled])
            nine_cell = f"{statistics.fmean(pooled) * 100:.3f} [{low:.3f}, {high:.3f}] ({len(pooled)} runs)"
        else:
            nine_cell = "–"
        ref_path = RESULTS / "frappe_x1_fuxictr" / f"{model.lower()}.csv"
        ref = _test_aucs(_csv_rows(ref_path), model) if ref_path.exists() else []
        ref_cell = f"{format_mean_std(ref, 100)} ({len(ref)})" if ref else "–"
        bars = BARS_FINAL["frappe_x1"].get(model)
        paper = paper_auc("frappe_x1", model)
        lines.append(f"| {model} | {format_mean_std(ours, 100)} | {nine_cell} | {ref_cell} | "
                     f"{f'{bars[0] * 100:.2f}' if bars else '–'} | "
                     f"{f'{paper[0]:.2f} ({paper[1]})' if paper else '–'} |")
    return "\n".join(lines)


def speed_table(names: tuple[str, ...]) -> str:
    """One row per speed JSON of benchmarks/epoch_speed.py (FINAL(2B)+KD, one process)."""
    rows = ["| results file | cpu | overrides | kernels | cpu matmul | s / epoch | train samples/s | peak RSS MiB | "
            "the 3 runs' medians (s) | probe GFLOP/s | steal |",
            "|---|---|---|---|---|---:|---:|---:|---|---:|---:|"]
    for name in names:
        s = read_json(name)
        rows.append(f"| `{name}` | {_cpu(s)} | {_overrides(s)} | {s.get('kernels', 'torch')} | "
                    f"{s.get('cpu_matmul', 'blas')} | {s['median_seconds_per_epoch']} | "
                    f"{s['train_samples_per_s_at_median']:,} | {s['peak_rss_mib']} | "
                    f"{' / '.join(str(m) for m in s.get('runs_median_seconds', ['–']))} | "
                    f"{s.get('probe_gflops_at_median', '–')} | {_percent(s.get('steal_share_at_median'))} |")
    return "\n".join(rows)


def steps_table(rows: list[dict[str, str]], steps: tuple[tuple[str, str], ...],
                columns: tuple[tuple[str, str], ...]) -> str:
    """Each step's mean gain (×100) over the step before it, per column, against twice the larger of
    the two steps' seed standard deviations (the bar a gain must clear to stand out of seed noise)."""
    values = {model: {col: [float(r[col]) * 100 for r in rows if r["model"] == model and r[col]]
                      for col, _ in columns} for _, model in steps}
    lines = ["| step | " + " | ".join(f"{label}: gain | 2 × seed std | clears?" for _, label in columns) + " |",
             "|---|" + "---:|---:|:---:|" * len(columns)]
    for (before_label, before), (label, model) in zip(steps, steps[1:]):
        cells = []
        for col, _ in columns:
            a, b = values[before][col], values[model][col]
            if len(a) < 2 or len(b) < 2:
                cells += ["–", "–", "–"]
                continue
            gain = statistics.fmean(b) - statistics.fmean(a)
            bar = 2 * max(statistics.stdev(a), statistics.stdev(b))
            cells += [f"{gain:+.3f}", f"{bar:.3f}", "yes" if gain > bar else "no"]
        lines.append(f"| {before_label} → {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def compact_speed_table(names: tuple[str, ...]) -> str:
    """README's form of speed_table: the epoch time, throughput and memory."""
    rows = ["| cpu | s / epoch | train samples/s | peak RSS MiB | results file |", "|---|---:|---:|---:|---|"]
    for name in names:
        s = read_json(name)
        rows.append(f"| {_cpu(s)} | {s['median_seconds_per_epoch']} | {s['train_samples_per_s_at_median']:,} | "
                    f"{s['peak_rss_mib']} | `results/{name}` |")
    return "\n".join(rows)


def ab_command(ab: dict[str, Any], name: str) -> str:
    """The speed_ab command line that wrote results/<name>; BASE is the revision recorded in it."""
    overrides = [o if not o.startswith("data.root=") else "data.root=DIR"
                 for o in ab["overrides"] if not o.startswith("data.cache_dir=")]
    return (f".venv/bin/python benchmarks/speed_ab.py --base BASE --pairs {ab['pairs']} --config "
            f"{ab['config']} --threads {ab['threads']} --out results/{name}"
            + "".join(f" --head-override {o}" for o in ab.get("head_overrides", []))
            + "".join(f" {o}" for o in overrides))


def ab_table(runs: tuple[tuple[str, str], ...]) -> str:
    rows = ["| head against base | results file | pairs | base s / epoch | head s / epoch | head / base | paired t p |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for name, what in runs:
        ab = read_json(name)
        rows.append(f"| {what} | `{name}` | {ab['pairs']} | {ab['base_mean_s']} | {ab['head_mean_s']} | "
                    f"{ab['head_mean_s'] / ab['base_mean_s']:.2f} | {ab['paired_t_p']} |")
    return "\n".join(rows)


def ddp_speed_table() -> str:
    rows = ["| results file | processes × threads | overrides | s / epoch | train samples/s | "
            "peak RSS MiB (largest / all) | the 3 runs' medians (s) |",
            "|---|---|---|---:|---:|---|---|"]
    for name in DDP_SPEED:
        s = read_json(name)
        rows.append(f"| `{name}` | {s.get('processes', 1)} × {s['threads']} | {_overrides(s)} | "
                    f"{s['median_seconds_per_epoch']} | {s['train_samples_per_s_at_median']:,} | "
                    f"{s['peak_rss_mib']} / {s['peak_rss_mib_all_ranks']} | "
                    f"{' / '.join(str(m) for m in s['runs_median_seconds'])} |")
    return "\n".join(rows)


# --- docs/results.md, one function per area ------------------------------------------------

def frappe_section() -> str:
    frappe = read("frappe_x1.md")
    native_all = read("frappe_x1_native_all/frappe_x1.md")
    seeds = read("frappe_x1_native_seeds/frappe_x1.md")
    return "\n".join([
        "## Frappe_x1: the FINAL paper's Table 1 and Table 2",
        "",
        "The acceptance models at a glance (test AUC ×100; FuxiCTR 2.0.2 is the public reference\n"
        "implementation behind the BARS logs, run on our files by `benchmarks/fuxictr_reference.py`):",
        "",
        commands(NATIVE_CMD, SEEDS_CMD, FUXICTR_CMD),
        "",
        glance_table(),
        "",
        "Our Frappe_x1 train split is a rebuild with re-sampled negatives, harder than the original train\n"
        "file that BARS' and the paper's figures come from: on these files FuxiCTR's own FINAL lands where\n"
        "ours does over many seeds.",
        "",
        "### Every model, fused CPU kernels (mean ± std over seeds 2021–2023)",
        "",
        commands(NATIVE_ALL_CMD),
        "",
        first_table(native_all),
        "",
        section(native_all, "## FINAL family vs. the strongest baseline"),
        "",
        "CrossNetV2's low mean is a bimodal run, not a bug: each run either breaks out of a plateau at valid\n"
        "AUC 0.942 after 40–50 epochs or stops there; these three seeds stopped, three of six more broke\n"
        "out (the notes of `results/frappe_x1_native_all/frappe_x1.md`). MLP_FINAL and FINAL_1B print\n"
        "identical numbers on purpose: with `block=final` the MLP model is exactly the FINAL 1B architecture.",
        "",
        "Six more seeds of the two FINAL models, fixed before they ran, pooled with the three above\n"
        "(the interval is Student's t over the nine runs):",
        "",
        commands(SEEDS_CMD),
        "",
        first_table(seeds),
        "",
        first_table(section(seeds, "## 95% interval")),
        "",
        "FINAL(2B)+KD with the config selected on the validation set\n"
        "(`configs/benchmarks/frappe_x1/final_2b_kd_tuned.yaml`; the search is in\n"
        "[frappe_x1_investigation.md](frappe_x1_investigation.md)):",
        "",
        commands(TUNED_CMD),
        "",
        first_table(read("frappe_x1_native_tuned/frappe_x1.md")),
        "",
        "### Every model, PyTorch ops (the first full run)",
        "",
        "The same table made with PyTorch ops, before the fused CPU kernels became the default and before\n"
        "each epoch's shuffle was seeded from SeedSequence(seed, epoch); AutoInt's rows were run again\n"
        "after its attention became one fused CPU op (`results/frappe_x1.commands` has every run):",
        "",
        commands(FRAPPE_CMD),
        "",
        first_table(frappe),
        "",
        section(frappe, "## Significance"),
        "",
        "### Other precisions on the same seeds",
        "",
        "bfloat16 autocast (`train.precision=bf16`):",
        "",
        commands(BF16_CMD),
        "",
        first_table(read("frappe_x1_bf16/frappe_x1.md")),
        "",
        "`train.matmul_precision=medium`: tensors and fused kernels in float32, matmul inputs rounded to\n"
        "bfloat16 on AMX CPUs:",
        "",
        commands(*MEDIUM_CMDS),
        "",
        first_table(read("frappe_x1_matmul_medium/frappe_x1.md")),
        "",
        first_table(section(read("frappe_x1_matmul_medium/frappe_x1.md"), "## 95% interval")),
        "",
        "`train.cpu_matmul=onednn`: IEEE float32 in another summation order (what `auto` picks on AMD CPUs):",
        "",
        commands(ONEDNN_CMD),
        "",
        first_table(read("frappe_x1_onednn/frappe_x1.md")),
    ])


def speed_section() -> str:
    return "\n".join([
        "## Speed: FINAL(2B)+KD on Frappe_x1, one warm epoch (train + valid evaluation), 2 threads",
        "",
        commands(SPEED_CMD + " [overrides]"),
        "",
        speed_table(SPEED_JSONS),
        "",
        "s / epoch: median of 5 warm epochs, in the run (of 3 fresh processes) with the median of the\n"
        "three medians; `kernels` says which path ran (autocast always runs the modules); probe GFLOP/s: a\n"
        "fixed float32 [4096, 400]·[400, 400] matmul timed just before that epoch; steal: the share of CPU\n"
        "time the hypervisor gave elsewhere. Rows from different files ran on different machines and days;\n"
        "a virtual machine's speed drifts by ±25%, so changes are measured by interleaving single runs of\n"
        "two revisions, or two settings of one revision, back to back (`benchmarks/speed_ab.py`; BASE and\n"
        "both revisions are recorded in each JSON):",
        "",
        commands(*(ab_command(read_json(name), name) for name, _ in AB_RUNS)),
        "",
        ab_table(AB_RUNS),
        "",
        "FuxiCTR 2.3.10 needs 8.5 s per epoch for the same config on the machine of the first row.",
    ])


def data_parallel_section() -> str:
    return "\n".join([
        "## Data-parallel training (torchrun, gloo, one 2-core machine)",
        "",
        "FINAL(2B)+KD on Frappe_x1, one warm epoch: one process with 2 threads against two processes with one\n"
        "thread each (the first two rows ran back to back; the last two, on another day, two processes\n"
        "without and with `distributed.sync_batchnorm`, whose BatchNorm layers leave the fused kernels):",
        "",
        commands(DDP_SPEED_CMD + " --threads 2",
                 DDP_SPEED_CMD + " --threads 1 --processes 2 [distributed.sync_batchnorm=true]"),
        "",
        ddp_speed_table(),
        "",
        "Accuracy of 2-process runs (each rank's BatchNorm sees its half of the batch and draws its own\n"
        "dropout masks, so these are other runs of the same configs, not the one-process numbers again):",
        "",
        commands(DDP_ACCURACY_CMD),
        "",
        first_table(read("frappe_x1_ddp/data_parallel.md")),
        "",
        "The same with `distributed.sync_batchnorm=true` (BatchNorm over the whole 4096-row batch):",
        "",
        commands(DDP_SYNC_ACCURACY_CMD),
        "",
        first_table(read("frappe_x1_ddp_syncbn/data_parallel.md")),
    ])


def multitask_section() -> str:
    return "\n".join([
        "## Multi-task",
        "",
        "### Hillstrom (real visit → conversion funnel): 4 models × 3 towers × 3 seeds",
        "",
        commands(HILLSTROM_CMD),
        "",
        first_table(section(read("hillstrom.md"), "## Test AUC")),
        "",
        "### Census-income (two independent tasks): 3 models × 3 towers × 3 seeds, single-task baselines",
        "",
        commands(CENSUS_CMD, CENSUS_SINGLE_CMD),
        "",
        first_table(section(read("census.md"), "## Test AUC")),
        "",
        first_table(section(read("census_single_income.md"), "## Test AUC")),
        "",
        first_table(section(read("census_single_never_married.md"), "## Test AUC")),
        "",
        "torch-rechub 0.9.0 on the same files, encoded rows and monitor:",
        "",
        commands(RECHUB_CMD),
        "",
        first_table(read("census_rechub/census_rechub.md")),
        "",
        "### Funnel simulator (200k impressions): ESMM towers and ESMM against clicked-only CVR",
        "",
        commands(*SIM_CMDS),
        "",
        first_table(section(read("sim.md"), "## Test AUC")),
        "",
        SIM_NOTE,
    ])


SIM_NOTE = ("`entire-space cvr AUC` scores pCVR on every test impression, clicked or not, against a conversion\n"
            "label drawn from the simulator's true pCVR (the oracle, true pCVR itself, reaches ≈ 79 on it).\n"
            "shared_bottom/mlp is the clicked-only CVR model (masked loss). These runs drew that label with each\n"
            "run's own seed, so their entire-space column is scored against different labels per seed and its\n"
            "spread is inflated; runs now score against labels fixed by the data.")


def sequences_section() -> str:
    ml = read("movielens_seq.md")
    nouser = read("movielens_seq_nouser.md")
    sim2 = read("sim2_seq.md")
    return "\n".join([
        "## Behaviour sequences",
        "",
        "### MovieLens-100K (like = rating ≥ 4; the user's previous ≤ 20 items and their genres)",
        "",
        commands(ML_DATA_CMD, ML_SEQ_CMD),
        "",
        first_table(section(ml, "## Test AUC")),
        "",
        first_table(section(ml, "## Test logloss")),
        "",
        "Histories do not help here, and attention does not beat mean pooling. The same comparison without\n"
        "the `user_id` field, whose embedding already learns each user's taste from train (every test user\n"
        "has train rows, and the split is by time within each user):",
        "",
        commands(ML_NOUSER_CMD),
        "",
        first_table(section(nouser, "## Test AUC")),
        "",
        "Histories hurt without `user_id` too, so that is not the reason. Nor is the history sharing the\n"
        "candidate's embedding rows: mean-pooled histories in tables of their own do no better:",
        "",
        commands(ML_OWNVOCAB_CMD),
        "",
        first_table(section(read("movielens_seq_ownvocab.md"), "## Test AUC")),
        "",
        "What the data show instead: MovieLens-100K's timestamps are rating-session times (97.6% of the gaps\n"
        "between a user's consecutive ratings are under 10 minutes, the median gap is 0 s:\n"
        "`python benchmarks/movielens_session_gaps.py --data .cache/movielens_seq`), so a row's \"history\" is\n"
        "mostly the rest of the same rating session rather than behaviour before an impression; the\n"
        "attention models also reach their best valid AUC epochs earlier than the others and overfit.",
        "",
        "### Funnel simulator version 2 (1M impressions with behaviour histories), ESMM with FINAL towers",
        "",
        commands(SIM2_CMD),
        "",
        first_table(section(sim2, "## Test AUC")),
        "",
        first_table(section(sim2, "## Against the simulator's ground truth")),
        "",
        "Each step against the one before (test AUC ×100, seeds 2021–2023):",
        "",
        steps_table(_csv_rows(RESULTS / "sim2_seq.csv"), SIM2_STEPS, SIM2_STEP_COLUMNS),
        "",
        "Speed of the same model with and without two history fields of max_len 50, interleaved runs:",
        "",
        commands(*(ab_command(read_json(name), name) for name, _ in SEQ_SPEED)),
        "",
        ab_table(SEQ_SPEED),
        "",
        sequence_speed_line(),
    ])


def sequence_speed_line() -> str:
    """The history fields' cost from the sequence A/Bs: epoch-time ratio, train samples/s and peak RSS
    (means over each side's runs)."""
    def mean(runs: list[dict[str, float]], key: str) -> float:
        return statistics.fmean(r[key] for r in runs)

    parts = []
    for name, what in SEQ_SPEED:
        ab = read_json(name)
        parts.append(f"{what.split(',')[0]}: {ab['head_mean_s'] / ab['base_mean_s']:.2f}× the epoch time, "
                     f"{mean(ab['base_runs'], 'train_samples_per_s'):,.0f} → "
                     f"{mean(ab['head_runs'], 'train_samples_per_s'):,.0f} train samples/s, peak RSS "
                     f"{mean(ab['base_runs'], 'peak_rss_mib'):,.0f} → {mean(ab['head_runs'], 'peak_rss_mib'):,.0f} MiB")
    return ("History fields of max_len 50 against none, same data and model (interleaved A/B, "
            "`results/epoch_speed_ab_sequences_*.json`): " + "; ".join(parts) + ".")


def results_doc() -> str:
    """docs/results.md: every results table, with the command that made it."""
    return "\n".join([
        "# Results",
        "",
        "Generated by `python benchmarks/readme_results.py` from the reports under `results/`, each written by\n"
        "code in this repository; the command that produced each table stands above it, and each report\n"
        "file records the git revision, machine and time of every run. All runs: 2 CPU cores, no GPU;\n"
        "benchmark runs used 1 torch thread each, two or three at a time.",
        "",
        frappe_section(),
        "",
        speed_section(),
        "",
        data_parallel_section(),
        "",
        multitask_section(),
        "",
        sequences_section(),
    ]) + "\n"


# --- README.md's results block: one short table per area ----------------------------------

def readme_block() -> str:
    sim = first_table(section(read("sim.md"), "## Test AUC"))
    return "\n".join([
        BEGIN,
        "Paper reproduction, Frappe_x1 (test AUC ×100):",
        "",
        commands(NATIVE_CMD),
        "",
        glance_table(),
        "",
        "Multi-task, funnel simulator (test AUC ×100; shared_bottom = clicked-only CVR):",
        "",
        commands(SIM_CMDS[0]),
        "",
        sim,
        "",
        "Behaviour sequences, funnel simulator version 2 (1M impressions), ESMM with FINAL towers (test AUC ×100;\n"
        "MovieLens-100K and each step against seed noise in docs/results.md):",
        "",
        commands(SIM2_CMD),
        "",
        first_table(section(read("sim2_seq.md"), "## Test AUC")),
        "",
        sequence_speed_line(),
        "",
        "Speed, FINAL(2B)+KD on Frappe_x1, 2 threads (the latest measurement; A/B ratios in docs/results.md):",
        "",
        commands(SPEED_CMD),
        "",
        compact_speed_table((LATEST_SPEED,)),
        END,
    ])


def investigation_doc() -> str:
    """docs/frappe_x1_investigation.md: the longer Frappe_x1 studies behind docs/results.md."""
    kernel_paths = read("frappe_x1_kernels.md")
    search = read("frappe_x1_2b_kd_search/summary.md")
    search_1b = read("frappe_x1_1b_search/summary.md")
    search_eq1 = read("frappe_x1_1b_eq1_search/summary.md")
    search_2b_eq1 = read("frappe_x1_2b_kd_eq1_search/summary.md")
    parts = [
        "# Frappe_x1: kernel paths, dropout masks and FINAL searches",
        "",
        "Generated by `python benchmarks/readme_results.py` from the reports under `results/`, like\n"
        "[results.md](results.md), which has the headline tables. Test and valid AUC ×100.",
        "",
        "Both paths over every seed run with the same data orders (`python benchmarks/kernel_paths.py`, from\n"
        "the CSVs under `results/frappe_x1_kernels/`; every run of ours in this and the next tables shuffled with\n"
        "seed + epoch):",
        "",
        first_table(kernel_paths),
        "",
        "Earlier versions of the fused kernels drew their dropout masks from a 32-bit hash,\n"
        "mix32(mix32(e + key_lo) ^ key_hi). On FINAL 1B (dropout 0.2) its runs spread more from seed to seed\n"
        "than PyTorch ops' and ended lower on average; PyTorch ops drawing the same masks did the same, and\n"
        "PyTorch ops drawing SplitMix64 masks (same key draws) did not. So the kernel moved to\n"
        "SplitMix64's finaliser of key + (e + 1)·golden, with 64-bit element ids, and the test below was\n"
        "fixed before its runs: FINAL 1B on fresh seeds 2041–2070 on each path, Welch t-test of the means,\n"
        "Levene test of the spreads, with the mix32 kernel's runs of the same seeds beside it:",
        "",
        first_table(kernel_paths.split("The test planned before", 1)[1]),
        "",
        "Why mix32's masks trained worse is not understood: they pass every check we made (keep rate; row\n"
        "and column keep counts with binomial spread; no correlation between neighbouring elements, the two\n"
        "halves of a FINAL layer, rows or steps). Where a FINAL 1B run lands depends mostly on when its first\n"
        "plateau falls: the valid AUC at lr 1e-3 is noisy, and an early drop to 1e-4 costs the run\n"
        "(`benchmarks/lr_schedule_report.py`). The mix32 kernel's runs against both paths:",
        "",
        first_table(kernel_paths.split("The fused kernels up to 4e6081c", 1)[1]),
        "",
        "Given the same dropout masks the two paths are the same computation: trained side by side, they\n"
        "drift apart no faster than two PyTorch-ops copies whose initial weights differ by 1e-7\n"
        "(`benchmarks/path_divergence.py`). PyTorch ops with the mix32 kernel's masks\n"
        "(`benchmarks/hash_mask_dropout.py --masks mix32`), and with the SplitMix64 masks (`--masks splitmix64`):",
        "",
        first_table(kernel_paths.split("separate the two:", 1)[1]),
        "",
        first_table(kernel_paths.split("The same with the SplitMix64 masks", 1)[1]),
        "",
        "The public reference on the same files: FuxiCTR v2.0.2's FINAL, the code behind the BARS logs, with\n"
        "its own data pipeline and trainer, given the parameters of our configs by\n"
        "`benchmarks/fuxictr_reference.py` (CSVs in `results/frappe_x1_fuxictr/`):",
        "",
        first_table(kernel_paths.split("the code of the BARS logs", 1)[1]),
        "",
        "Grouped by the dropout masks each run drew: each hash (the fused kernel with it, and PyTorch ops\n"
        "drawing its masks) against PyTorch's generator (PyTorch ops, and FuxiCTR). The mix32 grouping was\n"
        "made after its runs were seen; read it as the lead that the SplitMix64 test above followed.",
        "",
        first_table(kernel_paths.split("Grouped by the dropout masks", 1)[1]),
        "",
        "FINAL(2B)+KD with the config selected on the validation set (`configs/benchmarks/frappe_x1/"
        "final_2b_kd_tuned.yaml`:\nblock 2 two layers deep, dropout 0.2 in block 1), against the paper config "
        "it came from; the whole\nsearch, its selection rule and every command are in "
        "`results/frappe_x1_2b_kd_search/` (`python benchmarks/final_search.py`\nwrites its summary):",
        "",
        search_rows(search),
        "",
        "By test AUC the selected config is ahead of the paper config on the mix32 kernel (seeds 2021–2026),\n"
        "level with it on PyTorch ops (2021–2023; the paper rows are in `results/frappe_x1.csv`) and behind\n"
        "it on the SplitMix64 kernel (2021–2023). Pooled, the two are within the seed noise of each other\n"
        "and neither averages 0.9850: what the selection found was mostly noise.",
        "",
        "The same search for FINAL 1B (`results/frappe_x1_1b_search/`; all 7 variants were fixed before any\n"
        "ran) selects the paper config itself:",
        "",
        search_rows(search_1b, every_variant=True),
        "",
        "The forms of the layer itself, on the acceptance code: the paper's aggregation x_l = h_1 + h_2 (eq. 1),\n"
        "σ = tanh (the MindSpore implementation) and N = 3, against the reference's N = 2 concat with identity\n"
        "σ (`results/frappe_x1_1b_eq1_search/`; variants and check seeds fixed before any ran):",
        "",
        search_rows(search_eq1, every_variant=True),
        "",
        "All three forms led on seeds 2021–2023, by valid and by test AUC. On the six fresh seeds the summed\n"
        "form is level with the reference form and tanh falls behind it: the lead was seed noise (N = 3 was\n"
        "not checked). For FINAL(2B)+KD\n"
        "(`results/frappe_x1_2b_kd_eq1_search/`) sum and tanh in both blocks do not lead even on 2021–2023:",
        "",
        search_rows(search_2b_eq1, every_variant=True),
        "",
    ]
    return "\n".join(parts) + "\n"




def outputs() -> dict[Path, str]:
    """Every generated file and its expected text."""
    text = README.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"readme_results: {README} has no {BEGIN} ... {END} block to replace")
    readme = text[: text.index(BEGIN)] + readme_block() + text[text.index(END) + len(END):]
    return {README: readme, RESULTS_DOC: results_doc(), INVESTIGATION: investigation_doc()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file differs")
    args = parser.parse_args()
    expected = outputs()
    if args.check:
        stale = [p for p, new in expected.items() if not p.exists() or p.read_text(encoding="utf-8") != new]
        for p in stale:
            print(f"readme_results: {p.relative_to(ROOT)} is out of date; run python benchmarks/readme_results.py")
        sys.exit(1 if stale else 0)
    for path, new in expected.items():
        path.write_text(new, encoding="utf-8")
        print(f"{path.relative_to(ROOT)} rewritten ({len(new.splitlines())} lines)")


if __name__ == "__main__":
    main()
