"""Epoch time of this checkout against another git revision, in interleaved fresh processes.

    python benchmarks/speed_ab.py --base 4e6081c --pairs 4 --out results/epoch_speed_ab.json \
        --config configs/benchmarks/frappe_x1/final_2b_kd.yaml --threads 2 [overrides ...]
    python benchmarks/speed_ab.py --base HEAD --head-override train.matmul_precision=medium ...

Epoch times on a shared VM drift by ±25% within minutes, so two revisions measured one after the
other differ by when they ran. This script checks `--base` out into a temporary git worktree and
alternates single `benchmarks/epoch_speed.py --runs 1` processes of the base and of this checkout
(base first, then head, `--pairs` times). Each process imports the package and runs the script of
its own tree (PYTHONPATH), from this checkout's root with this checkout's config, so both sides
train the same config on the same data; `--head-override KEY=VALUE` (repeatable) adds an override
to the head side only, so `--base HEAD` compares two settings of one revision. It writes every run's
median epoch time per side, their means, and the paired differences head − base (mean and the
two-sided paired t-test p) to `--out` as JSON.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from scipy import stats

from mtl_final.benchmark.report import git_revision

ROOT = Path(__file__).resolve().parent.parent


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=True).stdout.strip()


def one_epoch_run(tree: Path, config: str, threads: int, overrides: list[str]) -> dict:
    """One fresh `epoch_speed.py --runs 1` process of the package in `tree`, run from this checkout's
    root (relative data paths resolve alike for both sides); its JSON result."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    done = subprocess.run([sys.executable, str(tree / "benchmarks" / "epoch_speed.py"), "--config", config,
                           "--threads", str(threads), "--runs", "1", *overrides],
                          cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"speed_ab: a run in {tree} failed (exit {done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def summarise(base: list[float], head: list[float]) -> dict:
    """Means per side and the paired differences head − base (seconds per epoch)."""
    diffs = [h - b for b, h in zip(base, head)]
    return {"base_mean_s": round(statistics.mean(base), 3), "head_mean_s": round(statistics.mean(head), 3),
            "head_minus_base_mean_s": round(statistics.mean(diffs), 3),
            "paired_t_p": round(float(stats.ttest_rel(head, base).pvalue), 3) if len(diffs) > 1 else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="git revision to compare against")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--config", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the JSON here (default: print it)")
    parser.add_argument("--head-override", action="append", default=[], metavar="KEY=VALUE",
                        help="an override for the head side only (repeatable)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    if args.pairs < 1:
        parser.error("--pairs must be >= 1")
    base_rev = git("rev-parse", "--short", args.base)
    head_rev = git_revision()
    config = str(Path(args.config).resolve())
    sides: dict[str, list[float]] = {"base": [], "head": []}
    # each run's throughput and peak resident memory, for what the s/epoch pairs do not show
    throughput: dict[str, list[dict[str, float]]] = {"base": [], "head": []}
    with tempfile.TemporaryDirectory(prefix="speed_ab_") as tmp:
        base_tree = Path(tmp) / "base"
        git("worktree", "add", "--detach", str(base_tree), base_rev)
        try:
            for _ in range(args.pairs):
                for side, tree, extra in (("base", base_tree, []), ("head", ROOT, args.head_override)):
                    result = one_epoch_run(tree, config, args.threads, [*args.overrides, *extra])
                    sides[side].append(result["median_seconds_per_epoch"])
                    throughput[side].append({"train_samples_per_s": result["train_samples_per_s_at_median"],
                                             "peak_rss_mib": result["peak_rss_mib"]})
                    print(f"{side} {result['git']}: {result['median_seconds_per_epoch']} s/epoch", file=sys.stderr)
        finally:
            git("worktree", "remove", "--force", str(base_tree))
    report = {"config": args.config, "threads": args.threads, "overrides": args.overrides,
              "head_overrides": args.head_override, "base": base_rev,
              "head": head_rev, "pairs": args.pairs, "base_s": sides["base"], "head_s": sides["head"],
              "base_runs": throughput["base"], "head_runs": throughput["head"],
              **summarise(sides["base"], sides["head"])}
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n", encoding="utf-8")
    print(text)


if __name__ == "__main__":
    main()
