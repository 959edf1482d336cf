"""Scores a run's test predictions against the funnel simulator's stored ground truth.

The simulator (mtl_final/data/simulator.py) writes each impression's true probabilities
(``true_pctr``, ``true_pcvr``) next to its features, so CVR can be judged over the entire
impression space, unclicked rows included, which the observed labels cannot do.  A run scores
whenever its test file carries those two columns, however it reached the file (data.simulator
or data.root).

Counterfactual label y ("would convert if clicked", one per test row): the file's ``cvr_entire``
column where it has one (simulator version 2: drawn once at generation); otherwise drawn from
true_pcvr with a seed fixed by the data, never by the run (`label_seed`: a hash of the test
file's row count and the simulator seed in the meta.json beside it, 0 without one), so runs of
any seed are scored against the same labels.

Keys of ``metrics["test_entire_space"]`` (``cvr`` = the name of the task declared ``on`` another):
    cvr_auc, cvr_logloss            pCVR against y over all test rows
    cvr_oracle_auc                  true_pcvr against y (the bound any model can reach)
    cvr_corr_true_pcvr              Pearson correlation of pCVR and true_pcvr
    rows                            test rows scored
    cvr_auc_unclicked               pCVR against y over the rows with parent label 0 (click == 0)
    cvr_oracle_auc_unclicked        true_pcvr against y over those rows
    rows_unclicked                  their count
    cvr_logloss_true_pcvr           cross-entropy of pCVR to the true probability,
                                    mean -(q log p + (1 - q) log(1 - p)), q = true_pcvr (no labels)
    cvr_oracle_logloss_true_pcvr    the same of q itself (its entropy: the floor of the line above)
    ctr_oracle_auc                  true_pctr against the observed clicks (the parent task's ceiling)
    labels, label_seed              "cvr_entire" (seed null) or "drawn" and the seed used
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from mtl_final.data.reader import detect_format, read_header
from mtl_final.data.schema import TaskSpec
from mtl_final.data.simulator import CVR_ENTIRE_COLUMN, TRUTH_COLUMNS
from mtl_final.train.metrics import auc, logloss


def has_ground_truth(test_file: Path) -> bool:
    """Whether ``test_file`` (CSV or Parquet) has the simulator's true_pctr and true_pcvr columns."""
    return set(TRUTH_COLUMNS) <= set(read_header(test_file))


def entire_space_metrics(probs: Mapping[str, np.ndarray], test_file: Path,
                         tasks: Sequence[TaskSpec]) -> dict[str, Any]:
    """CVR quality over ALL test impressions, clicked or not (keys in the module docstring);
    {} when no task is defined ``on`` another.

    probs: output name -> [rows] probabilities of the test split, in the file's row order;
    test_file: the split file they score, with the ground-truth columns (`has_ground_truth`)."""
    cvr_tasks = [t for t in tasks if t.on]
    if not cvr_tasks:
        return {}
    task = cvr_tasks[0]
    parent_label = next((t.label for t in tasks if t.name == task.on), None)
    header = read_header(test_file)
    columns = list(TRUTH_COLUMNS) + [c for c in (parent_label, CVR_ENTIRE_COLUMN) if c and c in header]
    data = read_columns(test_file, columns)
    q = data["true_pcvr"]
    p = np.asarray(probs[task.name], dtype=np.float64)
    if p.shape != q.shape:
        raise ValueError(f"{test_file}: {q.shape[0]} rows but {p.shape[0]} test predictions of {task.name!r}; "
                         "entire-space metrics need one prediction per row of the file (were rows dropped, "
                         "e.g. by data.invalid_funnel_rows=drop?)")
    if CVR_ENTIRE_COLUMN in data:
        y, labels, seed = data[CVR_ENTIRE_COLUMN], "cvr_entire", None
    else:
        seed = label_seed(test_file, len(q))
        y, labels = (np.random.default_rng(seed).random(len(q)) < q).astype(np.float64), "drawn"
    unclicked = data[parent_label] == 0 if parent_label in data else np.zeros(len(q), dtype=bool)
    name = task.name
    return {
        f"{name}_auc": auc(y, p), f"{name}_logloss": logloss(y, p),
        f"{name}_oracle_auc": auc(y, q),
        f"{name}_corr_true_pcvr": float(np.corrcoef(p, q)[0, 1]),
        "rows": int(len(y)),
        f"{name}_auc_unclicked": auc(y[unclicked], p[unclicked]),
        f"{name}_oracle_auc_unclicked": auc(y[unclicked], q[unclicked]),
        "rows_unclicked": int(unclicked.sum()),
        f"{name}_logloss_true_pcvr": logloss(q, p),  # logloss takes soft labels: cross-entropy to q
        f"{name}_oracle_logloss_true_pcvr": logloss(q, q),
        # the parent task's ceiling on its own observed labels: true_pctr scored against the clicks
        f"{task.on}_oracle_auc": auc(data[parent_label], data["true_pctr"]) if parent_label in data else math.nan,
        "labels": labels, "label_seed": seed,
    }


def label_seed(test_file: Path, rows: int) -> int:
    """Seed of the drawn counterfactual labels of a file without cvr_entire: fixed by the data
    (its row count and the simulator seed in the meta.json beside it, 0 without one)."""
    meta = test_file.parent / "meta.json"
    sim_seed = json.loads(meta.read_text()).get("seed", 0) if meta.is_file() else 0
    digest = hashlib.sha256(f"entire-space-labels:{int(sim_seed)}:{int(rows)}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def read_columns(path: Path, columns: Sequence[str]) -> dict[str, np.ndarray]:
    """Columns of one split file (CSV or Parquet), each [rows] float64."""
    if detect_format(path) == "parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path, columns=list(columns))
        return {c: table.column(c).to_numpy().astype(np.float64) for c in columns}
    import pandas as pd

    frame = pd.read_csv(path, usecols=list(columns))
    return {c: frame[c].to_numpy(np.float64) for c in columns}
