"""Tests of the run configuration: overrides, files, validation, model defaults, dumping."""
from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from mtl_final import config as C
from mtl_final import config_reference
from mtl_final.config import ConfigError, config_hash, dump_config, get, load_config
from mtl_final.config_spec import SPEC, Key, Section, alias_paths, allowed, defaults, leaves, lookup


@pytest.fixture(autouse=True)
def fake_models(monkeypatch: pytest.MonkeyPatch) -> None:
    """Isolate the model registry from the real models package and register fake models."""
    monkeypatch.setattr(C, "MODEL_KEYS", {})
    monkeypatch.setattr(C, "_ensure_models_registered", lambda: None)
    C.register_model_keys("mlp", {})
    C.register_model_keys("mmoe", {
        "num_experts": Key(4, "experts"),
        "gate_units": Key([], "gate widths"),
        "gate": Key("softmax", "gate", choices=["softmax", "sigmoid"]),
    })
    C.register_model_keys("ple", {
        "num_layers": Key(2, "levels"), "num_shared_experts": Key(1, "shared experts"), "scale": Key(0.5, "scale"),
    })


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- defaults


def test_defaults_resolve_and_are_not_mutated() -> None:
    before = copy.deepcopy(C.DEFAULTS)
    cfg = load_config(None)
    assert cfg == {**before, "model": {**before["model"]}}  # the fake 'mlp' adds no keys
    cfg["block"]["hidden_units"].append(1)
    cfg["train"]["lr"] = 5.0
    assert C.DEFAULTS == before
    assert load_config(None)["block"]["hidden_units"] == [400, 400, 400]


def test_base_is_used_and_not_mutated() -> None:
    base = {"train": {"lr": 0.5}, "model": {"name": "mmoe", "num_experts": 8}}
    snapshot = copy.deepcopy(base)
    cfg = load_config(None, ["train.epochs=3"], base=base)
    assert base == snapshot
    assert cfg["train"]["lr"] == 0.5 and cfg["train"]["epochs"] == 3
    assert cfg["model"]["num_experts"] == 8 and cfg["train"]["batch_size"] == 4096


# ----------------------------------------------------------------------------- overrides


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("train.lr=1e-3", "train.lr", 1e-3),
        ("train.lr=1E-5", "train.lr", 1e-5),
        ("model.task_weights.ctr=-2.5e+3", "model.task_weights", {"ctr": -2500.0}),
        ("train.lr=.5e-2", "train.lr", 0.005),
        ("train.batch_size=128", "train.batch_size", 128),
        ("block.hidden_units=[400,400]", "block.hidden_units", [400, 400]),
        ("block.hidden_units=[]", "block.hidden_units", []),
        ("block.batch_norm=false", "block.batch_norm", False),
        ("train.progress=true", "train.progress", True),
        ("train.gauc_field=user_id", "train.gauc_field", "user_id"),
        ("train.gauc_field=null", "train.gauc_field", None),
        ("tasks=[ctr,cvr]", "tasks", ["ctr", "cvr"]),
        ("train.device=cuda:1", "train.device", "cuda:1"),
        ("train.monitor=ctr.auc:1,cvr.auc:2", "train.monitor", "ctr.auc:1,cvr.auc:2"),
        ("data.root=/tmp/x=y", "data.root", "/tmp/x=y"),
        ("data.simulator.n_rows=100", "data.simulator", {"n_rows": 100}),
        ("model.task_weights={ctr: 1, cvr: 2}", "model.task_weights", {"ctr": 1.0, "cvr": 2.0}),
    ],
)
def test_override_values_are_parsed(override: str, key: str, expected: object) -> None:
    value = get(load_config(None, [override]), key)
    assert value == expected
    assert type(value) is type(expected)


def test_overrides_apply_in_order() -> None:
    cfg = load_config(None, ["train.epochs=3", "train.epochs=5"])
    assert cfg["train"]["epochs"] == 5


def test_shorthand_sets_selector_key() -> None:
    cfg = load_config(None, ["model=mmoe", "tower=final", "expert=final", "block=final"])
    assert cfg["model"]["name"] == "mmoe"
    assert cfg["model"]["num_experts"] == 4  # the chosen model's defaults are filled in
    assert cfg["tower"]["kind"] == "final" and cfg["tower"]["hidden_units"] == [256, 128]
    assert cfg["expert"]["kind"] == "final" and cfg["block"]["kind"] == "final"


