"""Per-task ranking metrics: AUC, logloss, gAUC; cvr on clicked rows, ctcvr on all rows."""
from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
from sklearn.metrics import roc_auc_score

from mtl_final.models.base import entire_space_name

LOGLOSS_EPS = 1e-7


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
    out: dict[str, dict[str, float]] = {}
    for task in tasks:
        y, p, g = labels[task.name], probs[task.name], groups
        if task.on:
            mask = labels[task.on] > 0.5
            y, p = y[mask], p[mask]
            g = None if groups is None else groups[mask]
        out[task.name] = _scores(y, p, g)
        joint = entire_space_name(task.on, task.name) if task.on else None
        if joint and joint in probs:
            out[joint] = _scores(labels[task.on] * labels[task.name], probs[joint], groups)
    return out


def _scores(y: np.ndarray, p: np.ndarray, groups: np.ndarray | None) -> dict[str, float]:
    scores = {"auc": auc(y, p), "logloss": logloss(y, p), "rows": int(len(y))}
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
