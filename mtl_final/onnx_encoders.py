"""A run's fitted FeatureEncoders as an ONNX graph: raw feature values in, the model's encoded inputs out.

`with_raw_inputs(model, encoders)` puts that graph in front of an exported model (mtl_final/export.py),
so that a serving stack feeds raw values and needs no copy of the encoders' logic:

- inputs, one per field, named as the field: a categorical field is string [batch], the cell's text
  ("" = missing); a numeric field is double [batch] (NaN = missing); a sequence field is string [batch],
  the cell's text ("" = an empty sequence);
- categorical: ai.onnx.ml LabelEncoder, "" → padding 0, the i-th vocabulary value → i, anything else
  → the field's OOV id; numeric: NaN → fill_na, then the field's normalisation in float64, then
  float32; sequence: StringSplit on the field's separator (ONNX opset 20), LabelEncoder per token,
  empty tokens dropped, the last max_len tokens kept, left-aligned, padding 0 after them. That is
  FeatureEncoders.transform, operation for operation;
- `unseen_values` int64 [batch]: how many of the row's categorical and (kept) sequence values were
  scored as OOV (the monitoring counter that `mtl_final.predict` reports per field).

A sequence encoder (``FeatureEncoders.sequences``) is read for its name, dtype, separator, max_len,
vocab (its own CategoricalEncoder, or its share_embedding field's: `vocab.vocab` holds the values) and oov_index.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from mtl_final.data.encoders import FeatureEncoders, NumericEncoder

ML_DOMAIN = "ai.onnx.ml"
ML_OPSET = 3
SEQUENCE_OPSET = 20  # StringSplit
UNSEEN_VALUES = "unseen_values"
ENCODED = ("categorical", "numeric")


def sequence_encoders(encoders: FeatureEncoders) -> list[Any]:
    """The encoders' sequence fields (SequenceEncoder), in FeatureSpec order."""
    return list(encoders.sequences)


def encoded_sequence(name: str) -> str:
    """The encoder graph's output for sequence field ``name`` (the model's input of that name)."""
    return f"enc/{name}/ids"


def check_raw_inputs(encoders: FeatureEncoders, opset: int) -> None:
    """Raise ValueError where the raw-input graph cannot encode like FeatureEncoders: a field of dtype int
    (its cells are parsed), or sequence fields below SEQUENCE_OPSET."""
    sequences = sequence_encoders(encoders)
    parsed = [e.name for e in [*encoders.categorical, *sequences] if e.dtype != "str"]
    if parsed:
        raise ValueError(f"categorical field(s) {parsed} have dtype int, whose cells are parsed ('07' and '7' are "
                         "one value); the raw-input graph matches cell text as written and would score '07' as "
                         "unseen. Export without --raw-inputs and encode with the run's encoders.json, or use dtype str")
    if sequences and opset < SEQUENCE_OPSET:
        raise ValueError(f"sequence field(s) {[e.name for e in sequences]} are split inside the raw-input graph by "
                         f"StringSplit, an ONNX opset {SEQUENCE_OPSET} operator; export with --opset "
                         f"{SEQUENCE_OPSET} (this export asks for opset {opset}), or without --raw-inputs and encode "
                         "with the run's encoders.json")


def raw_inputs_doc(encoders: FeatureEncoders) -> list[dict[str, Any]]:
    """The raw graph's inputs for the manifest: name, dtype, shape and how a missing value is given."""
    return ([{"name": e.name, "dtype": "string", "shape": ["batch"], "missing": "",
              "vocab_size": e.vocab_size, "oov_index": e.oov_index} for e in encoders.categorical]
            + [{"name": e.name, "dtype": "float64", "shape": ["batch"], "missing": "NaN",
                "fill_na": e.fill_value, "norm": e.norm} for e in encoders.numeric]
            + [{"name": e.name, "dtype": "string", "shape": ["batch"], "missing": "", "separator": e.separator,
                "max_len": e.max_len, "oov_index": e.oov_index} for e in sequence_encoders(encoders)])