def test_dict_override_merges_into_section() -> None:
    cfg = load_config(None, ["tower={kind: final, num_steps: 3}"])
    assert cfg["tower"]["kind"] == "final" and cfg["tower"]["num_steps"] == 3
    assert cfg["tower"]["dropout"] == 0.1


@pytest.mark.parametrize("bad", ["train.lr", "model", "=3", "train..lr=1"])
def test_malformed_override(bad: str) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        load_config(None, [bad])


def test_override_into_scalar_is_rejected() -> None:
    with pytest.raises(ConfigError, match="not a section"):
        load_config(None, ["train.lr.x=1"])


# ----------------------------------------------------------------------------- validation


def test_unknown_key_in_override_names_key_and_suggestion() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr_rate=0.1"])
    assert "'train.lr_rate'" in str(err.value) and "did you mean 'train.lr'" in str(err.value)


@pytest.mark.parametrize(("key", "suggestion"), [
    ("train.lerning_rate", "train.lr"),  # a misspelt alias
    ("train.learning_rate", "train.lr"),
    ("learning_rate", "train.lr"),
    ("train.num_epochs", "train.epochs"),
    ("train.n_epochs", "train.epochs"),
    ("train.max_epochs", "train.epochs"),
    ("model.embed_dim", "model.embedding_dim"),
    ("model.embedding_size", "model.embedding_dim"),
    ("train.early_stop_patience", "train.patience"),
    ("model.hidden_units", "block.hidden_units"),
    ("model.dnn_hidden_units", "block.hidden_units"),
    ("block.dropout_rate", "block.dropout"),
    ("tower.dropout_rate", "tower.dropout"),
    ("model.net_dropout", "block.dropout"),
    ("train.batch", "train.batch_size"),
    ("train.max_grad_norm", "train.grad_clip_norm"),
])
def test_other_libraries_names_suggest_the_key(key: str, suggestion: str) -> None:
    with pytest.raises(ConfigError, match=rf"^unknown config key '{re.escape(key)}' — did you mean '{re.escape(suggestion)}'\?$"):
        load_config(None, [f"{key}=1"])


def test_an_alias_that_a_model_declares_as_its_own_key_is_that_key() -> None:
    C.register_model_keys("wide", {"hidden_units": Key([8], "widths")})
    assert load_config(None, ["model=wide", "model.hidden_units=[4]"])["model"]["hidden_units"] == [4]


def test_unknown_key_in_yaml_names_key_and_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "block:\n  hiden_units: [1]\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert "'block.hiden_units'" in str(err.value)
    assert "did you mean 'block.hidden_units'" in str(err.value)


def test_unknown_section_suggests_section_key() -> None:
    with pytest.raises(ConfigError, match=r"'trian\.lr'.*did you mean 'train\.lr'"):
        load_config(None, ["trian.lr=0.1"])


def test_all_errors_are_reported_together() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["train.lr=abc", "block.kind=fnal"])
    assert "2 errors" in str(err.value)
    assert "train.lr" in str(err.value) and "block.kind" in str(err.value)


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("train.lr=abc", r"'train\.lr' expects float.*'abc'"),
        ("train.epochs=2.5", r"'train\.epochs' expects int.*2\.5"),
        ("train.lr=true", r"'train\.lr' expects float.*True"),  # bool is not a number
        ("train.epochs=true", r"'train\.epochs' expects int"),
        ("train.progress=1", r"'train\.progress' expects bool"),
        ("block.hidden_units=400", r"'block\.hidden_units' expects list of int"),
        ("block.hidden_units=[400,a]", r"'block\.hidden_units' expects list of int"),
        ("tower=[1]", r"'tower' expects mapping"),
        ("tasks=ctr", r"'tasks' expects list of str"),
        ("model.task_weights.ctr=high", r"'model\.task_weights\.ctr' expects float"),
    ],
)
def test_wrong_type(override: str, needle: str) -> None:
    with pytest.raises(ConfigError, match=needle):
        load_config(None, [override])


