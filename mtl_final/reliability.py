"""Reliability diagrams of a calibrated run: per output, the mean predicted probability against the
observed rate in the ECE's equal-mass bins (mtl_final.train.metrics.equal_mass_bins), before and after
calibration, on the test split (the calibrators were fitted on valid).

They need matplotlib, the optional ``[plot]`` extra (``pip install -e ".[plot]"``); `missing_plotter`
says why they cannot be drawn where it is not installed, and training then goes on without them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_final.train.metrics import ece, equal_mass_bins, scored_rows

PREFIX = "reliability_"


def missing_plotter() -> str | None:
    """Why the diagrams cannot be drawn here, or None when matplotlib is importable."""
    try:
        import matplotlib.figure  # noqa: F401
    except ImportError as e:
        return f"matplotlib is not installed ({e}); pip install -e \".[plot]\" to get them"
    return None


def write_reliability_diagrams(run_dir: str | Path, tasks: Sequence[Any], raw: Mapping[str, np.ndarray],
                               calibrated: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]) -> list[Path]:
    """One PNG per output, ``run_dir/reliability_<output>.png``, from one split's raw and calibrated
    probabilities (output name → [rows]) and labels (task name → [rows]); returns the files written."""
    from matplotlib.figure import Figure  # no pyplot: no backend or global state

    before = {name: (y, p) for name, y, p, _ in scored_rows(tasks, raw, labels)}
    written = []
    for name, y, q, _ in scored_rows(tasks, calibrated, labels):
        fig = Figure(figsize=(4.5, 4.5))
        ax = fig.add_subplot()
        top = 0.0
        for label, (ys, ps) in (("before", before[name]), ("after", (y, q))):
            _, mean_p, mean_y = equal_mass_bins(ys, ps)
            ax.plot(mean_p, mean_y, marker="o", markersize=3, label=f"{label} (ECE {ece(ys, ps):.4f})")
            top = max(top, float(mean_p.max(initial=0.0)), float(mean_y.max(initial=0.0)))
        top = min(1.0, 1.05 * top) or 1.0
        ax.plot([0, top], [0, top], color="grey", linestyle=":", linewidth=1, label="calibrated")
        ax.set(xlim=(0, top), ylim=(0, top), xlabel="mean predicted probability", ylabel="observed rate",
               title=f"{name}: {len(y):,} rows, equal-mass bins")
        ax.legend(loc="upper left", fontsize="small")
        fig.tight_layout()
        path = Path(run_dir) / f"{PREFIX}{name}.png"
        fig.savefig(path, dpi=100)
        written.append(path)
    return written
