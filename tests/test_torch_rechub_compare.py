"""benchmarks/torch_rechub_compare.py: the translation of our census configs into torch-rechub
0.9.0's model and trainer arguments, and the comparison table. torch-rechub itself is not needed:
the expected values are typed from the configs' comments (configs/mtl/census_base.yaml) and
torch-rechub's signatures (SharedBottom(bottom_params, tower_params_list), MMOE(n_expert,
expert_params, tower_params_list), PLE(n_level, n_expert_specific, n_expert_shared, ...))."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtl_final.config import load_config
from tests.support.scripts import load_script

REPO_ROOT = Path(__file__).resolve().parents[1]
MTL = REPO_ROOT / "configs" / "mtl"
TOWER = {"dims": [64], "dropout": 0.1, "activation": "relu"}
EXPERT = {"dims": [128], "dropout": 0.1, "activation": "relu"}


@pytest.fixture(scope="module")
def compare():
    return load_script("benchmarks/torch_rechub_compare.py")


def _params(compare, model: str, *overrides: str) -> dict:
    return compare.rechub_params(load_config(MTL / f"census_{model}.yaml", list(overrides)))


def test_census_configs_translate(compare) -> None:
    common = {"tasks": ["income", "never_married"], "embed_dim": 8, "batch_size": 1024, "lr": 1e-3, "epochs": 30,
              "patience": 2, "monitor": {"income": 1.0, "never_married": 1.0}}
    sb = _params(compare, "shared_bottom")
    assert sb == {**common, "model": "SharedBottom",
                  "model_kwargs": {"bottom_params": {"dims": [128], "dropout": 0.1, "activation": "relu"},
                                   "tower_params_list": [TOWER, TOWER]}}
    mmoe = _params(compare, "mmoe")
    assert mmoe == {**common, "model": "MMOE",
                    "model_kwargs": {"n_expert": 4, "expert_params": EXPERT, "tower_params_list": [TOWER, TOWER]}}
    ple = _params(compare, "ple")
    assert ple == {**common, "model": "PLE",
                   "model_kwargs": {"n_level": 2, "n_expert_specific": 1, "n_expert_shared": 2,
                                    "expert_params": EXPERT, "tower_params_list": [TOWER, TOWER]}}
    tuned = _params(compare, "mmoe", "model.num_experts=8", "expert.hidden_units=[32,16]", "train.monitor=income.auc:2")
    assert tuned["model_kwargs"]["n_expert"] == 8 and tuned["model_kwargs"]["expert_params"]["dims"] == [32, 16]
    assert tuned["monitor"] == {"income": 2.0}


@pytest.mark.parametrize("model, overrides, message", [
    ("mmoe", ["tower=final"], "tower.kind='final'"),
    ("mmoe", ["expert=final"], "expert.kind='final'"),
    ("shared_bottom", ["tower.dual=true"], "tower.dual=True"),
    ("ple", ["expert.batch_norm=false"], "expert.batch_norm=False"),
    ("mmoe", ["train.optimizer=sgd"], "train.optimizer='sgd'"),
    ("mmoe", ["model.embedding_regularizer=0.01"], "model.embedding_regularizer=0.01"),
    ("mmoe", ["tower.activation=tanh"], "tower.activation='tanh'"),
    ("mmoe", ["train.monitor=income.logloss"], "train.monitor='income.logloss'"),
    ("shared_bottom", ["model.shared_units=[]"], "model.shared_units=[]"),
    ("mmoe", ["tasks=[income]"], "tasks=['income']"),
])
def test_settings_torch_rechub_cannot_express_are_refused(compare, model, overrides, message) -> None:
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace(".", r"\.")):
        _params(compare, model, *overrides)


def test_models_torch_rechub_has_no_counterpart_for_are_refused(compare) -> None:
    with pytest.raises(ValueError, match="model.name='esmm'"):
        compare.rechub_params(load_config(MTL / "hillstrom_esmm.yaml"))


def test_columns_best_epoch_and_table(compare) -> None:
    assert compare.columns(["a"]) == ["model", "seed", "valid_a_auc", "test_a_auc", "test_a_logloss",
                                      "best_epoch", "epochs_run", "train_seconds", "reference"]
    assert compare.best_epoch([1.90, 1.93, 1.92, 1.93]) == 2  # the first maximum: EarlyStopper needs "greater"
    assert compare.best_epoch([1.5]) == 1
    ours = [{"model": "mmoe", "variant": "mlp", "test_a_auc": a} for a in (0.90, 0.92)]
    ours += [{"model": "mmoe", "variant": "final", "test_a_auc": 0.99}]  # another variant: not shown
    theirs = [{"model": "mmoe", "test_a_auc": "0.91"}, {"model": "ple", "test_a_auc": "0.80"}]
    table = compare.comparison_table(ours, theirs, ["a"], models=["mmoe", "ple"]).splitlines()
    assert table[0] == "| model | a: ours | a: torch-rechub |"
    # ours 90, 92 -> 91.000 ± 1.414 (2); theirs one run 91 -> 91.000 ± – (1); ple has no run of ours
    assert table[2] == "| mmoe | 91.000 ± 1.414 (2) | 91.000 ± – (1) |"
    assert table[3] == "| ple | – | 80.000 ± – (1) |"