def encoder_graph(encoders: FeatureEncoders, opset: int) -> Any:
    """The onnx.ModelProto mapping raw inputs to `categorical` int64 [batch, Fc], `numeric` float32
    [batch, Fn], per sequence field `encoded_sequence(name)` int64 [batch, max_len], and `unseen_values`
    int64 [batch] (each only where there are such fields). ValueError as `check_raw_inputs`."""
    from onnx import TensorProto, helper, numpy_helper

    check_raw_inputs(encoders, opset)
    sequences = sequence_encoders(encoders)
    nodes, consts, inputs, outputs = [], [], [], []
    unseen = []  # int64 [batch] counts of OOV values, one per kind of field

    def const(name: str, value: np.ndarray) -> str:
        consts.append(numpy_helper.from_array(value, name))
        return name

    axis1 = const("enc/axis1", np.array([1], dtype=np.int64))
    if encoders.categorical:
        columns = []
        for e in encoders.categorical:
            inputs.append(helper.make_tensor_value_info(e.name, TensorProto.STRING, ["batch"]))
            ids = f"enc/{e.name}/ids"
            nodes.append(helper.make_node("LabelEncoder", [e.name], [ids], domain=ML_DOMAIN,
                                          keys_strings=["", *e.vocab], values_int64s=list(range(len(e.vocab) + 1)),
                                          default_int64=e.oov_index))
            nodes.append(helper.make_node("Unsqueeze", [ids, axis1], [f"enc/{e.name}/column"]))
            columns.append(f"enc/{e.name}/column")
        nodes.append(helper.make_node("Concat", columns, ["categorical"], axis=1))
        oov = const("enc/oov_ids", np.array([e.oov_index for e in encoders.categorical], dtype=np.int64))
        count = "enc/unseen_categorical" if sequences else UNSEEN_VALUES
        nodes += [helper.make_node("Equal", ["categorical", oov], ["enc/is_oov"]),
                  helper.make_node("Cast", ["enc/is_oov"], ["enc/is_oov_int"], to=TensorProto.INT64),
                  helper.make_node("ReduceSum", ["enc/is_oov_int", axis1], [count], keepdims=0)]
        outputs.append(helper.make_tensor_value_info("categorical", TensorProto.INT64,
                                                     ["batch", len(encoders.categorical)]))
        unseen.append(count)
    if encoders.numeric:
        columns = []
        for e in encoders.numeric:
            inputs.append(helper.make_tensor_value_info(e.name, TensorProto.DOUBLE, ["batch"]))
            nodes += _numeric_nodes(e, const)
            nodes.append(helper.make_node("Cast", [f"enc/{e.name}/normalised"], [f"enc/{e.name}/float"],
                                          to=TensorProto.FLOAT))
            nodes.append(helper.make_node("Unsqueeze", [f"enc/{e.name}/float", axis1], [f"enc/{e.name}/column"]))
            columns.append(f"enc/{e.name}/column")
        nodes.append(helper.make_node("Concat", columns, ["numeric"], axis=1))
        outputs.append(helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", len(encoders.numeric)]))
    for e in sequences:
        inputs.append(helper.make_tensor_value_info(e.name, TensorProto.STRING, ["batch"]))
        nodes += _sequence_nodes(e, const, axis1)
        outputs.append(helper.make_tensor_value_info(encoded_sequence(e.name), TensorProto.INT64, ["batch", e.max_len]))
        unseen.append(f"enc/{e.name}/unseen")
    if unseen and unseen != [UNSEEN_VALUES]:  # ONNX Sum takes no integers: a chain of Add
        total = unseen[0]
        for i, count in enumerate(unseen[1:]):
            nodes.append(helper.make_node("Add", [total, count], [f"enc/unseen_sum{i}"]))
            total = f"enc/unseen_sum{i}"
        nodes.append(helper.make_node("Identity", [total], [UNSEEN_VALUES]))
    if unseen:
        outputs.append(helper.make_tensor_value_info(UNSEEN_VALUES, TensorProto.INT64, ["batch"]))
    graph = helper.make_graph(nodes, "mtl_final_encoders", inputs, outputs, initializer=consts)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset),
                                                   helper.make_opsetid(ML_DOMAIN, ML_OPSET)])