def test_int_is_coerced_to_float() -> None:
    cfg = load_config(None, ["train.lr=1", "block.dropout=0"])
    assert cfg["train"]["lr"] == 1.0 and isinstance(cfg["train"]["lr"], float)
    assert isinstance(cfg["block"]["dropout"], float)


def test_bad_choice_lists_allowed_values() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["block.kind=fnal"])
    msg = str(err.value)
    assert "'block.kind'" in msg and "['mlp', 'final']" in msg and "did you mean 'final'" in msg
    with pytest.raises(ConfigError, match=r"\['adam', 'adamw', 'sgd'\]"):
        load_config(None, ["train.optimizer=rmsprop"])


def test_bounds() -> None:
    with pytest.raises(ConfigError, match=r"'train\.batch_size' must lie in \[2, inf\], got 1"):
        load_config(None, ["train.batch_size=1"])  # BatchNorm needs 2 rows
    with pytest.raises(ConfigError, match=r"'train\.epochs' must lie in \[1, inf\], got 0"):
        load_config(None, ["train.epochs=0"])  # a run without a single evaluation has no best.pt
    with pytest.raises(ConfigError, match=r"'block\.hidden_units' must lie in"):
        load_config(None, ["block.hidden_units=[8,0]"])
    with pytest.raises(ConfigError, match=r"'seed' must lie in \[0, 4294967295\], got -1"):
        load_config(None, ["seed=-1"])
    assert load_config(None, ["seed=4294967295"])["seed"] == 2**32 - 1


@pytest.mark.parametrize("override, key", [("train.lr=.nan", "train.lr"), ("block.dropout=.nan", "block.dropout"),
                                           ("train.lr=.inf", "train.lr"), ("model.task_weights={ctr: .nan}",
                                                                             "model.task_weights.ctr")])
def test_non_finite_numbers_are_rejected(override: str, key: str) -> None:
    # NaN passes every range check (each comparison with it is False)
    with pytest.raises(ConfigError, match=rf"'{key}' must be a finite number, got (nan|inf)"):
        load_config(None, [override])


def test_paths_expand_the_home_directory() -> None:
    cfg = load_config(None, ["data.root=~/frappe", "data.schema=~/s.yaml", "data.cache_dir=~/cache"])
    home = str(Path.home())
    assert (cfg["data"]["root"], cfg["data"]["schema"], cfg["data"]["cache_dir"]) == (
        f"{home}/frappe", f"{home}/s.yaml", f"{home}/cache")


def test_none_default_keys_accept_null_and_free_form_dicts() -> None:
    cfg = load_config(None, ["data.simulator={n_rows: 5, splits: [0.5, 0.25, 0.25]}", "tasks=null"])
    assert cfg["data"]["simulator"] == {"n_rows": 5, "splits": [0.5, 0.25, 0.25]}
    assert cfg["tasks"] is None


def test_simulator_keys_are_checked_with_a_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"unknown config key 'data\.simulator\.n_rowz' — did you mean "
                                          r"'data\.simulator\.n_rows'\?"):
        load_config(None, ["data.simulator.n_rowz=1000"])
    from mtl_final.data.simulator import ensure_simulated, simulate_funnel
    import inspect
    takes = [*inspect.signature(ensure_simulated).parameters][1:3] + [
        name for name in inspect.signature(simulate_funnel).parameters
        if name in ("splits", "format", "chunk_rows", "version")]
    assert sorted(lookup("data.simulator").entry_keys) == sorted(takes)


# ----------------------------------------------------------------------------- model defaults


def test_model_defaults_filled_and_overridable(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "model:\n  name: ple\n  num_layers: 3\n")
    cfg = load_config(path, ["model.scale=1"])
    assert cfg["model"]["num_layers"] == 3 and cfg["model"]["num_shared_experts"] == 1
    assert cfg["model"]["scale"] == 1.0 and isinstance(cfg["model"]["scale"], float)
    assert cfg["model"]["embedding_dim"] == 10 and "num_experts" not in cfg["model"]


def test_unknown_model_key_rejected_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"'model\.num_expert'.*did you mean 'model\.num_experts'"):
        load_config(None, ["model=mmoe", "model.num_expert=8"])


