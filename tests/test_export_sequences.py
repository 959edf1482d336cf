"""ONNX export with sequence fields: one padded int64 [batch, max_len] input per field scores like the
PyTorch model (mean, sum, max and attention pooling, shared and own regions), out-of-vocabulary ids are
counted and scored as OOV, and the raw-input graph splits cells inside ONNX (opset 20) exactly as the
sequence encoding of the interface does (here a reference encoder written out in the test; the
end-to-end run test needs the data pipeline's sequence fields and runs once it has them)."""
from __future__ import annotations

import dataclasses
import json
from types import SimpleNamespace

import numpy as np
import onnx
import onnxruntime as ort
import pandas as pd
import pytest
import torch

import mtl_final.export as export_mod
from mtl_final.data import schema as schema_mod
from mtl_final.data.encoders import EncodedRows, FeatureEncoders
from mtl_final.data.features import Batch, FeatureSpec, SequenceSpec
from mtl_final.data.schema import FieldSpec
from mtl_final.export import ExportError, ServingGraph, export_onnx, export_raw_onnx
from mtl_final.models import build_model
from mtl_final.nn.embedding import FeatureEmbedding
from mtl_final.onnx_encoders import UNSEEN_VALUES, check_raw_inputs, encoded_sequence, encoder_graph
from tests.support.model_fixtures import make_cfg, tasks

torch.set_num_threads(1)

FEATURES = FeatureSpec(categorical=(("item", 9), ("user", 5)), numeric=("x",), sequences=(
    SequenceSpec("hist", 6, 9, "item", "attention", "item", (8, 4), "prelu"),
    SequenceSpec("genres", 4, 7, None, "mean", None),
    SequenceSpec("genres_max", 3, 7, None, "max", None),
    SequenceSpec("clicked", 5, 9, "item", "sum", None),
))


def build(name: str, features: FeatureSpec = FEATURES, *overrides: str):
    """An eval-mode model with N(0, 0.5) weights (padding rows 0), so the check compares real values."""
    multi = name in ("mmoe", "esmm")
    torch.manual_seed(0)
    model = build_model(make_cfg(f"model={name}", "model.embedding_dim=4", "block.hidden_units=[8]",
                                 "tower.hidden_units=[8]", "expert.hidden_units=[8]", *overrides),
                        features, tasks(*(("ctr", "cvr") if multi else ("ctr",))))
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
        for m in model.modules():
            if isinstance(m, FeatureEmbedding):
                m.table.weight[m.padding_rows] = 0.0
    return model.eval()


def _session(model: onnx.ModelProto | str) -> ort.InferenceSession:
    data = model if isinstance(model, str) else model.SerializeToString()
    return ort.InferenceSession(data, providers=["CPUExecutionProvider"])


