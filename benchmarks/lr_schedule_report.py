"""When did each run first plateau, and what did it end with? From run directories' TensorBoard events.

    python benchmarks/lr_schedule_report.py RUN_DIR [RUN_DIR ...]     # e.g. runs/benchmarks/frappe_x1/FINAL_1B/seed*

Under the paper protocol the lr drops ×10 at the first validation that does not improve. On Frappe_x1
the valid AUC at lr 1e-3 is noisy, so the first miss falls anywhere from epoch 5 to 13, and a run
whose first miss comes early spends fewer epochs at lr 1e-3. Per run: the epoch of that first miss,
the best valid AUC before it, the best valid AUC and the test AUC (metrics.json); then the
correlation of the first-miss epoch with the test AUC over the runs.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def schedule(run_dir: Path) -> dict[str, float]:
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0}).Reload()
    lr = [e.value for e in events.Scalars("lr")]  # the lr each validated stretch trained with
    monitor = [e.value for e in events.Scalars("valid/monitor")]
    decayed = next((i for i, v in enumerate(lr) if v < lr[0]), len(lr))  # first evaluation after a drop
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    return {"first_miss_epoch": decayed, "valid_before": max(monitor[:decayed]), "valid_best": max(monitor),
            "test_auc": next(iter(metrics["test"].values()))["auc"]}


def main(paths: list[str]) -> None:
    if not paths:
        raise SystemExit(__doc__)
    rows = [(Path(p), schedule(Path(p))) for p in paths]
    print("run | first miss (epoch) | valid AUC before | best valid AUC | test AUC")
    for path, r in sorted(rows, key=lambda pr: pr[1]["first_miss_epoch"]):
        print(f"{path} | {r['first_miss_epoch']} | {r['valid_before']:.4f} | {r['valid_best']:.5f} | {r['test_auc']:.5f}")
    if len(rows) > 2:
        x = np.array([r["first_miss_epoch"] for _, r in rows], dtype=float)
        y = np.array([r["test_auc"] for _, r in rows])
        print(f"correlation(first miss epoch, test AUC) over {len(rows)} runs: {np.corrcoef(x, y)[0, 1]:+.2f}")


if __name__ == "__main__":
    main(sys.argv[1:])