def _sequence_nodes(e: Any, const, axis1: str) -> list[Any]:
    """raw string [batch] → encoded_sequence(name) int64 [batch, max_len] and enc/<name>/unseen int64 [batch].

    A kept token's place is its rank among the row's non-empty tokens less the number dropped in front
    (max(count − max_len, 0)); every other token is scattered, as 0, into one spare column past max_len."""
    from onnx import TensorProto, helper

    x, p, width = e.name, f"enc/{e.name}", int(e.max_len)
    nodes = [helper.make_node("StringSplit", [x], [f"{p}/tokens", f"{p}/token_counts"], delimiter=e.separator),
             helper.make_node("LabelEncoder", [f"{p}/tokens"], [f"{p}/token_ids"], domain=ML_DOMAIN,
                              keys_strings=["", *e.vocab.vocab], values_int64s=list(range(len(e.vocab.vocab) + 1)),
                              default_int64=e.oov_index),
             # empty tokens (and StringSplit's padding) are id 0: not part of the sequence
             helper.make_node("Greater", [f"{p}/token_ids", const(f"{p}/zero", np.array(0, dtype=np.int64))],
                              [f"{p}/real"]),
             helper.make_node("Cast", [f"{p}/real"], [f"{p}/real_int"], to=TensorProto.INT64),
             helper.make_node("CumSum", [f"{p}/real_int", const(f"{p}/axis", np.array(1, dtype=np.int64))],
                              [f"{p}/rank"]),
             helper.make_node("ReduceSum", [f"{p}/real_int", axis1], [f"{p}/count"], keepdims=1),
             helper.make_node("Sub", [f"{p}/count", const(f"{p}/max_len", np.array(width, dtype=np.int64))],
                              [f"{p}/excess"]),
             helper.make_node("Max", [f"{p}/excess", f"{p}/zero"], [f"{p}/dropped"]),
             helper.make_node("Sub", [f"{p}/rank", f"{p}/dropped"], [f"{p}/place1"]),  # 1-based place when kept
             helper.make_node("Greater", [f"{p}/place1", f"{p}/zero"], [f"{p}/after_drop"]),
             helper.make_node("And", [f"{p}/real", f"{p}/after_drop"], [f"{p}/kept"]),
             helper.make_node("Sub", [f"{p}/place1", const(f"{p}/one", np.array(1, dtype=np.int64))],
                              [f"{p}/place"]),
             helper.make_node("Where", [f"{p}/kept", f"{p}/place", f"{p}/max_len"], [f"{p}/column"]),
             helper.make_node("Where", [f"{p}/kept", f"{p}/token_ids", f"{p}/zero"], [f"{p}/kept_ids"]),
             helper.make_node("Shape", [x], [f"{p}/rows"]),
             helper.make_node("Concat", [f"{p}/rows", const(f"{p}/width", np.array([width + 1], dtype=np.int64))],
                              [f"{p}/shape"], axis=0),
             helper.make_node("ConstantOfShape", [f"{p}/shape"], [f"{p}/empty"],
                              value=helper.make_tensor("zero", TensorProto.INT64, [1], [0])),
             # kept places are distinct, so "add" writes each id once; the spare column only sums zeros
             helper.make_node("ScatterElements", [f"{p}/empty", f"{p}/column", f"{p}/kept_ids"], [f"{p}/scattered"],
                              axis=1, reduction="add"),
             helper.make_node("Slice", [f"{p}/scattered", const(f"{p}/start", np.array([0], dtype=np.int64)),
                                        const(f"{p}/stop", np.array([width], dtype=np.int64)), axis1],
                              [encoded_sequence(x)]),
             helper.make_node("Equal", [encoded_sequence(x), const(f"{p}/oov", np.array(e.oov_index, dtype=np.int64))],
                              [f"{p}/is_oov"]),
             helper.make_node("Cast", [f"{p}/is_oov"], [f"{p}/is_oov_int"], to=TensorProto.INT64),
             helper.make_node("ReduceSum", [f"{p}/is_oov_int", axis1], [f"{p}/unseen"], keepdims=0)]
    return nodes


def _numeric_nodes(e: NumericEncoder, const) -> list[Any]:
    """raw double [batch] → enc/<name>/normalised double [batch], as NumericEncoder.transform."""
    from onnx import helper

    x, p = e.name, f"enc/{e.name}"
    fill = const(f"{p}/fill", np.array(e.fill_value, dtype=np.float64))
    nodes = [helper.make_node("IsNaN", [x], [f"{p}/missing"]),
             helper.make_node("Where", [f"{p}/missing", fill, x], [f"{p}/filled"])]
    filled, out = f"{p}/filled", f"{p}/normalised"
    if e.norm == "standard":
        shift, scale = e.mean, (e.std if e.std > 0 else 1.0)
    elif e.norm == "minmax":
        span = e.max - e.min
        shift, scale = e.min, (span if span > 0 else 1.0)
    elif e.norm == "log1p":
        # sign(x) · log1p(|x|); ONNX has no Log1p and log(1 + a) loses a's digits for small a, so
        # log1p(a) = log(u) · a / (u - 1) with u = 1 + a (exact where u == 1: a itself)
        one = const(f"{p}/one", np.array(1.0, dtype=np.float64))
        a, u = f"{p}/abs", f"{p}/u"
        return nodes + [helper.make_node("Abs", [filled], [a]),
                        helper.make_node("Add", [a, one], [u]),
                        helper.make_node("Log", [u], [f"{p}/log_u"]),
                        helper.make_node("Sub", [u, one], [f"{p}/u_minus_1"]),
                        helper.make_node("Div", [a, f"{p}/u_minus_1"], [f"{p}/ratio"]),
                        helper.make_node("Mul", [f"{p}/log_u", f"{p}/ratio"], [f"{p}/corrected"]),
                        helper.make_node("Equal", [u, one], [f"{p}/tiny"]),
                        helper.make_node("Where", [f"{p}/tiny", a, f"{p}/corrected"], [f"{p}/log1p"]),
                        helper.make_node("Sign", [filled], [f"{p}/sign"]),
                        helper.make_node("Mul", [f"{p}/sign", f"{p}/log1p"], [out])]
    elif e.norm == "none":
        return nodes + [helper.make_node("Identity", [filled], [out])]
    else:
        raise ValueError(f"numeric field {e.name!r}: no ONNX form for norm {e.norm!r}")
    return nodes + [helper.make_node("Sub", [filled, const(f"{p}/shift", np.array(shift, dtype=np.float64))],
                                     [f"{p}/shifted"]),
                    helper.make_node("Div", [f"{p}/shifted", const(f"{p}/scale", np.array(scale, dtype=np.float64))],
                                     [out])]


