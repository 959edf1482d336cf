"""Per-task metrics: AUC, logloss, gAUC and calibration (PCOC, ECE); cvr on clicked rows, ctcvr on all rows.

Calibration matters beside ranking because an auction bids bid · pCTR · pCVR: a PCOC of 1.2 is a 20%
overbid. PCOC = Σp / Σy (predicted over observed). ECE uses ECE_BINS equal-mass bins
(`equal_mass_bins`): ECE = Σ_b (n_b / N) · |mean p_b − mean y_b|.
"""
from __future__ import annotations

import math
from typing import Any, Iterator, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from mtl_final.models.base import entire_space_name

LOGLOSS_EPS = 1e-7
ECE_BINS = 20


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; NaN when y holds a single class (undefined)."""
    y = np.asarray(y)
    if y.size == 0 or y.min() == y.max():
        return math.nan
    return float(roc_auc_score(y, p))


def logloss(y: np.ndarray, p: np.ndarray) -> float:
    """Mean binary cross-entropy with p clipped to [eps, 1 - eps]; NaN on no rows."""
    if len(y) == 0:
        return math.nan
    p = np.clip(np.asarray(p, dtype=np.float64), LOGLOSS_EPS, 1 - LOGLOSS_EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def pcoc(y: np.ndarray, p: np.ndarray) -> float:
    """Σp / Σy over the rows; NaN when Σy = 0 (no rows, or no positive label: undefined)."""
    observed = float(np.sum(np.asarray(y, dtype=np.float64)))
    if observed == 0.0:
        return math.nan
    return float(np.sum(np.asarray(p, dtype=np.float64))) / observed


def equal_mass_bins(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows n_b, mean p_b, mean y_b), each [non-empty bins], of the rows sorted by p and cut into
    `bins` consecutive groups of equal count.

    Ties: the sort is stable, so rows of equal p keep their row order and may fall into two bins.
    Remainder: with N = q · bins + r rows the first r bins hold q + 1 rows, the others q
    (numpy.array_split); with N < bins the last bins are empty and left out."""
    p = np.asarray(p, dtype=np.float64)
    order = np.argsort(p, kind="stable")
    p_bins = [b for b in np.array_split(p[order], bins) if b.size]
    y_bins = [b for b in np.array_split(np.asarray(y, dtype=np.float64)[order], bins) if b.size]
    return (np.array([b.size for b in p_bins], dtype=np.int64), np.array([b.mean() for b in p_bins]),
            np.array([b.mean() for b in y_bins]))


def ece(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error Σ_b (n_b / N) · |mean p_b − mean y_b| over `equal_mass_bins`; NaN on no rows."""
    n, mean_p, mean_y = equal_mass_bins(y, p, bins)
    if not n.size:
        return math.nan
    return float(np.sum(n * np.abs(mean_p - mean_y)) / n.sum())


def gauc(y: np.ndarray, p: np.ndarray, groups: np.ndarray) -> float:
    """Group AUC: AUC per group weighted by the group's row count, over groups with both classes."""
    order = np.argsort(groups, kind="stable")
    g, y, p = np.asarray(groups)[order], np.asarray(y)[order], np.asarray(p)[order]
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]])
    ends = np.r_[starts[1:], len(g)]
    pos = np.add.reduceat(y > 0.5, starts) if len(g) else np.array([])
    total, weight = 0.0, 0
    for s, e, n_pos in zip(starts, ends, pos):
        if 0 < n_pos < e - s:
            total += (e - s) * roc_auc_score(y[s:e], p[s:e])
            weight += e - s
    return total / weight if weight else math.nan


def task_metrics(
    tasks: Sequence[Any],
    probs: Mapping[str, np.ndarray],
    labels: Mapping[str, np.ndarray],
    groups: np.ndarray | None = None,
) -> dict[str, dict[str, float]]:
    """Metrics per task name (and per entire-space product such as 'ctcvr').

    A task declared `on: parent` is scored on rows whose parent label is 1 (cvr on clicked rows);
    the product p(parent)·p(task) is scored on all rows against parent_label · task_label.
    """
    return {name: _scores(y, p, groups if groups is None or mask is None else groups[mask])
            for name, y, p, mask in scored_rows(tasks, probs, labels)}


def scored_rows(tasks: Sequence[Any], probs: Mapping[str, np.ndarray], labels: Mapping[str, np.ndarray]
                ) -> Iterator[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """(output name, labels [n], probabilities [n], row mask [rows] or None for all rows) of every task
    and of every entire-space product in `probs`, in `task_metrics` order: a task declared `on: parent`
    keeps the rows whose parent label is 1; the product p(parent)·p(task) keeps every row, labelled
    parent_label · task_label."""
    for task in tasks:
        y, p, mask = labels[task.name], probs[task.name], None
        if task.on:
            mask = labels[task.on] > 0.5
            y, p = y[mask], p[mask]
        yield task.name, y, p, mask
        joint = entire_space_name(task.on, task.name) if task.on else None
        if joint and joint in probs:
            yield joint, labels[task.on] * labels[task.name], probs[joint], None


def _scores(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    scores = {"auc": auc(y, p), "logloss": logloss(y, p), "pcoc": pcoc(y, p), "ece": ece(y, p),
              "rows": int(len(y))}
    if groups is not None:
        scores["gauc"] = gauc(y, p, groups)
    return scores


def parse_monitor(spec: str, task_names: Sequence[str]) -> dict[str, float]:
    """'auto' | 'cvr.auc' | 'ctr.auc:1,cvr.auc:2' → {metric path: weight}."""
    if spec == "auto":
        return {f"{task_names[0]}.auc": 1.0} if len(task_names) == 1 else {f"{t}.auc": 1.0 for t in task_names}
    weights = {}
    for part in spec.split(","):
        name, _, weight = part.strip().partition(":")
        if name.count(".") != 1:
            raise ValueError(f"train.monitor entry {part!r} must look like 'task.metric' or 'task.metric:weight'")
        weights[name] = float(weight) if weight else 1.0
    return weights


def monitor_value(metrics: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]) -> float:
    """Weighted sum of the monitored metrics; a missing name is an error listing available ones."""
    total = 0.0
    for path, weight in weights.items():
        task, metric = path.split(".")
        if task not in metrics or metric not in metrics[task]:
            available = [f"{t}.{m}" for t, ms in metrics.items() for m in ms]
            raise ValueError(f"train.monitor names {path!r}, which is not computed; available: {available}")
        total += weight * metrics[task][metric]
    return total