def test_key_of_another_model_names_its_owner() -> None:
    with pytest.raises(ConfigError, match=r"'model\.num_experts'.*'mmoe'"):
        load_config(None, ["model=ple", "model.num_experts=8"])


def test_model_choices() -> None:
    assert load_config(None, ["model=mmoe", "model.gate=sigmoid"])["model"]["gate"] == "sigmoid"
    with pytest.raises(ConfigError, match=r"'model\.gate' must be one of \['softmax', 'sigmoid'\]"):
        load_config(None, ["model=mmoe", "model.gate=relu"])


def test_unknown_model_name_lists_registered_closest_first() -> None:
    with pytest.raises(ConfigError) as err:
        load_config(None, ["model=mmeo", "model.num_experts=2"])
    msg = str(err.value)
    assert "unknown model 'mmeo'" in msg and "['mmoe'," in msg
    assert "'mlp'" in msg and "'ple'" in msg
    assert "num_experts" not in msg  # keys of an unknown model are not reported on top


def test_register_rejects_common_keys() -> None:
    with pytest.raises(ConfigError, match="embedding_dim"):
        C.register_model_keys("bad", {"embedding_dim": Key(4, "embedding size")})
    with pytest.raises(ConfigError, match="config_spec.Key"):
        C.register_model_keys("bad", {"width": 4})  # a key needs its declaration (doc, allowed values)


# ----------------------------------------------------------------------------- files


def test_yaml_scientific_floats_and_shorthand(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "train:\n  lr: 1e-3\n  min_lr: 1E-7\nmodel: mmoe\ntower: final\n")
    cfg = load_config(path)
    assert cfg["train"]["lr"] == 1e-3 and cfg["train"]["min_lr"] == 1e-7
    assert cfg["model"]["name"] == "mmoe" and cfg["tower"]["kind"] == "final"


def test_include_chain(tmp_path: Path) -> None:
    (tmp_path / "data").mkdir()
    (tmp_path / "bench").mkdir()
    write(tmp_path / "common.yaml", "seed: 1\ntrain:\n  epochs: 7\n  lr: 0.01\n")
    write(
        tmp_path / "data" / "base.yaml",
        "include: ../common.yaml\ndata:\n  root: /data/x\ntrain:\n  lr: 0.02\n  batch_size: 64\n",
    )
    write(tmp_path / "extra.yaml", "block:\n  dropout: 0.3\n")
    path = write(
        tmp_path / "bench" / "run.yaml",
        "include: [../data/base.yaml, ../extra.yaml]\ntrain:\n  batch_size: 32\n",
    )
    cfg = load_config(path, ["seed=5"])
    assert cfg["seed"] == 5
    assert cfg["train"]["epochs"] == 7  # from the grand-parent
    assert cfg["train"]["lr"] == 0.02  # the includer wins over what it includes
    assert cfg["train"]["batch_size"] == 32
    assert cfg["data"]["root"] == "/data/x" and cfg["block"]["dropout"] == 0.3
    assert "include" not in cfg