def default_opset(model: Any) -> int:
    """The version of the default ONNX operator set a model imports."""
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def with_raw_inputs(model: Any, encoders: FeatureEncoders) -> Any:
    """`model` (an exported ServingGraph taking `categorical` / `numeric` / one input per sequence field)
    behind `encoder_graph`: inputs are the raw fields, outputs the model's plus `unseen_values`."""
    from onnx import compose

    opset = default_opset(model)
    if any(o.domain == ML_DOMAIN and o.version != ML_OPSET for o in model.opset_import):
        raise ValueError(f"the exported model imports {ML_DOMAIN} at another version than {ML_OPSET}")
    front = encoder_graph(encoders, opset)
    front.ir_version = model.ir_version
    taken = {v for node in model.graph.node for v in (*node.input, *node.output)} | {
        t.name for t in model.graph.initializer}
    # the encoders' own names too: their outputs (categorical, numeric, unseen_values) and enc/... values
    own = {v for node in front.graph.node for v in node.output} | {t.name for t in front.graph.initializer}
    sequences = [e.name for e in sequence_encoders(encoders)]
    clash = sorted(set(encoders.columns) & ((taken - set(ENCODED) - set(sequences)) | own))
    if clash:
        raise ValueError(f"field name(s) {clash} are also names inside the exported model's graph; "
                         "rename the field(s) in the dataset schema to export raw inputs")
    model_inputs = {i.name for i in model.graph.input}
    wired = ([(name, name) for name in ENCODED if name in model_inputs]
             + [(encoded_sequence(name), name) for name in sequences if name in model_inputs])
    outputs = [o.name for o in model.graph.output] + ([UNSEEN_VALUES] if encoders.categorical or sequences else [])
    return compose.merge_models(front, model, io_map=wired, outputs=outputs)


def sample_raw_rows(encoders: FeatureEncoders, rows: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Raw check rows per field: vocabulary values, missing cells ("" / NaN) and unseen values
    (categorical: object arrays of str; numeric: float64 around the train mean; sequence: cells of
    0..max_len + 3 tokens, some unseen, some empty, as text joined by the separator)."""
    rng = np.random.default_rng(seed)
    out: dict[str, np.ndarray] = {}
    for e in encoders.categorical:
        vocab = np.array(e.vocab if e.vocab else [""], dtype=object)
        values = vocab[rng.integers(0, len(vocab), rows)]
        kind = rng.random(rows)
        values[kind < 0.1] = ""
        taken = set(e.vocab)
        unseen = [f"unseen-{i}" for i in range(len(taken) + 3) if f"unseen-{i}" not in taken][:3]
        mask = (kind >= 0.1) & (kind < 0.2)
        values[mask] = np.array(unseen, dtype=object)[rng.integers(0, len(unseen), int(mask.sum()))]
        out[e.name] = values
    for e in encoders.numeric:
        spread = e.std if e.std and e.std > 0 else 1.0
        x = rng.normal(e.mean, 2 * spread, rows)
        x[rng.random(rows) < 0.1] = np.nan
        out[e.name] = x
    for e in sequence_encoders(encoders):
        vocab = e.vocab.vocab  # the (owner's) vocabulary's values
        tokens = np.array([*vocab, "", "unseen-token"], dtype=object)  # "": an empty token, as in "a||b"
        weights = np.array([0.8 / max(len(vocab), 1)] * len(vocab) + [0.1, 0.1])
        lengths = rng.integers(0, e.max_len + 4, rows)
        out[e.name] = np.array([e.separator.join(rng.choice(tokens, n, p=weights / weights.sum())) for n in lengths],
                               dtype=object)
    return out
