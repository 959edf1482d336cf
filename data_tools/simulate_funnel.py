"""Generate the simulated Ali-CCP-like ad funnel dataset.

Usage: python data_tools/simulate_funnel.py --out DIR --rows N --seed S [--format csv|parquet] [--version 1|2]

Version 2 adds behaviour histories (hist_items, hist_cats), selection bias and the stored
counterfactual label cvr_entire (see mtl_final/data/simulator.py).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without install

from mtl_final.data.simulator import GENERATOR_VERSIONS, simulate_funnel  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv``, generate the dataset, print its meta.json summary; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, type=Path, help="output folder")
    ap.add_argument("--rows", type=int, default=200_000, help="total rows over train/valid/test")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--format", choices=("csv", "parquet"), default="parquet")
    ap.add_argument("--chunk-rows", type=int, default=1_000_000, help="rows buffered per write")
    ap.add_argument("--version", type=int, choices=sorted(GENERATOR_VERSIONS), default=1,
                    help="generator version (1: funnel-sim-1, 2: funnel-sim-2 with histories)")
    ap.add_argument("--splits", type=float, nargs=3, default=(0.8, 0.1, 0.1), metavar=("TRAIN", "VALID", "TEST"))
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    out = simulate_funnel(args.out, n_rows=args.rows, seed=args.seed, chunk_rows=args.chunk_rows,
                          splits=tuple(args.splits), format=args.format, version=args.version)
    meta = json.loads((out / "meta.json").read_text())
    print(f"wrote {meta['n_rows']} rows ({meta['generator_version']}) to {out} in {time.perf_counter() - t0:.1f}s: "
          f"rows {meta['rows']}, click rate {meta['click_rate']:.4f}, "
          f"conversion rate {meta['conversion_rate']:.4f}, cvr|click {meta['cvr_given_click']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
