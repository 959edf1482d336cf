"""Raw-input ONNX export (mtl_final/onnx_encoders.py, `export --raw-inputs`): the encoders as ONNX
operators map raw values exactly as FeatureEncoders.transform does, and the merged graph scores raw
CSV rows like mtl_final.predict."""
from __future__ import annotations

import json
import math

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

from mtl_final.data.encoders import FeatureEncoders
from mtl_final.data.schema import FieldSpec
from mtl_final.export import export_onnx, main as export_main
from mtl_final.onnx_encoders import UNSEEN_VALUES, encoder_graph, with_raw_inputs
from mtl_final.predict import load_run_model, predict
from tests.support.tiny_data import train_tiny_esmm

torch.set_num_threads(1)


def _run(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


@pytest.fixture()
def fitted() -> FeatureEncoders:
    fields = [FieldSpec("city", "categorical"), FieldSpec("brand", "categorical", min_count=2),
              FieldSpec("price", "numeric", norm="standard"), FieldSpec("age", "numeric", norm="minmax", fill_na=30.0),
              FieldSpec("clicks", "numeric", norm="log1p"), FieldSpec("raw", "numeric")]
    train = pd.DataFrame({"city": ["paris", "rome", "paris", "oslo"], "brand": ["x", "x", "y", "z"],
                          "price": [1.0, 2.0, 3.0, 2.0], "age": [20.0, 40.0, np.nan, 60.0],
                          "clicks": [0.0, 9.0, -3.0, 1.0], "raw": [5.0, 6.0, 7.0, 8.0]})
    return FeatureEncoders(fields).fit([train])


def test_encoder_graph_maps_raw_values_like_feature_encoders(fitted):
    # vocabularies by count then value: city paris=1, oslo=2, rome=3 (OOV 4); brand x=1 (y, z rare: OOV 2)
    raw = {"city": np.array(["rome", "", "lyon", "paris", "oslo"], dtype=object),
           "brand": np.array(["x", "y", "", "w", "x"], dtype=object),
           "price": np.array([4.0, np.nan, 2.0, -1.0, 1e6]), "age": np.array([np.nan, 20.0, 60.0, 0.0, 50.0]),
           "clicks": np.array([-1.0, 0.0, 1e-9, 99.0, np.nan]), "raw": np.array([1.5, np.nan, -2.0, 0.0, 3.0])}
    got = _run(encoder_graph(fitted, 18), raw)
    cat, num = fitted.transform(pd.DataFrame(raw))
    np.testing.assert_array_equal(got["categorical"], [[3, 1], [0, 2], [4, 0], [1, 2], [2, 1]])
    np.testing.assert_array_equal(got["categorical"], cat)
    np.testing.assert_array_equal(got[UNSEEN_VALUES], [0, 1, 1, 1, 0])  # y (rare), lyon, w
    assert got["numeric"].dtype == np.float32
    np.testing.assert_allclose(got["numeric"], num, rtol=1e-7, atol=0)
    # by hand: price mean 2, std sqrt(0.5); age filled with 30, train min 20, max 60; clicks sign·log1p
    std = math.sqrt(0.5)
    assert got["numeric"][0, 0] == pytest.approx((4 - 2) / std, rel=1e-6)
    assert got["numeric"][1, 0] == pytest.approx((0 - 2) / std, rel=1e-6)  # NaN → fill_na None = 0, normalised
    assert got["numeric"][0, 1] == pytest.approx((30 - 20) / 40, rel=1e-6)
    assert got["numeric"][0, 2] == pytest.approx(-math.log1p(1.0), rel=1e-6)
    assert got["numeric"][1, 3] == 0.0 and got["numeric"][2, 3] == -2.0


def test_raw_export_scores_raw_csv_rows_like_predict(tmp_path):
    root, run = train_tiny_esmm(tmp_path, "tower=final", "tower.dual=true")
    (run / "export").mkdir()
    (run / "export" / "model_raw.onnx").write_text("stale")
    assert export_main(["--run", str(run), "--raw-inputs", "--check-rows", "256"]) == 0
    out = run / "export"
    assert sorted(p.name for p in out.iterdir()) == ["encoders.json", "manifest.json", "model.onnx", "model_raw.onnx"]
    manifest = json.loads((out / "manifest.json").read_text())["raw_inputs"]
    assert [(i["name"], i["dtype"]) for i in manifest["inputs"]] == [
        ("a", "string"), ("b", "string"), ("c", "string"), ("x", "float64")]
    assert [o["name"] for o in manifest["outputs"]] == ["p_ctr", "p_cvr", "p_ctcvr", "invalid_ids", UNSEEN_VALUES]
    assert manifest["check"]["ids"] == "equal" and manifest["check"]["max_abs_diff"][UNSEEN_VALUES] == 0.0

    # raw test rows as a serving stack has them, with unseen values and missing cells mixed in
    frame = pd.read_csv(root / "test.csv", dtype=str, keep_default_na=False)
    frame.loc[0, "a"], frame.loc[1, "b"], frame.loc[1, "c"], frame.loc[2, "a"] = "zz", "new", "other", ""
    frame.loc[3, "x"] = ""
    frame.to_csv(tmp_path / "serve.csv", index=False)
    feeds = {f: frame[f].to_numpy(dtype=object) for f in ("a", "b", "c")}
    feeds["x"] = pd.to_numeric(frame["x"]).to_numpy(np.float64)
    session = ort.InferenceSession(str(out / "model_raw.onnx"), providers=["CPUExecutionProvider"])
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))
    predict(run, tmp_path / "serve.csv", tmp_path / "pred.csv", log=None)
    want = pd.read_csv(tmp_path / "pred.csv")
    for name in ("p_ctr", "p_cvr", "p_ctcvr"):
        np.testing.assert_allclose(got[name], want[name].to_numpy(), rtol=0, atol=1e-6)
    assert got[UNSEEN_VALUES][:4].tolist() == [1, 2, 0, 0] and got[UNSEEN_VALUES][4:].sum() == 0
    np.testing.assert_array_equal(got["invalid_ids"], 0)

    # exporting again without --raw-inputs leaves no stale raw graph of another model behind
    assert export_main(["--run", str(run), "--check-rows", "64"]) == 0
    assert not (out / "model_raw.onnx").exists()
    assert "raw_inputs" not in json.loads((out / "manifest.json").read_text())


