"""Seconds per warm epoch (train + valid evaluation) of a benchmark config, with peak RSS.

    python benchmarks/epoch_speed.py --config configs/benchmarks/frappe_x1/final_2b_kd.yaml --threads 2 --runs 3

Builds (or reuses) the encoded data cache, runs one warm-up epoch, then times `--epochs` epochs of
training followed by a full valid evaluation each, exactly as the Trainer does them. With --runs N
it does that in N fresh processes, one after another, and prints the JSON of the run whose median
epoch is the median of the N, with every run's median in "runs_median_seconds" (a shared machine
drifts between runs minutes apart; one run can land on a slow or a fast spell). "kernels" says
whether the fused CPU kernels ran (train.kernels=native, buildable here, float32) or PyTorch ops only;
"matmul_precision" is train.matmul_precision (medium: float32 matmuls on bfloat16-rounded inputs).

--processes P > 1 measures data-parallel training: the script starts itself under torchrun with P
processes of --threads threads each (gloo), every rank trains its shard of each global batch through
DDP and scores its share of the valid rows, exactly as `torchrun ... -m mtl_final.train` does; times
are rank 0's, "peak_rss_mib" is the largest rank's and "peak_rss_mib_all_ranks" their sum.

Each timed epoch is preceded by a machine probe: the GFLOP/s of a fixed float32 [4096, 400]·[400, 400]
matmul (this model's largest) on the same threads, and the epoch is followed by the share of CPU time
the hypervisor gave to others (/proc/stat "steal"; null where that file is missing). On a shared VM a
slow epoch with a slow probe is the machine, not the code. "cpu" names the CPU model and its AMX /
AVX512-BF16 / AVX-512 flags (train.matmul_precision=medium rounds to bfloat16 only with AMX).
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

from mtl_final import distributed, kernels
from mtl_final.benchmark.report import git_revision
from mtl_final.config import load_config
from mtl_final.cpuinfo import cpu_info
from mtl_final.data.batches import BatchLoader
from mtl_final.models import build_model
from mtl_final.train.run import load_store, seed_everything
from mtl_final.train.runtime import configure_cpu, configure_runtime
from mtl_final.train.trainer import Trainer


PROBE_SHAPE = (4096, 400, 400)  # rows, inner, out: FINAL(2B)+KD's largest matmul on Frappe_x1


def probe_gflops(reps: int = 20) -> float:
    """GFLOP/s of `reps` float32 [rows, inner]·[inner, out] matmuls on torch's current threads (after one
    untimed call), at the "highest" matmul precision; a reading of how fast this machine multiplies right now."""
    rows, inner, out = PROBE_SHAPE
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(rows, inner, generator=gen), torch.randn(inner, out, generator=gen)
    precision = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")  # the same IEEE float32 reading whatever the run sets
    try:
        torch.mm(a, b)
        start = time.perf_counter()
        for _ in range(reps):
            torch.mm(a, b)
        seconds = time.perf_counter() - start
    finally:
        torch.set_float32_matmul_precision(precision)
    return round(2 * rows * inner * out * reps / seconds / 1e9, 1)


def cpu_ticks(stat: Path = Path("/proc/stat")) -> tuple[int, int] | None:
    """(steal, all) ticks of the aggregate "cpu" line of /proc/stat, or None where it cannot be read.
    The columns are user nice system idle iowait irq softirq steal [guest guest_nice]; guest time is
    already counted in user, so "all" sums the first eight."""
    try:
        fields = stat.read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if len(fields) < 9 or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]
    return ticks[7], sum(ticks)


CPU_FEATURES = ("amx_bf16", "avx512_bf16", "avx512f")  # what decides the bfloat16 and fused-kernel paths


def cpu_name(cpuinfo: Path = Path("/proc/cpuinfo")) -> str | None:
    """The CPU's model name and which of CPU_FEATURES it has, e.g. "AMD EPYC (avx512_bf16, avx512f)";
    None where /proc/cpuinfo cannot be read."""
    fields = cpu_info(cpuinfo)
    if not fields:
        return None
    flags = set(fields.get("flags", "").split())
    name = fields.get("model name", "unknown CPU")
    return f"{name} ({', '.join(f for f in CPU_FEATURES if f in flags) or 'none of ' + '/'.join(CPU_FEATURES)})"


def steal_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all CPU ticks between two `cpu_ticks` readings that went to steal, or None."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return round((after[0] - before[0]) / (after[1] - before[1]), 4)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=5, help="timed epochs after one warm-up epoch")
    parser.add_argument("--profile", action="store_true", help="print a torch.profiler table of one epoch")
    parser.add_argument("--runs", type=int, default=1, help="fresh processes; report the median one")
    parser.add_argument("--processes", type=int, default=1,
                        help="data-parallel processes (torchrun, gloo), each with --threads threads")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.runs < 1 or args.processes < 1:
        parser.error(f"--runs and --processes must be >= 1, got {args.runs} and {args.processes}")
    if args.runs > 1:
        if args.profile:
            parser.error("--profile profiles one run; use it without --runs")
        print(json.dumps(median_of_runs(args), indent=2))
        return
    if args.processes > 1 and distributed.launched_world_size() == 1:
        print(launch_processes(args), end="")
        return
    configure_cpu(args.threads)
    cfg = load_config(args.config, ["train.progress=false", "train.tensorboard=false", *args.overrides])
    dist = distributed.init_from_env(cfg["distributed"]["backend"], torch.device("cpu"))
    seed_everything(cfg["seed"])
    schema, _, store = distributed.main_first(lambda: load_store(cfg, log=lambda s: None), dist)
    labels = {t.name: t.label for t in (*schema.tasks, *schema.parent_tasks)}
    train, valid = (store.split(s).to_tensors(labels) for s in ("train", "valid"))
    model = build_model(cfg, store.feature_spec, list(schema.tasks))
    distributed.seed_rank_streams(cfg["seed"], dist)
    runtime = configure_runtime(cfg["train"], torch.device("cpu"), log=lambda s: None)
    trainer = Trainer(model, cfg, run_dir=None, log=lambda s: None, dist=dist)
    loader = BatchLoader(train, cfg["train"]["batch_size"], shuffle=True, seed=cfg["seed"],
                         shard=(dist.rank, dist.world_size))
    params = [p for p in trainer.model.parameters() if p.requires_grad]

    def epoch(e: int) -> tuple[float, float]:
        """One epoch of training, then the valid evaluation; returns (train s, eval s)."""
        start = time.perf_counter()
        loader.set_epoch(e)
        trainer.model.train()
        for batch in loader:
            trainer.train_step(batch, params)
        trained = time.perf_counter()
        trainer.evaluate(valid)
        return trained - start, time.perf_counter() - trained

    epoch(0)
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            epoch(99)
        print(prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total", row_limit=40))
    split_times, probes, steals = [], [], []
    for e in range(1, args.epochs + 1):
        probes.append(probe_gflops())
        ticks = cpu_ticks()
        split_times.append(epoch(e))
        steals.append(steal_share(ticks, cpu_ticks()))
    times = [t + v for t, v in split_times]
    median = sorted(times)[len(times) // 2]
    at_median = times.index(median)
    rss = distributed.gather_objects(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, dist)
    uses_kernels = kernels.library() is not None and not trainer.bf16  # autocast (bf16) runs the modules
    trainer.close()
    distributed.shutdown()
    if not dist.is_main:
        return
    result = {
        "config": args.config, "overrides": [o for o in args.overrides if not o.startswith("data.")],
        "threads": args.threads, "processes": dist.world_size, "precision": cfg["train"]["precision"],
        "matmul_precision": cfg["train"]["matmul_precision"],
        "kernels": "native" if uses_kernels else "torch",
        "cpu_matmul": runtime.cpu_matmul,  # the float32 matmuls' backend: blas (MKL) or onednn
        "median_seconds_per_epoch": round(median, 3),
        "min_seconds_per_epoch": round(min(times), 3), "all_epochs_s": [round(t, 3) for t in times],
        "median_train_seconds": round(sorted(t for t, _ in split_times)[len(times) // 2], 3),
        "median_valid_eval_seconds": round(sorted(v for _, v in split_times)[len(times) // 2], 3),
        "train_rows": int(train.cat.shape[0]), "valid_rows": int(valid.cat.shape[0]),
        "train_samples_per_s_at_median": round(train.cat.shape[0] / median),
        "peak_rss_mib": round(max(rss)), "peak_rss_mib_all_ranks": round(sum(rss)),
        "probe_gflops": probes, "probe_gflops_at_median": probes[at_median],
        "steal_share": steals, "steal_share_at_median": steals[at_median],
        "cpu": cpu_name(), "torch": torch.__version__, "git": git_revision(),
    }
    print(json.dumps(result, indent=2))


def median_of_runs(args: argparse.Namespace) -> dict:
    """Run this script --runs times in fresh processes; the median run's result plus every run's median."""
    command = [sys.executable, __file__, "--config", args.config, "--threads", str(args.threads),
               "--epochs", str(args.epochs), "--processes", str(args.processes), *args.overrides]
    results = []
    for _ in range(args.runs):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"epoch_speed: a run failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
        results.append(json.loads(done.stdout))
    medians = [r["median_seconds_per_epoch"] for r in results]
    chosen = dict(sorted(results, key=lambda r: r["median_seconds_per_epoch"])[len(results) // 2])
    chosen["runs_median_seconds"] = medians
    return chosen


def launch_processes(args: argparse.Namespace) -> str:
    """This script under torchrun with --processes ranks; returns rank 0's JSON."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.processes}",
               __file__, "--config", args.config, "--threads", str(args.threads), "--epochs", str(args.epochs),
               "--processes", str(args.processes), *args.overrides]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"epoch_speed: the {args.processes}-process run failed (exit {done.returncode}):\n"
                         f"{done.stderr[-2000:]}")
    return done.stdout


if __name__ == "__main__":
    main()