def _torch(model, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    with torch.no_grad():
        out = model(Batch(torch.from_numpy(feeds["categorical"]), torch.from_numpy(feeds["numeric"]),
                          seq={s.name: torch.from_numpy(feeds[s.name]) for s in FEATURES.sequences}))
    return {k: v.numpy() for k, v in out.probs.items()}


@pytest.fixture(scope="module")
def din_export(tmp_path_factory):
    path = tmp_path_factory.mktemp("seq_export") / "din.onnx"
    model = build("din")
    doc = export_onnx(model, FEATURES, path, opset=20, check_rows=512)
    return model, path, doc


def test_the_graph_takes_one_padded_input_per_sequence_field_and_scores_like_pytorch(din_export):
    model, path, doc = din_export
    assert list(doc["inputs"]) == ["categorical", "numeric", "hist", "genres", "genres_max", "clicked"]
    assert doc["inputs"]["hist"] == {"dtype": "int64", "shape": ["batch", 6], "sequence": True, "padding": 0,
                                     "vocab_size": 9, "oov_index": 8, "pooling": "attention", "share_embedding": "item"}
    assert doc["check"]["rows"] == [512, 1] and doc["check"]["max_abs_diff"]["p_ctr"] <= 1e-5
    session = _session(str(path))
    assert [(i.name, i.shape) for i in session.get_inputs()][2:] == [
        ("hist", ["batch", 6]), ("genres", ["batch", 4]), ("genres_max", ["batch", 3]), ("clicked", ["batch", 5])]
    # a pooling exported as embedding_bag would be an ONNX Loop over rows
    assert "Loop" not in {node.op_type for node in onnx.load(str(path)).graph.node}
    empty = [(a == 0).all(axis=1).sum() for a in export_mod.sample_inputs(FEATURES, 700, seed=700)[2:]]
    assert min(empty) > 0  # the checked rows hold empty sequences too
    for rows in (1, 3, 700):
        inputs = export_mod.sample_inputs(FEATURES, rows, seed=rows)
        feeds = dict(zip(ServingGraph(model, FEATURES).input_names, inputs))
        p_ctr, invalid = session.run(None, feeds)
        np.testing.assert_allclose(p_ctr, _torch(model, feeds)["ctr"], rtol=0, atol=1e-5)
        np.testing.assert_array_equal(invalid, np.zeros(rows))


def test_out_of_vocabulary_sequence_ids_are_counted_and_scored_as_oov(din_export):
    model, path, _ = din_export
    feeds = dict(zip(["categorical", "numeric", "hist", "genres", "genres_max", "clicked"],
                     export_mod.sample_inputs(FEATURES, 4, seed=9)))
    feeds["hist"][0, 0], feeds["hist"][1, :2] = 9, [-1, 40]
    feeds["genres"][2, 0], feeds["clicked"][1, 0] = 7, 100
    p_ctr, invalid = _session(str(path)).run(None, feeds)
    np.testing.assert_array_equal(invalid, [1, 3, 1, 0])
    oov = {name: np.where((a < 0) | (a >= size), size - 1, a) for name, a, size in
           [(s.name, feeds[s.name], s.vocab_size) for s in FEATURES.sequences]}
    np.testing.assert_allclose(p_ctr, _torch(model, {**feeds, **oov})["ctr"], rtol=0, atol=1e-5)


def test_a_multi_task_model_with_sequences_exports_with_its_check(tmp_path):
    model = build("mmoe", FEATURES, "expert=final")
    doc = export_onnx(model, FEATURES, tmp_path / "mmoe.onnx", check_rows=256)
    assert [o["name"] for o in doc["outputs"]] == ["p_ctr", "p_cvr", "p_ctcvr", "invalid_ids"]
    assert max(doc["check"]["max_abs_diff"].values()) <= 1e-5


def test_a_sequence_field_named_like_a_graph_input_is_refused():
    features = dataclasses.replace(FEATURES, sequences=(dataclasses.replace(FEATURES.sequences[1], name="numeric"),))
    with pytest.raises(ExportError, match=r"sequence field\(s\) \['numeric'\] are named like another input"):
        ServingGraph(build("mlp", features), features)


# --- raw inputs ----------------------------------------------------------------------------------


class ReferenceSequenceEncoder:
    """The interface's sequence encoding, written out: split on the separator, drop empty tokens, ids
    as a categorical field (vocabulary 1..n, else OOV n + 1), keep the LAST max_len, left-align, pad 0."""

    dtype = "str"

    def __init__(self, name: str, separator: str, max_len: int, vocab: list[str], last: bool = True) -> None:
        self.name, self.separator, self.max_len, self.last = name, separator, max_len, last
        self.vocab = SimpleNamespace(vocab=list(vocab))  # as SequenceEncoder: the (owner's) vocabulary encoder
        self.oov_index = len(vocab) + 1
        self.index = {v: i + 1 for i, v in enumerate(vocab)}

    def transform(self, cells: pd.Series) -> np.ndarray:
        out = np.zeros((len(cells), self.max_len), dtype=np.int64)
        for row, cell in enumerate(cells):
            ids = [self.index.get(t, self.oov_index) for t in (cell or "").split(self.separator) if t]
            ids = ids[-self.max_len:] if self.last else ids[:self.max_len]
            out[row, :len(ids)] = ids
        return out


class EncodersWithSequences:
    """FeatureEncoders (categorical, numeric) plus reference sequence encoders, with FeatureEncoders'
    transform: (cat, num) with the sequences as ``.seq``."""

    def __init__(self, base: FeatureEncoders, sequences: list[ReferenceSequenceEncoder], specs) -> None:
        self.base, self.sequences, self.specs = base, sequences, specs
        self.categorical, self.numeric = base.categorical, base.numeric
        self.columns = base.columns + [e.name for e in sequences]

    def feature_spec(self) -> FeatureSpec:
        return dataclasses.replace(self.base.feature_spec(), sequences=self.specs)

    def transform(self, df: pd.DataFrame):
        cat, num = self.base.transform(df[self.base.columns])
        return EncodedRows(cat, num, {e.name: e.transform(df[e.name]) for e in self.sequences})

    def reset_counters(self) -> None:
        self.base.reset_counters()


def raw_encoders(last: bool = True) -> EncodersWithSequences:
    base = FeatureEncoders([FieldSpec("item", "categorical"), FieldSpec("user", "categorical"),
                            FieldSpec("x", "numeric", norm="standard")])
    base.fit([pd.DataFrame({"item": [f"i{k}" for k in range(7)], "user": ["u0", "u1", "u2", "u0", "u1", "u2", "u0"],
                            "x": np.linspace(-1, 1, 7)})])
    item = base.categorical[0]
    assert (item.vocab_size, base.categorical[1].vocab_size) == (9, 5)
    genres = [f"g{k}" for k in range(5)]
    sequences = [ReferenceSequenceEncoder("hist", "|", 6, item.vocab, last),
                 ReferenceSequenceEncoder("genres", " ", 4, genres, last),
                 ReferenceSequenceEncoder("genres_max", " ", 3, genres, last),
                 ReferenceSequenceEncoder("clicked", ",", 5, item.vocab, last)]
    return EncodersWithSequences(base, sequences, FEATURES.sequences)


def test_the_encoder_graph_splits_cells_like_the_interface_encoding():
    encoders = raw_encoders()
    cells = {"item": np.array(["i1", "i2", "", "zz"], dtype=object), "user": np.array(["u0"] * 4, dtype=object),
             "x": np.zeros(4), "genres": np.array(["g1 g2", "", "g0  g1", "g4 nope g3 g2 g1 g0"], dtype=object),
             "genres_max": np.array(["g1", "g2 g2 g2 g2", "", " "], dtype=object),
             "clicked": np.array(["i0,i1", ",,", "i6,", "x"], dtype=object),
             "hist": np.array(["i3|i1|i2", "", "i1||zz|i2", "i0|i1|i2|i3|i4|i5|i6|i0|i1"], dtype=object)}
    session = _session(encoder_graph(encoders, 20))
    got = dict(zip([o.name for o in session.get_outputs()], session.run(None, cells)))
    seq = encoders.transform(pd.DataFrame(cells)).seq
    i = {v: k + 1 for k, v in enumerate(encoders.categorical[0].vocab)}
    assert seq["hist"].tolist() == [[i["i3"], i["i1"], i["i2"], 0, 0, 0], [0] * 6, [i["i1"], 8, i["i2"], 0, 0, 0],
                                    [i[v] for v in ["i3", "i4", "i5", "i6", "i0", "i1"]]]  # the last 6 of 9
    for name in seq:
        np.testing.assert_array_equal(got[encoded_sequence(name)], seq[name], err_msg=name)
    oov = sum((seq[e.name] == e.oov_index).sum(axis=1) for e in encoders.sequences)
    np.testing.assert_array_equal(got[UNSEEN_VALUES], oov + np.array([0, 0, 0, 1]))  # item "zz"


def test_the_raw_input_graph_scores_raw_cells_like_encoders_and_pytorch(din_export, tmp_path):
    model, path, doc = din_export
    encoders = raw_encoders()
    raw = export_raw_onnx(model, encoders, path, tmp_path / "raw.onnx", doc["check"]["tolerance"], check_rows=300)
    assert raw["check"]["ids"] == "equal" and raw["check"]["max_abs_diff"][UNSEEN_VALUES] == 0.0
    assert [(i["name"], i["dtype"]) for i in raw["inputs"]][3:] == [
        ("hist", "string"), ("genres", "string"), ("genres_max", "string"), ("clicked", "string")]
    assert raw["inputs"][3] == {"name": "hist", "dtype": "string", "shape": ["batch"], "missing": "",
                                "separator": "|", "max_len": 6, "oov_index": 8}
    session = _session(str(tmp_path / "raw.onnx"))
    assert [i.name for i in session.get_inputs()] == ["item", "user", "x", "hist", "genres", "genres_max", "clicked"]
    assert sorted(o.name for o in session.get_outputs()) == ["invalid_ids", "p_ctr", UNSEEN_VALUES]


def test_a_raw_graph_that_keeps_other_tokens_than_the_encoders_is_refused(din_export, tmp_path):
    model, path, doc = din_export
    encoders = raw_encoders(last=False)  # the Python side keeps the FIRST max_len
    with pytest.raises(ExportError, match=r"the ONNX encoders give id \d+ for \w+='[^']*' \(position \d\), "
                                          r"FeatureEncoders gives \d+"):
        export_raw_onnx(model, encoders, path, tmp_path / "raw.onnx", doc["check"]["tolerance"], 64)


def test_raw_inputs_with_sequences_below_opset_20_or_of_dtype_int_are_refused(tmp_path):
    encoders = raw_encoders()
    with pytest.raises(ValueError, match=r"sequence field\(s\) \['hist', 'genres', 'genres_max', 'clicked'\] are split "
                                         r"inside the raw-input graph by StringSplit, an ONNX opset 20 operator; "
                                         r"export with --opset 20 \(this export asks for opset 18\)"):
        check_raw_inputs(encoders, 18)
    model = build("din")
    doc = export_onnx(model, FEATURES, tmp_path / "m.onnx", check_rows=8)  # the default opset, 18
    with pytest.raises(ExportError, match=r"cannot put the encoders in front of the model: sequence field\(s\)"):
        export_raw_onnx(model, encoders, tmp_path / "m.onnx", tmp_path / "raw.onnx", doc["check"]["tolerance"], 8)
    encoders.sequences[1].dtype = "int"
    with pytest.raises(ValueError, match=r"field\(s\) \['genres'\] have dtype int"):
        check_raw_inputs(encoders, 20)


@pytest.mark.skipif("sequence" not in schema_mod.FIELD_TYPES,
                    reason="the data pipeline of this tree reads no sequence fields yet")
def test_a_trained_din_run_exports_with_raw_inputs_and_scores_like_predict(tmp_path):
    from mtl_final.export import main as export_main
    from mtl_final.predict import predict
    from mtl_final.train.__main__ import main as train_main

    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    root.mkdir()
    for split, rows in (("train", 300), ("valid", 100), ("test", 100)):
        items = rng.integers(0, 8, rows)
        hist = ["|".join(f"i{v}" for v in rng.integers(0, 8, rng.integers(0, 9))) for _ in range(rows)]
        click = (rng.random(rows) < np.array([0.7 if f"i{i}" in h else 0.3 for i, h in zip(items, hist)])).astype(int)
        pd.DataFrame({"item": [f"i{v}" for v in items], "hist": hist, "click": click}).to_csv(
            root / f"{split}.csv", index=False)
    (root / "schema.yaml").write_text(
        "name: tiny_seq\nfields:\n  - {name: item, type: categorical}\n"
        "  - {name: hist, type: sequence, max_len: 5, share_embedding: item, pooling: attention, target: item}\n"
        "tasks:\n  - {name: ctr, label: click}\n")
    run = tmp_path / "run"
    assert train_main(["--out", str(run), f"data.schema={root / 'schema.yaml'}", f"data.root={root}",
                       f"data.cache_dir={tmp_path / 'cache'}", "model=din", "block.hidden_units=[8]",
                       "train.epochs=1", "train.batch_size=32", "train.progress=false", "train.tensorboard=false",
                       "train.num_threads=1"]) == 0
    assert export_main(["--run", str(run), "--raw-inputs", "--opset", "20", "--check-rows", "128"]) == 0
    manifest = json.loads((run / "export" / "manifest.json").read_text())
    assert manifest["inputs"]["hist"]["shape"] == ["batch", 5]
    frame = pd.read_csv(root / "test.csv", dtype=str, keep_default_na=False)
    session = _session(str(run / "export" / "model_raw.onnx"))
    got = dict(zip([o.name for o in session.get_outputs()],
                   session.run(None, {c: frame[c].to_numpy(dtype=object) for c in ("item", "hist")})))
    predict(run, root / "test.csv", tmp_path / "pred.csv", log=None)
    np.testing.assert_allclose(got["p_ctr"], pd.read_csv(tmp_path / "pred.csv")["p_ctr"].to_numpy(), rtol=0, atol=1e-6)
