"""The FINAL paper's published figures (its Tables 1 and 2, and the BARS logs), as data.

AUC values are ×100, as printed in the paper. Keys are the benchmark model ids of
:data:`mtl_final.benchmark.runner.MODEL_IDS` and the benchmark dataset names.
"""
from __future__ import annotations

# Column order of the paper's tables.
DATASETS: tuple[str, ...] = ("criteo_x1", "avazu_x1", "movielenslatest_x1", "frappe_x1")

# Table 1: test AUC ×100 (Criteo / Avazu / MovieLens / Frappe).
TABLE1_AUC: dict[str, tuple[float, float, float, float]] = {
    "LR": (78.86, 75.16, 93.42, 93.56),
    "FM": (80.22, 76.13, 94.34, 96.71),
    "AFM": (80.44, 75.74, 94.72, 96.97),
    "CrossNet": (79.47, 75.45, 93.85, 94.19),
    "CrossNetV2": (81.10, 76.05, 95.83, 97.16),
    "CIN": (80.96, 76.26, 96.02, 97.76),
    "DCN": (81.39, 76.47, 96.87, 98.39),
    "DCNV2": (81.42, 76.54, 96.91, 98.45),
    "DeepFM": (81.38, 76.48, 96.85, 98.42),
    "AutoInt": (81.40, 76.50, 96.93, 98.49),  # AutoInt+ (with a deep part)
    "xDeepFM": (81.39, 76.49, 96.97, 98.45),
    "SAM": (81.31, 76.32, 96.31, 98.01),
    "FINAL_1B": (81.44, 76.61, 97.06, 98.52),  # "FINAL" in the paper
    "FINAL_dual": (81.45, 76.64, 97.11, 98.83),
    "FINAL_2B_KD": (81.56, 76.67, 97.20, 98.95),  # "FINAL(2B)+KD"
}

# Table 2: the FINAL block as a drop-in for the MLP block (test AUC ×100). The baselines'
# figures repeat Table 1 where the model is in both tables.
TABLE2_AUC: dict[str, tuple[float, float, float, float]] = {
    "MLP": (81.36, 76.30, 96.78, 98.33),
    "MLP_FINAL": (81.47, 76.60, 97.09, 98.50),
    "DeepFM": (81.38, 76.48, 96.85, 98.42),
    "DeepFM_FINAL": (81.43, 76.57, 97.12, 98.53),
    "xDeepFM": (81.39, 76.49, 96.97, 98.45),
    "xDeepFM_FINAL": (81.43, 76.56, 97.11, 98.51),
    "DCN": (81.39, 76.47, 96.87, 98.39),
    "DCN_FINAL": (81.48, 76.58, 96.94, 98.48),
}

# Public BARS runs of the best FINAL configs (one seed, 2021): (test AUC, logloss).
BARS_FINAL: dict[str, dict[str, tuple[float, float]]] = {
    "frappe_x1": {"FINAL_1B": (0.985223, 0.136554), "FINAL_2B_KD": (0.985744, 0.131070)},
    "movielenslatest_x1": {"FINAL_1B": (0.970560, 0.200110), "FINAL_2B_KD": (0.972538, 0.194088)},
    "criteo_x1": {"FINAL_1B": (0.814403, 0.437479), "FINAL_2B_KD": (0.815438, 0.436520)},
    "avazu_x1": {"FINAL_1B": (0.766067, 0.366463), "FINAL_2B_KD": (0.767159, 0.365334)},
}


def paper_auc(dataset: str, model: str) -> tuple[float, str] | None:
    """(paper test AUC ×100, "Table 1" / "Table 2") of ``model`` on ``dataset``, or None."""
    if dataset not in DATASETS:
        return None
    col = DATASETS.index(dataset)
    if model in TABLE1_AUC:
        return TABLE1_AUC[model][col], "Table 1"
    if model in TABLE2_AUC:
        return TABLE2_AUC[model][col], "Table 2"
    return None