def test_a_categorical_field_with_dtype_int_is_refused():
    # the Python encoders read '07' as 7; the graph's LabelEncoder would score the text '07' as unseen
    encoders = FeatureEncoders([FieldSpec("city", "categorical"), FieldSpec("shop", "categorical", dtype="int")])
    encoders.fit([pd.DataFrame({"city": ["paris", "rome"], "shop": ["7", "12"]})])
    assert encoders.transform(pd.DataFrame({"city": ["paris"], "shop": ["07"]}))[0].tolist() == [[1, 2]]
    with pytest.raises(ValueError, match=r"field\(s\) \['shop'\] have dtype int.*Export without --raw-inputs"):
        encoder_graph(encoders, 18)


def test_a_field_named_like_a_value_inside_the_model_is_refused(fitted):
    from onnx import TensorProto, helper

    inner = helper.make_node("Cast", ["categorical"], ["city"], to=TensorProto.FLOAT)  # a value named "city"
    out = helper.make_node("ReduceSum", ["city"], ["p_ctr"], keepdims=0)
    graph = helper.make_graph([inner, out], "m", [helper.make_tensor_value_info("categorical", TensorProto.INT64, ["b", 2])],
                              [helper.make_tensor_value_info("p_ctr", TensorProto.FLOAT, [])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    with pytest.raises(ValueError, match=r"field name\(s\) \['city'\] are also names inside"):
        with_raw_inputs(model, fitted)


def test_a_raw_graph_that_encodes_differently_is_refused(tmp_path, monkeypatch):
    import copy

    import mtl_final.export as export_mod
    from mtl_final.export import ExportError, export_run

    _, run = train_tiny_esmm(tmp_path)
    real = export_mod.encoder_graph

    def reversed_vocab(encoders, opset):  # the encoders' graph with field a's vocabulary in reverse order
        wrong = copy.deepcopy(encoders)
        wrong.categorical[0].vocab = wrong.categorical[0].vocab[::-1]
        return real(wrong, opset)

    monkeypatch.setattr(export_mod, "encoder_graph", reversed_vocab)
    with pytest.raises(ExportError, match=r"the ONNX encoders give id \d+ for a='\d+', FeatureEncoders gives \d+"):
        export_run(run, tmp_path / "out", check_rows=64, raw_inputs=True)
    assert not (tmp_path / "out").exists()


@pytest.fixture(scope="module")
def encoded_onnx(esmm_run):
    """The run's model exported at the default opset (encoded inputs), and the run's encoders."""
    _, run_dir, tmp = esmm_run
    model, encoders, _ = load_run_model(run_dir)
    path = tmp / "encoded.onnx"
    export_onnx(model, encoders.feature_spec(), path, check_rows=8)
    return onnx.load(str(path)), encoders


@pytest.mark.parametrize("field", ["categorical", "numeric", "unseen_values", "enc/oov_ids", "enc/axis1"])
def test_a_field_named_like_a_name_inside_the_encoder_graph_is_refused(encoded_onnx, field):
    model, _ = encoded_onnx
    fields = [FieldSpec(field if field != "numeric" else "a", "categorical"),
              FieldSpec(field if field == "numeric" else "x", "numeric", norm="standard")]
    names = [f.name for f in fields]
    encoders = FeatureEncoders(fields).fit([pd.DataFrame({names[0]: ["u", "v"], names[1]: [1.0, 2.0]})])
    with pytest.raises(ValueError) as err:
        with_raw_inputs(model, encoders)
    assert str(err.value) == (f"field name(s) {[field]} are also names inside the exported model's graph; "
                              "rename the field(s) in the dataset schema to export raw inputs")
