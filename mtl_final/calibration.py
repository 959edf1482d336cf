"""Post-hoc calibration of a run's probabilities (config key ``calibration``), fitted after training.

One calibrator per task, fitted on the valid split's predictions of the best weights; a task declared
``on: parent`` (cvr on ctr) on the valid rows whose parent label is 1, where its labels are defined.
An entire-space product (ctcvr = ctr · cvr) gets no calibrator of its own: it stays the product of
the calibrated parts, so the served pCTR·pCVR is always the product of the two served probabilities
(a third map fitted on ctcvr labels would break that identity).

- isotonic: scikit-learn's ``IsotonicRegression(out_of_bounds="clip")`` with y in [0, 1], kept as its
  breakpoints (x_k, y_k), x strictly increasing: linear between breakpoints, y_0 below x_0 and the
  last y above the last x;
- platt: q = σ(a · logit(p) + b), logit(p) = log(p / (1 − p)) with p clipped to [PLATT_EPS, 1 − PLATT_EPS];
  a, b maximise the likelihood (Newton's method) of Platt's smoothed targets, (N+ + 1) / (N+ + 2) for a
  positive row and 1 / (N− + 2) for a negative one: a prior worth about one row per class that keeps a, b
  finite when the rows hold one class, negligible with thousands of rows; no other regularisation.

The maps run in float64 on the model's probabilities and give back the input's dtype (float32). The
same operations, in the same order, run in Python (`Calibration.apply`, also behind `CalibratedModel`
for training's final metrics and `mtl_final.predict`) and in the exported ONNX graph
(`calibrate_onnx_file`), which therefore agree to float32 rounding. A run keeps its fit in
``calibration.json`` (`Calibration.save`, `load_calibration`).
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from mtl_final.models.base import ModelOutput, RankingModel, entire_space_name
from mtl_final.train.checkpoint import atomic_file
from mtl_final.train.metrics import scored_rows

__all__ = ["CALIBRATION_FILE", "Calibration", "CalibratedModel", "Isotonic", "Platt", "calibrate_onnx_file",
           "calibrated_model", "fit_calibration", "load_calibration"]

CALIBRATION_FILE = "calibration.json"
FORMAT = 1
PLATT_EPS = 1e-7
NEWTON_STEPS = 100

Const = Callable[[str, np.ndarray], str]  # adds an initializer (name, value) to the graph; returns the name


def _logit(p: np.ndarray) -> np.ndarray:
    clipped = np.clip(p, PLATT_EPS, 1.0 - PLATT_EPS)
    return np.log(clipped / (1.0 - clipped))


@dataclass(frozen=True, eq=False)
class Isotonic:
    """The monotone piecewise-linear map through breakpoints x [K] (strictly increasing) → y [K]
    (non-decreasing, in [0, 1]); constant outside [x_0, x_K-1]."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
        if x.ndim != 1 or x.shape != y.shape or not len(x):
            raise ValueError(f"isotonic breakpoints need x and y of one equal length >= 1, got {len(x)} and {len(y)}")
        if not (np.isfinite(x).all() and np.isfinite(y).all()) or (np.diff(x) <= 0).any() or (np.diff(y) < 0).any() \
                or y.min() < 0 or y.max() > 1:
            raise ValueError("isotonic breakpoints need finite x strictly increasing and y non-decreasing in [0, 1]")
        object.__setattr__(self, "x", x)
        object.__setattr__(self, "y", y)

    @classmethod
    def fit(cls, p: np.ndarray, y: np.ndarray) -> "Isotonic":
        """Fit on probabilities p [n] and 0/1 labels y [n] (float64)."""
        from sklearn.isotonic import IsotonicRegression

        fitted = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip").fit(p, y)
        return cls(fitted.X_thresholds_, fitted.y_thresholds_)

    def _segments(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(start x, start y, slope), each [max(K - 1, 1)]: segment j runs from x_j to x_j+1."""
        if len(self.x) == 1:
            return self.x, self.y, np.zeros(1)
        return self.x[:-1], self.y[:-1], np.diff(self.y) / np.diff(self.x)

    def apply(self, p: np.ndarray) -> np.ndarray:
        """float64 [n] → float64 [n]."""
        start_x, start_y, slope = self._segments()
        x = np.clip(p, self.x[0], self.x[-1])
        j = np.searchsorted(start_x, x, side="right") - 1  # the last segment starting at or below x
        return start_y[j] + slope[j] * (x - start_x[j])

    def onnx_nodes(self, src: str, dst: str, scope: str, const: Const) -> list[Any]:
        """ONNX nodes computing `apply` from double [batch] `src` into `dst`: clip, then the segment by a
        binary search over the segment starts (log2 K Gather / Less / Where steps: memory O(batch),
        where comparing with every breakpoint at once would take [batch, K]), then interpolation."""
        from onnx import helper, numpy_helper

        start_x, start_y, slope = self._segments()
        size = 1 << (len(start_x) - 1).bit_length()  # the power of two >= the number of segments
        padded = np.concatenate([start_x, np.full(size - len(start_x), np.inf)])  # +inf: never a segment
        x, idx = f"{scope}/x", f"{scope}/idx0"
        nodes = [helper.make_node("Clip", [src, const(f"{scope}/lo", np.array(self.x[0])),
                                           const(f"{scope}/hi", np.array(self.x[-1]))], [x]),
                 helper.make_node("Shape", [x], [f"{scope}/shape"]),
                 helper.make_node("ConstantOfShape", [f"{scope}/shape"], [idx],
                                  value=numpy_helper.from_array(np.zeros(1, dtype=np.int64)))]
        starts = const(f"{scope}/padded_starts", padded)
        step, k = size // 2, 0
        while step:  # invariant: padded[idx] <= x; try idx + step
            cand, nxt = f"{scope}/cand{k}", f"{scope}/idx{k + 1}"
            nodes += [helper.make_node("Add", [idx, const(f"{scope}/step{k}", np.array(step, dtype=np.int64))], [cand]),
                      helper.make_node("Gather", [starts, cand], [f"{scope}/start{k}"]),
                      helper.make_node("Less", [x, f"{scope}/start{k}"], [f"{scope}/below{k}"]),
                      helper.make_node("Where", [f"{scope}/below{k}", idx, cand], [nxt])]
            idx, step, k = nxt, step // 2, k + 1
        return nodes + [
            helper.make_node("Gather", [const(f"{scope}/start_x", start_x), idx], [f"{scope}/x0"]),
            helper.make_node("Gather", [const(f"{scope}/start_y", start_y), idx], [f"{scope}/y0"]),
            helper.make_node("Gather", [const(f"{scope}/slope", slope), idx], [f"{scope}/slope_j"]),
            helper.make_node("Sub", [x, f"{scope}/x0"], [f"{scope}/dx"]),
            helper.make_node("Mul", [f"{scope}/slope_j", f"{scope}/dx"], [f"{scope}/rise"]),
            helper.make_node("Add", [f"{scope}/y0", f"{scope}/rise"], [dst])]

    def to_dict(self) -> dict[str, Any]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Isotonic":
        return cls(np.asarray(data["x"], dtype=np.float64), np.asarray(data["y"], dtype=np.float64))


@dataclass(frozen=True)
class Platt:
    """q = σ(a · logit(p) + b)."""

    a: float
    b: float

    def __post_init__(self) -> None:
        if not (isinstance(self.a, (int, float)) and isinstance(self.b, (int, float))
                and math.isfinite(self.a) and math.isfinite(self.b)):
            raise ValueError(f"Platt scaling needs finite numbers a and b, got {self.a!r} and {self.b!r}")

    @classmethod
    def fit(cls, p: np.ndarray, y: np.ndarray) -> "Platt":
        """Fit on probabilities p [n] and 0/1 labels y [n] (float64): Newton's method from the identity
        (a = 1, b = 0), each step halved until the loss does not grow."""
        positive = y > 0.5
        n_pos = float(positive.sum())
        target = np.where(positive, (n_pos + 1) / (n_pos + 2), 1 / (len(y) - n_pos + 2))
        design = np.column_stack([_logit(p), np.ones_like(p)])  # [n, 2]

        def loss(w: np.ndarray) -> float:  # cross-entropy against the targets, up to a constant
            s = design @ w
            return float(np.sum(np.logaddexp(0.0, s) - target * s))

        w = np.array([1.0, 0.0])
        current = loss(w)
        for _ in range(NEWTON_STEPS):
            q = expit(design @ w)
            grad = design.T @ (q - target)
            hess = design.T @ (design * (q * (1 - q))[:, None])
            step = np.linalg.lstsq(hess, grad, rcond=None)[0]  # least squares: a singular H (one distinct p)
            scale = 1.0
            while scale > 1e-12 and loss(w - scale * step) > current:
                scale /= 2
            if scale <= 1e-12:
                break  # no step lowers the loss: at the minimum to float64 precision
            w = w - scale * step
            current = loss(w)
            if np.abs(scale * step).max() < 1e-12:
                break
        return cls(float(w[0]), float(w[1]))

    def apply(self, p: np.ndarray) -> np.ndarray:
        """float64 [n] → float64 [n]."""
        return expit(_logit(p) * self.a + self.b)

    def onnx_nodes(self, src: str, dst: str, scope: str, const: Const) -> list[Any]:
        """ONNX nodes computing `apply` from double [batch] `src` into `dst`: logit, affine, sigmoid."""
        from onnx import helper

        def c(name: str, value: float) -> str:
            return const(f"{scope}/{name}", np.array(value, dtype=np.float64))

        s = scope
        return [helper.make_node("Clip", [src, c("lo", PLATT_EPS), c("hi", 1.0 - PLATT_EPS)], [f"{s}/p"]),
                helper.make_node("Sub", [c("one", 1.0), f"{s}/p"], [f"{s}/not_p"]),
                helper.make_node("Div", [f"{s}/p", f"{s}/not_p"], [f"{s}/odds"]),
                helper.make_node("Log", [f"{s}/odds"], [f"{s}/logit"]),
                helper.make_node("Mul", [f"{s}/logit", c("a", self.a)], [f"{s}/scaled"]),
                helper.make_node("Add", [f"{s}/scaled", c("b", self.b)], [f"{s}/t"]),
                helper.make_node("Sigmoid", [f"{s}/t"], [dst])]

    def to_dict(self) -> dict[str, Any]:
        return {"a": self.a, "b": self.b}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Platt":
        return cls(data["a"], data["b"])


# the values of the config key calibration other than none
CALIBRATORS: dict[str, type[Isotonic] | type[Platt]] = {"isotonic": Isotonic, "platt": Platt}


@dataclass(frozen=True)
class Calibration:
    """A run's fit: the method, a calibrator per task (with the valid rows it was fitted on) and the
    entire-space products, joint name → (parent, child), which stay products of calibrated parts."""

    method: str
    calibrators: dict[str, Isotonic | Platt]
    products: dict[str, tuple[str, str]] = field(default_factory=dict)
    rows: dict[str, int] = field(default_factory=dict)

    @property
    def outputs(self) -> list[str]:
        """Every output name it maps: the tasks, then the products."""
        return [*self.calibrators, *self.products]

    def apply(self, probs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Calibrated probabilities of `probs` (output name → [rows], each given back in its own dtype):
        each task through its calibrator, each product as the product of its calibrated parts."""
        unknown = sorted(set(probs) - set(self.outputs))
        missing = sorted({part for name in probs if name in self.products for part in self.products[name]}
                         - set(probs))
        if unknown or missing:
            raise ValueError(f"the calibration maps outputs {self.outputs}; got {sorted(probs)}"
                             + (f" (no calibrator for {unknown})" if unknown else f" (products need {missing})"))
        wide = {name: cal.apply(np.asarray(probs[name], dtype=np.float64))
                for name, cal in self.calibrators.items() if name in probs}
        for joint, (parent, child) in self.products.items():
            if joint in probs:
                wide[joint] = wide[parent] * wide[child]
        return {name: wide[name].astype(np.asarray(p).dtype, copy=False) for name, p in probs.items()}

    def onnx_nodes(self, raw: Mapping[str, str], out: Mapping[str, str], const: Const) -> list[Any]:
        """ONNX nodes mapping float32 [batch] values raw[name] to out[name] for every output name, as `apply`."""
        from onnx import TensorProto, helper

        nodes = []
        for name, cal in self.calibrators.items():
            nodes.append(helper.make_node("Cast", [raw[name]], [f"calib/{name}/p64"], to=TensorProto.DOUBLE))
            nodes += cal.onnx_nodes(f"calib/{name}/p64", f"calib/{name}/q64", f"calib/{name}", const)
        for joint, (parent, child) in self.products.items():
            nodes.append(helper.make_node("Mul", [f"calib/{parent}/q64", f"calib/{child}/q64"], [f"calib/{joint}/q64"]))
        return nodes + [helper.make_node("Cast", [f"calib/{name}/q64"], [out[name]], to=TensorProto.FLOAT)
                        for name in self.outputs]

    def to_dict(self) -> dict[str, Any]:
        return {"format": FORMAT, "method": self.method, "fitted_on": "valid",
                "tasks": {name: {"rows": self.rows.get(name), **cal.to_dict()}
                          for name, cal in self.calibrators.items()},
                "products": {joint: list(parts) for joint, parts in self.products.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Calibration":
        """The inverse of `to_dict`; ValueError naming what is wrong."""
        if not isinstance(data, Mapping) or data.get("format") != FORMAT:
            raise ValueError(f"not a calibration of format {FORMAT}")
        method = data.get("method")
        if method not in CALIBRATORS:
            raise ValueError(f"unknown method {method!r}; one of {sorted(CALIBRATORS)}")
        try:
            calibrators = {name: CALIBRATORS[method].from_dict(d) for name, d in data["tasks"].items()}
            products = {joint: (str(parent), str(child)) for joint, (parent, child) in data["products"].items()}
            rows = {name: int(d["rows"]) for name, d in data["tasks"].items() if d.get("rows") is not None}
        except (KeyError, TypeError, AttributeError) as e:
            raise ValueError(f"malformed entry ({type(e).__name__}: {e})") from None
        strays = sorted({part for parts in products.values() for part in parts} - set(calibrators))
        if not calibrators or strays:
            raise ValueError(f"products of tasks without a calibrator {strays}" if strays else "no task calibrators")
        return cls(method, calibrators, products, rows)

    def save(self, path: str | Path) -> None:
        """Write calibration.json atomically (floats as repr: the round trip is exact)."""
        with atomic_file(Path(path)) as f:
            f.write((json.dumps(self.to_dict(), indent=2) + "\n").encode("utf-8"))

    @classmethod
    def load(cls, path: str | Path) -> "Calibration":
        """Read a calibration.json; one ValueError naming the file and the fix when it is unusable."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except ValueError as e:  # JSONDecodeError is a ValueError
            raise ValueError(f"cannot read {path} ({e}): train the run again with calibration=isotonic or "
                             "calibration=platt, or delete the file to serve the uncalibrated probabilities") from None


def fit_calibration(method: str, tasks: Sequence[Any], probs: Mapping[str, np.ndarray],
                    labels: Mapping[str, np.ndarray]) -> Calibration:
    """Fit `method` (isotonic | platt) per task on one split's probabilities (output name → [rows]) and
    labels (task name → [rows] 0/1); a task `on` a parent on the rows whose parent label is 1."""
    if method not in CALIBRATORS:
        raise ValueError(f"calibration={method!r}: choose one of {sorted(CALIBRATORS)}")
    names = {task.name for task in tasks}
    calibrators, rows = {}, {}
    for name, y, p, mask in scored_rows(tasks, probs, labels):
        if name not in names:
            continue  # a product: calibrated through its parts
        if not len(y):
            where = " (rows of its parent's label 1)" if mask is not None else ""
            raise ValueError(f"calibration={method}: the valid split has no rows{where} to fit task {name!r} on; "
                             "use a valid split holding such rows, or calibration=none")
        calibrators[name] = CALIBRATORS[method].fit(np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64))
        rows[name] = int(len(y))
    products = {entire_space_name(t.on, t.name): (t.on, t.name) for t in tasks if t.on and t.on in names}
    return Calibration(method, calibrators, products, rows)


def load_calibration(run_dir: str | Path) -> Calibration | None:
    """The run's calibration.json, or None when the run has none (trained with calibration=none)."""
    path = Path(run_dir) / CALIBRATION_FILE
    return Calibration.load(path) if path.is_file() else None


# ----------------------------------------------------------------------------- where probabilities are made
class CalibratedModel(nn.Module):
    """`model` whose ModelOutput.probs are calibrated (float32 [batch], on the model's device); logits
    and auxiliary losses stay the model's own. Exposes the model's tasks and output names."""

    def __init__(self, model: RankingModel, calibration: Calibration) -> None:
        super().__init__()
        self.model = model
        self.calibration = calibration

    @property
    def tasks(self) -> list[Any]:
        return self.model.tasks

    @property
    def task_names(self) -> list[str]:
        return self.model.task_names

    @property
    def output_names(self) -> list[str]:
        return self.model.output_names

    def forward(self, batch: Any) -> ModelOutput:
        out = self.model(batch)
        raw = {name: p.detach().float().cpu().numpy() for name, p in out.probs.items()}
        probs = {name: torch.from_numpy(q).to(out.probs[name].device)
                 for name, q in self.calibration.apply(raw).items()}
        return ModelOutput(out.logits, probs, out.aux_losses)


def calibrated_model(model: RankingModel, run_dir: str | Path) -> RankingModel | CalibratedModel:
    """`model` behind the run's calibration.json, or `model` itself when the run has none."""
    calibration = load_calibration(run_dir)
    return model if calibration is None else CalibratedModel(model, calibration)


def calibrate_onnx_file(path: str | Path, calibration: Calibration, prefix: str,
                        feeds: Sequence[Mapping[str, np.ndarray]], session: Callable[[bytes], Any],
                        atol: float = 1e-6) -> dict[str, Any]:
    """Put `calibration` inside the ONNX model file `path`, in place: each float32 output ``prefix + name``
    becomes the calibrated value, the model's own is renamed ``calib/raw/<output>`` inside the graph
    (nodes reading it, such as a product, keep reading it).

    Checked first: on every input dict of `feeds`, `session` (an onnxruntime session of serialised
    bytes) of the new graph must give `Calibration.apply` of the old graph's outputs within `atol`.
    Returns {"rows", "max_abs_diff"} for the manifest; ValueError when the check fails (nothing written)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path), load_external_data=False)
    before = session(model.SerializeToString())
    graph = model.graph
    outputs = [o.name for o in graph.output if o.name.startswith(prefix)]
    if sorted(o[len(prefix):] for o in outputs) != sorted(calibration.outputs):
        raise ValueError(f"the calibration maps outputs {calibration.outputs}, the ONNX graph has {outputs}")
    renamed = {o: f"calib/raw/{o}" for o in outputs}
    for node in graph.node:
        for values in (node.input, node.output):
            for i, value in enumerate(values):
                values[i] = renamed.get(value, value)
    for info in graph.value_info:
        info.name = renamed.get(info.name, info.name)

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value, name))
        return name

    names = {o[len(prefix):]: o for o in outputs}
    graph.node.extend(calibration.onnx_nodes({n: renamed[o] for n, o in names.items()}, names, const))
    onnx.checker.check_model(model)
    after = session(model.SerializeToString())
    diffs = dict.fromkeys(outputs, 0.0)
    for feed in feeds:
        raw = dict(zip(outputs, before.run(outputs, dict(feed))))
        got = dict(zip(outputs, after.run(outputs, dict(feed))))
        want = calibration.apply({n: raw[o] for n, o in names.items()})
        for n, o in names.items():
            diffs[o] = max(diffs[o], float(np.abs(got[o].astype(np.float64) - want[n]).max(initial=0.0)))
    worst = max(diffs, key=diffs.get)
    if diffs[worst] > atol:
        raise ValueError(f"the calibrated ONNX graph {Path(path).name} differs from the calibration applied to the "
                         f"graph's own {worst} by {diffs[worst]:.3g} (allowed {atol:g})")
    onnx.save(model, str(path))
    return {"rows": [len(next(iter(feed.values()))) for feed in feeds], "max_abs_diff": diffs}