def test_include_cycle_and_missing_file(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", "include: b.yaml\n")
    write(tmp_path / "b.yaml", "include: a.yaml\n")
    with pytest.raises(ConfigError, match="cycle"):
        load_config(tmp_path / "a.yaml")
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    write(tmp_path / "list.yaml", "- 1\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(tmp_path / "list.yaml")


def test_dump_load_round_trip(tmp_path: Path) -> None:
    cfg = load_config(
        None,
        [
            "model=mmoe",
            "model.gate_units=[64, 32]",
            "model.task_weights={ctr: 1, cvr: 0.5}",
            "train.lr=1e-5",
            "train.min_lr=1e-12",
            "train.monitor='1e-3'",  # a string that looks like a float must stay a string
            "tasks=[ctr, cvr]",
            "data.simulator={n_rows: 10, splits: [0.9, 0.1, 2.5e-4]}",
            "block.hidden_units=[]",
        ],
    )
    assert cfg["train"]["monitor"] == "1e-3"
    path = dump_config(cfg, tmp_path / "out" / "config.yaml")
    text = path.read_text()
    assert "hidden_units: [256, 128]" in text  # readable: scalar lists inline, sections in blocks
    assert load_config(path) == cfg
    assert config_hash(load_config(path)) == config_hash(cfg)


# ----------------------------------------------------------------------------- helpers


def test_get_and_hash() -> None:
    cfg = load_config(None)
    assert get(cfg, "train.lr") == 0.001 and get(cfg, "block") is cfg["block"]
    assert get(cfg, "train.nope", None) is None
    with pytest.raises(KeyError):
        get(cfg, "train.nope")
    h = config_hash(cfg)
    assert len(h) == 64 and h == config_hash(copy.deepcopy(cfg))
    assert h != config_hash(load_config(None, ["seed=1"]))


def test_a_key_given_twice_in_a_yaml_file_is_rejected_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "dup.yaml", "train:\n  lr: 1e-3\n  epochs: 3\n  lr: 2e-3\n")
    with pytest.raises(ConfigError, match=r"(?s)dup\.yaml: key 'lr' is given twice \(first on line 2\).*line 4"):
        load_config(path)
    # the same key in two different sections is not a duplicate
    assert load_config(write(tmp_path / "ok.yaml", "train:\n  lr: 1e-3\nblock:\n  dropout: 0.1\n"))["train"]["lr"] == 1e-3


# ----------------------------------------------------------------------------- the spec and its reference


def test_defaults_are_the_spec_defaults_and_every_alias_is_free() -> None:
    assert C.DEFAULTS == defaults(SPEC) and list(C.DEFAULTS) == list(SPEC.keys)
    valid = {path for path, _ in leaves(SPEC)}
    assert not valid & set(alias_paths(SPEC)), "an alias must not be a key itself"
    assert set(alias_paths(SPEC).values()) <= valid


def test_every_doc_is_one_short_line() -> None:
    from mtl_final.models import MODELS

    sections = [SPEC, *(Section(name, cls.KEYS) for name, cls in MODELS.items())]
    docs = [key.doc for section in sections for _, key in leaves(section)]
    assert all(0 < len(doc) <= 150 and "\n" not in doc for doc in docs), [d for d in docs if len(d) > 150]
    with pytest.raises(ConfigError, match="one-line doc"):
        Key(1, "")
    with pytest.raises(ConfigError, match="not in its choices"):
        Key("c", "a choice", choices=("a", "b"))


def test_the_spec_choices_are_what_the_code_implements() -> None:
    import torch

    from mtl_final.nn.activations import ACTIVATIONS
    from mtl_final.nn.blocks import build_block
    from mtl_final.train.trainer import build_optimizer

    assert set(allowed("block.activation")) == set(ACTIVATIONS)
    for kind in allowed("block.kind"):
        assert build_block(kind, 4, hidden_units=[2]).output_dim == 2
    model = torch.nn.Linear(2, 1)
    for name in allowed("train.optimizer"):
        assert isinstance(build_optimizer(model, {"optimizer": name, "lr": 0.1, "weight_decay": 0.0}),
                          torch.optim.Optimizer)
    with pytest.raises(ValueError, match="choose adam, adamw or sgd"):
        build_optimizer(model, {"optimizer": "rmsprop", "lr": 0.1, "weight_decay": 0.0})


def test_config_reference_is_current() -> None:
    doc = Path(__file__).resolve().parents[1] / "docs" / "config.md"
    assert config_reference.stale(doc) is None, "run: python -m mtl_final.config_reference --write docs/config.md"


def test_config_reference_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "config.md"
    assert config_reference.main(["--check", str(path)]) == 1
    assert config_reference.main(["--write", str(path)]) == 0
    assert config_reference.main(["--check", str(path)]) == 0
    text = path.read_text(encoding="utf-8")
    assert "| `train.lr` | `0.001` | float (or int) | ≥ 0.0 | learning rate |" in text
    assert "### `model.name: mmoe`" in text and "| `model.num_experts` | `4` |" in text  # the real models
    path.write_text(text.replace("learning rate", "step size"), encoding="utf-8")
    capsys.readouterr()
    assert config_reference.main(["--check", str(path)]) == 1
    assert "is out of date" in capsys.readouterr().err
