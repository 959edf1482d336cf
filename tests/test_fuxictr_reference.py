"""benchmarks/fuxictr_reference.py translates our FINAL configs into FuxiCTR v2.0.2's parameters.

The reference runs compare like with like only if that translation is exact, so the expected
values here are typed from the BARS FINAL 1B Frappe_x1 log (reczoo/BARS, FinalNet_1B_frappe_x1)
and the FINAL paper, not derived from the code under test. FuxiCTR itself is not needed.
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]
CONFIGS = REPO_ROOT / "configs" / "benchmarks" / "frappe_x1"


@pytest.fixture(scope="module")
def reference():
    return load_script("benchmarks/fuxictr_reference.py")


def test_final_1b_matches_the_bars_log(reference):
    params = reference.model_params(CONFIGS / "final_1b.yaml", [])
    bars_1b_log = {
        "batch_size": 4096, "block1_dropout": 0.2, "block1_hidden_activations": "ReLU",
        "block1_hidden_units": [400, 400], "block2_dropout": 0, "block2_hidden_activations": None,
        "block2_hidden_units": [64, 64, 64], "block_type": "1B", "early_stop_patience": 2,
        "embedding_dim": 10, "embedding_regularizer": 0.1, "epochs": 100, "learning_rate": 0.001,
        "loss": "binary_crossentropy", "monitor": "AUC", "monitor_mode": "max", "net_regularizer": 0,
        "optimizer": "adam", "save_best_only": True, "shuffle": True, "use_field_gate": False,
        "residual_type": "concat", "batch_norm": True, "max_gradient_norm": 10.0,
    }
    assert {key: params[key] for key in bars_1b_log} == bars_1b_log


def test_final_2b_kd_and_the_tuned_variant(reference):
    paper = reference.model_params(CONFIGS / "final_2b_kd.yaml", [])
    assert (paper["block_type"], paper["use_field_gate"]) == ("2B", True)
    assert (paper["block1_hidden_units"], paper["block1_dropout"]) == ([400, 400], 0.1)
    assert (paper["block2_hidden_units"], paper["block2_dropout"], paper["block2_hidden_activations"]) == ([400], 0.1, "ReLU")
    tuned = reference.model_params(CONFIGS / "final_2b_kd_tuned.yaml", [])
    assert (tuned["block1_dropout"], tuned["block2_hidden_units"], tuned["block2_dropout"]) == (0.2, [400, 400], 0.1)
    overridden = reference.model_params(CONFIGS / "final_1b.yaml", ["model.embedding_regularizer=0.05", "train.patience=3"])
    assert (overridden["embedding_regularizer"], overridden["early_stop_patience"]) == (0.05, 3)


@pytest.mark.parametrize("config, overrides, message", [
    ("final_dual.yaml", [], "model.kd=false with 2 blocks"),
    ("final_1b.yaml", ["block.aggregation=sum"], "block.aggregation='sum'"),
    ("final_1b.yaml", ["block.sigma=tanh"], "block.sigma='tanh'"),
    ("final_1b.yaml", ["train.eval_every_steps=10"], "train.eval_every_steps=10"),
    ("mlp.yaml", [], "model.name='mlp'"),
    ("final_2b_kd.yaml", ["train.precision=bf16"], "train.precision='bf16'"),  # FuxiCTR trains in float32
    ("final_2b_kd.yaml", ["train.matmul_precision=medium"], "train.matmul_precision='medium'"),
])
def test_settings_fuxictr_cannot_express_are_refused(reference, config, overrides, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(".", r"\.")):
        reference.model_params(CONFIGS / config, overrides)


def test_the_h5_folder_follows_the_csv_files(reference, tmp_path):
    # FuxiCTR reuses an existing h5 folder without looking at its sources, so the folder's name
    # (the dataset id) must change whenever a csv does
    for split in ("train", "valid", "test"):
        (tmp_path / f"{split}.csv").write_text("label,user\n1,3\n")
    first = reference.dataset_id(tmp_path)
    assert first == reference.dataset_id(tmp_path) and first.startswith("frappe_x1_")
    (tmp_path / "train.csv").write_text("label,user\n1,3\n0,4\n")
    assert reference.dataset_id(tmp_path) != first
    assert reference.dataset_params(tmp_path, tmp_path / "work")["dataset_id"] == reference.dataset_id(tmp_path)
