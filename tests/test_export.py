"""ONNX export (mtl_final.export): the graph scores like the PyTorch model and like mtl_final.predict,
counts out-of-vocabulary ids, keeps a dynamic batch axis, and a failed check writes nothing; a bad --out
or --opset is one clear error."""
from __future__ import annotations

import importlib.util
import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pandas as pd
import pytest
import torch

import mtl_final.export as export_mod
from mtl_final.data.encoders import FeatureEncoders
from mtl_final.data.features import Batch, FeatureSpec
from mtl_final.export import ExportError, ServingGraph, export_onnx, export_run, main as export_main
from mtl_final.models import build_model
from mtl_final.predict import load_run_model, predict
from tests.support.model_fixtures import make_cfg, tasks
from tests.support.tiny_data import train_tiny_esmm

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """(data root, run dir, export dir): a 1-epoch ESMM run with dual FINAL towers, exported by the CLI."""
    tmp = tmp_path_factory.mktemp("export")
    root, run = train_tiny_esmm(tmp, "tower=final", "tower.dual=true")
    assert export_main(["--run", str(run), "--check-rows", "512"]) == 0
    return root, run, run / "export"


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_the_export_scores_raw_rows_like_predict(exported, tmp_path):
    root, run, out = exported
    assert sorted(p.name for p in out.iterdir()) == ["encoders.json", "manifest.json", "model.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["model"] == "esmm"
    assert [o["name"] for o in manifest["outputs"]] == ["p_ctr", "p_cvr", "p_ctcvr", "invalid_ids"]
    assert [f["name"] for f in manifest["inputs"]["categorical"]["fields"]] == ["a", "b", "c"]
    assert manifest["inputs"]["numeric"]["fields"] == ["x"]
    assert manifest["check"]["rows"] == [512, 1] and max(manifest["check"]["max_abs_diff"].values()) <= 1e-5

    # serving: raw rows -> the exported encoders -> the graph; predict() is the reference
    encoders = FeatureEncoders.load(out / "encoders.json")
    cat, num = encoders.transform(pd.read_csv(root / "test.csv", dtype=str))
    got = _session(out / "model.onnx").run(None, {"categorical": cat.astype(np.int64), "numeric": num})
    predict(run, root / "test.csv", tmp_path / "pred.csv", log=None)
    want = pd.read_csv(tmp_path / "pred.csv")
    for name, values in zip(["p_ctr", "p_cvr", "p_ctcvr"], got):
        np.testing.assert_allclose(values, want[name].to_numpy(), rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got[3], np.zeros(len(want), dtype=np.int64))


def test_out_of_vocabulary_ids_are_counted_and_scored_as_oov(exported):
    _, run, out = exported
    model, encoders, _ = load_run_model(run)
    sizes = [e.vocab_size for e in encoders.categorical]
    cat = np.array([[1, 1, 1], [-1, 1, 1], [sizes[0], sizes[1] + 5, 1], [-3, -1, sizes[2]], [0, 0, 0]], dtype=np.int64)
    num = np.linspace(-1, 1, len(cat), dtype=np.float32)[:, None]
    got = _session(out / "model.onnx").run(None, {"categorical": cat, "numeric": num})
    np.testing.assert_array_equal(got[3], [0, 1, 2, 3, 0])
    oov = np.where((cat < 0) | (cat >= np.array(sizes)), np.array(sizes) - 1, cat)
    assert [e.oov_index for e in encoders.categorical] == [s - 1 for s in sizes]
    with torch.no_grad():
        probs = model(Batch(torch.from_numpy(oov), torch.from_numpy(num))).probs
    for values, name in zip(got, ["ctr", "cvr", "ctcvr"]):
        np.testing.assert_allclose(values, probs[name].numpy(), rtol=0, atol=1e-6)


def test_the_batch_axis_is_dynamic(exported):
    _, run, out = exported
    session = _session(out / "model.onnx")
    _, encoders, _ = load_run_model(run)
    for rows in (1, 3, 5000):
        inputs = export_mod.sample_inputs(encoders.feature_spec(), rows, seed=rows)
        outs = session.run(None, {"categorical": inputs[0], "numeric": inputs[1]})
        assert [o.shape for o in outs] == [(rows,)] * 4


def test_a_failed_check_leaves_the_previous_export_untouched(exported, monkeypatch):
    _, run, out = exported
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    real = export_mod._named_outputs
    monkeypatch.setattr(export_mod, "_named_outputs",
                        lambda *a: {k: o + 1e-3 if o.dtype == np.float32 else o for k, o in real(*a).items()})
    with pytest.raises(ExportError, match=r"differs from PyTorch by 0\.001 on p_c\w+, more than max\(atol 1e-05, .*\); .* was left as it was"):
        export_run(run, out, check_rows=64)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no temp folder left either
    with pytest.raises(ExportError, match="was left as it was"):
        export_run(run, out.parent / "new_export", check_rows=64)
    assert not (out.parent / "new_export").exists()  # a folder the failed export made is removed again


def test_categorical_only_final_2b_kd_exports_with_one_input(tmp_path):
    """The Frappe shape: categorical fields only, FINAL(2B)+KD behind the field gate."""
    features = FeatureSpec(categorical=(("a", 7), ("b", 5), ("c", 9)), numeric=())
    torch.manual_seed(0)
    cfg = make_cfg("model=final", "block.kind=final", "block.hidden_units=[8,8]", "model.num_blocks=2",
                   "model.kd=true", "model.field_gate=true", "model.block2.hidden_units=[8]", "model.embedding_dim=4")
    model = build_model(cfg, features, tasks("ctr"))
    for p in model.parameters():  # away from the init's near-zero embeddings, so the check compares real values
        torch.nn.init.normal_(p, std=0.5)
    model.eval()
    doc = export_onnx(model, features, tmp_path / "m.onnx", check_rows=256)
    assert list(doc["inputs"]) == ["categorical"]
    session = _session(tmp_path / "m.onnx")
    assert [i.name for i in session.get_inputs()] == ["categorical"]
    cat = export_mod.sample_inputs(features, 100, seed=5)[0]
    p_ctr, invalid = session.run(None, {"categorical": cat})
    with torch.no_grad():
        want = model(Batch(torch.from_numpy(cat), torch.zeros(100, 0))).probs["ctr"].numpy()
    assert want.std() > 0.01
    np.testing.assert_allclose(p_ctr, want, rtol=0, atol=1e-6)
    assert not invalid.any()


def test_numeric_only_graph_takes_one_input(tmp_path):
    features = FeatureSpec(categorical=(), numeric=("x", "y"))
    torch.manual_seed(0)
    model = build_model(make_cfg("model=mlp", "block.hidden_units=[4]", "model.embedding_dim=4"), features,
                        tasks("ctr"))
    torch.nn.init.normal_(model.embedding.numeric)
    model.eval()
    graph = ServingGraph(model, features)
    assert graph.input_names == ["numeric"] and graph.output_names == ["p_ctr", "invalid_ids"]
    export_onnx(model, features, tmp_path / "m.onnx", check_rows=64)
    num = np.random.default_rng(0).standard_normal((6, 2)).astype(np.float32)
    p_ctr, invalid = _session(tmp_path / "m.onnx").run(None, {"numeric": num})
    with torch.no_grad():
        want = model(Batch(torch.zeros(6, 0, dtype=torch.long), torch.from_numpy(num))).probs["ctr"].numpy()
    assert want.std() > 0.01
    np.testing.assert_allclose(p_ctr, want, rtol=0, atol=1e-6)
    assert invalid.tolist() == [0] * 6


def test_missing_exporter_packages_are_named(exported, monkeypatch):
    _, run, _ = exported
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    with pytest.raises(ExportError, match=r"\['onnxruntime'\]: pip install -e \"\.\[export\]\""):
        export_run(run)


def test_cli_names_an_unfinished_run_directory(tmp_path, capsys):
    assert export_main(["--run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'config.yaml'} not found" in err and "finished training run" in err


def test_export_out_naming_an_existing_file_is_refused(esmm_run, tmp_path, capsys):
    _, run_dir, _ = esmm_run
    target = tmp_path / "model_dir"
    target.write_text("keep me")
    assert export_main(["--run", str(run_dir), "--out", str(target), "--check-rows", "8"]) == 2
    err = capsys.readouterr().err
    assert err == f"error: --out {target} is a file; name a folder for the export\n"
    assert target.read_text() == "keep me"


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_export_refuses_an_opset_it_cannot_write(esmm_run, tmp_path):
    _, run_dir, _ = esmm_run
    model, encoders, _ = load_run_model(run_dir)
    seen = _Records()
    logging.getLogger("onnxscript").addHandler(seen)
    try:
        with pytest.raises(ExportError) as err:
            export_onnx(model, encoders.feature_spec(), tmp_path / "m.onnx", opset=5, check_rows=8)
    finally:
        logging.getLogger("onnxscript").removeHandler(seen)
    assert str(err.value) == ("torch.onnx could not write ONNX opset 5 for ESMM (the file has opset 18); "
                              "choose another --opset (18, the default, always works)")
    assert not seen.records  # the converter's notice and traceback are not printed


def test_export_cli_opset_is_the_files_opset(esmm_run, tmp_path, capsys):
    _, run_dir, _ = esmm_run
    out = tmp_path / "ex"
    assert export_main(["--run", str(run_dir), "--out", str(out), "--opset", "5", "--check-rows", "8"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {run_dir}: torch.onnx could not write ONNX opset 5 for ESMM")
    assert err.rstrip().endswith(f"{out} was left as it was") and not out.exists()
