"""Scores a run's test predictions against the funnel simulator's stored ground truth.

The simulator (mtl_final/data/simulator.py) writes each impression's true probabilities
(``true_pctr``, ``true_pcvr``) next to its features, so CVR can be judged over the entire
impression space, unclicked rows included, which the observed labels cannot do."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_final.data.schema import TaskSpec
from mtl_final.data.simulator import TRUTH_COLUMNS
from mtl_final.train.metrics import auc, logloss


def entire_space_metrics(probs: Mapping[str, np.ndarray], test_file: Path, tasks: Sequence[TaskSpec],
                         seed: int) -> dict[str, Any]:
    """CVR quality over ALL test impressions, clicked or not; {} when no task is defined ``on`` another.

    probs: output name -> [rows] probabilities of the test split, in row order; test_file: the
    simulated test split they score. The counterfactual label "would convert if clicked" is drawn
    once per row from true_pcvr (seeded), so unclicked rows get a CVR label too; the oracle AUC of
    true_pcvr itself on that label bounds what any model can reach."""
    truth = read_ground_truth(test_file)
    cvr_tasks = [t for t in tasks if t.on]
    if not cvr_tasks:
        return {}
    name = cvr_tasks[0].name
    rng = np.random.default_rng(seed)
    y = (rng.random(len(truth["true_pcvr"])) < truth["true_pcvr"]).astype(np.float64)
    p = probs[name]
    return {
        f"{name}_auc": auc(y, p), f"{name}_logloss": logloss(y, p),
        f"{name}_oracle_auc": auc(y, truth["true_pcvr"]),
        f"{name}_corr_true_pcvr": float(np.corrcoef(p, truth["true_pcvr"])[0, 1]),
        "rows": int(len(y)),
    }


def read_ground_truth(path: Path) -> dict[str, np.ndarray]:
    """The simulator's true_pctr / true_pcvr columns of one split file (CSV or Parquet), each [rows] float64."""
    columns = list(TRUTH_COLUMNS)
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=columns)
        return {c: table.column(c).to_numpy().astype(np.float64) for c in columns}
    import pandas as pd

    frame = pd.read_csv(path, usecols=columns)
    return {c: frame[c].to_numpy(np.float64) for c in columns}
