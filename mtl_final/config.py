"""Run configuration: defaults, YAML files with includes, ``key=value`` overrides and validation.

A run's config is a plain nested dict. :func:`load_config` starts from :data:`DEFAULTS`, merges a
YAML file (and the files it ``include``s), applies command-line style overrides, validates every
key and value, and returns the fully resolved tree. The ``model`` section is the common model keys
plus the chosen model's own defaults, registered by the models package through
:func:`register_model_defaults`.
"""
from __future__ import annotations

import copy
import difflib
import hashlib
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = [
    "BOUNDS",
    "CHOICES",
    "DEFAULTS",
    "FREE_FORM",
    "MODEL_DEFAULTS",
    "NULLABLE_TYPES",
    "ConfigError",
    "apply_overrides",
    "config_hash",
    "dump_config",
    "get",
    "load_config",
    "load_yaml",
    "register_model_defaults",
    "to_yaml",
    "validate_config",
]


class ConfigError(ValueError):
    """A config file, override or value is invalid."""


# --------------------------------------------------------------------------------------------
# Defaults and the tables that validation reads
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = {
    "seed": 2021,
    "tasks": None,  # list of task names to train; None = all tasks declared by the dataset schema
    "data": {
        "schema": None,  # path to the dataset schema YAML
        "root": None,  # folder holding the train/valid/test files
        "cache_dir": ".cache/mtl_final",
        "invalid_funnel_rows": "error",  # error | drop
        "simulator": None,  # free-form dict of funnel-simulator parameters, or None
    },
    "model": {  # common keys; the chosen model's registered defaults are merged in
        "name": "mlp",
        "embedding_dim": 10,
        "embedding_regularizer": 0.0,
        "numeric_init": "embedding",  # numeric-field vectors: embedding (N(0, 1e-4²)) | xavier (FuxiCTR)
        "net_regularizer": 0.0,
        "task_weights": {},  # task name -> loss weight (free-form: task names are data)
    },
    "block": {  # the main deep block of single-task models
        "kind": "mlp",  # mlp | final
        "hidden_units": [400, 400, 400],
        "activation": "relu",
        "dropout": 0.0,
        "batch_norm": True,
        "num_steps": 2,  # FINAL: N multiplicative steps per layer
        "aggregation": "concat",  # FINAL: concat | sum
        "sigma": "identity",  # FINAL: identity | tanh | sigmoid
    },
    "tower": {  # per-task towers of multi-task models
        "kind": "mlp",
        "hidden_units": [256, 128],
        "activation": "relu",
        "dropout": 0.1,
        "batch_norm": True,
        "num_steps": 2,
        "aggregation": "concat",
        "sigma": "identity",
        "dual": False,  # two blocks per task, logits averaged
        "kd": True,  # with dual: self-distillation toward the averaged detached prediction
    },
    "expert": {  # experts of MMoE / PLE
        "kind": "mlp",
        "hidden_units": [256],
        "activation": "relu",
        "dropout": 0.1,
        "batch_norm": True,
        "num_steps": 2,
        "aggregation": "concat",
        "sigma": "identity",
    },
    "train": {
        "batch_size": 4096,
        "eval_batch_size": 16384,
        "optimizer": "adam",  # adam | adamw | sgd
        "lr": 0.001,
        "weight_decay": 0.0,
        "epochs": 100,
        "eval_every_steps": 0,  # 0 = evaluate once per epoch
        # 'auto' = ctr.auc (single task) or sum of task aucs; or 'cvr.auc', or 'ctr.auc:1,cvr.auc:2'
        "monitor": "auto",
        "monitor_mode": "max",  # max | min
        "lr_decay_factor": 0.1,
        "min_lr": 1.0e-6,
        "patience": 2,
        "min_delta": 1.0e-6,  # an evaluation improves only when it beats the best monitor value by more
        "grad_clip_norm": 10.0,
        "num_threads": 0,  # 0 = torch default
        "precision": "fp32",  # fp32 | bf16 (autocast: matmuls in bfloat16, weights/heads/losses float32)
        # float32 matmuls (torch.set_float32_matmul_precision, process-wide): highest = IEEE float32 |
        # high = TF32 where the hardware has it | medium = also bfloat16 inputs, float32 sums (AMX CPUs)
        "matmul_precision": "highest",
        # native = fused C kernels for dense layers and AutoInt's attention on CPU (built on first use; PyTorch
        # ops where a layer, device or dtype does not allow them, or without a C compiler) | torch = PyTorch ops only
        "kernels": "native",
        # float32 matmuls of training and scoring on CPU: auto = oneDNN on AMD CPUs where it stays IEEE
        # float32 (no AMX), else BLAS (MKL) | blas | onednn (mtl_final/nn/cpu_matmul.py)
        "cpu_matmul": "auto",
        "device": "auto",  # auto | cpu | cuda | cuda:N
        "progress": True,
        "tensorboard": True,
        "gauc_field": None,  # categorical field name to group gAUC by
        "max_steps": 0,  # 0 = no limit (debug / smoke runs)
    },
    "distributed": {  # used only when torchrun starts several processes (WORLD_SIZE > 1)
        "backend": "auto",  # auto (nccl on CUDA, gloo on CPU) | gloo | nccl
        "sync_batchnorm": False,  # BatchNorm statistics over the global batch instead of each rank's share
    },
}

_BLOCK_SECTIONS = ("block", "tower", "expert")

# Allowed values of selected-choice keys (dotted key -> allowed values).
CHOICES: dict[str, list[Any]] = {
    **{f"{s}.kind": ["mlp", "final"] for s in _BLOCK_SECTIONS},
    **{
        f"{s}.activation": ["relu", "tanh", "sigmoid", "identity", "gelu", "silu"]
        for s in _BLOCK_SECTIONS
    },
    **{f"{s}.aggregation": ["concat", "sum"] for s in _BLOCK_SECTIONS},
    **{f"{s}.sigma": ["identity", "tanh", "sigmoid"] for s in _BLOCK_SECTIONS},
    "data.invalid_funnel_rows": ["error", "drop"],
    "model.numeric_init": ["embedding", "xavier"],
    "train.optimizer": ["adam", "adamw", "sgd"],
    "train.monitor_mode": ["max", "min"],
    "train.precision": ["fp32", "bf16"],
    "train.matmul_precision": ["highest", "high", "medium"],
    "train.kernels": ["native", "torch"],
    "train.cpu_matmul": ["auto", "blas", "onednn"],
    "distributed.backend": ["auto", "gloo", "nccl"],
}

# Dicts whose keys are data, not config keys: not key-checked inside. The value is the type every
# entry must have (int accepted for float), or None for unchecked entries.
FREE_FORM: dict[str, type | None] = {
    "data.simulator": None,
    "model.task_weights": float,
}

# The keys a free-form dict may hold, where they are a fixed set (data.simulator: the arguments of
# mtl_final.data.simulator.ensure_simulated).
FREE_FORM_KEYS: dict[str, tuple[str, ...]] = {
    "data.simulator": ("n_rows", "seed", "splits", "format", "chunk_rows", "version"),
}

# Path keys: a leading ~ is expanded when the config is resolved.
PATH_KEYS: tuple[str, ...] = ("data.schema", "data.root", "data.cache_dir")

# Keys whose default is None but whose non-None value has a known shape: a prototype value that
# is type-checked like a default would be (``["x"]`` = list of str).
NULLABLE_TYPES: dict[str, Any] = {
    "tasks": ["task"],
    "data.schema": "path",
    "data.root": "path",
    "train.gauc_field": "field",
}

# Inclusive numeric bounds (low, high; None = open). For list keys they apply to every element.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "seed": (0, 2**32 - 1),  # numpy's seed range
    "model.embedding_dim": (1, None),
    "model.embedding_regularizer": (0.0, None),
    "model.net_regularizer": (0.0, None),
    **{f"{s}.hidden_units": (1, None) for s in _BLOCK_SECTIONS},
    **{f"{s}.dropout": (0.0, 1.0) for s in _BLOCK_SECTIONS},
    **{f"{s}.num_steps": (1, None) for s in _BLOCK_SECTIONS},
    "train.batch_size": (2, None),  # BatchNorm normalises at least 2 rows
    "train.eval_batch_size": (1, None),
    "train.lr": (0.0, None),
    "train.weight_decay": (0.0, None),
    "train.epochs": (1, None),  # 0 would write a run without best.pt
    "train.eval_every_steps": (0, None),
    "train.lr_decay_factor": (0.0, 1.0),
    "train.min_lr": (0.0, None),
    "train.patience": (0, None),
    "train.min_delta": (0.0, None),
    "train.grad_clip_norm": (0.0, None),
    "train.num_threads": (0, None),
    "train.max_steps": (0, None),
}

MODEL_COMMON_KEYS: tuple[str, ...] = tuple(DEFAULTS["model"])

# Model name -> that model's own keys and defaults (merged into the ``model`` section).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {}
# Model name -> {key: allowed values} for the model's own selected-choice keys.
MODEL_CHOICES: dict[str, dict[str, list[Any]]] = {}

_MODELS_IMPORT_ERROR: BaseException | None = None


def register_model_defaults(
    name: str, defaults: dict[str, Any], choices: Mapping[str, Sequence[Any]] | None = None
) -> None:
    """Register model ``name``'s own config keys and defaults (and optional allowed values).

    The keys live in the ``model`` section next to the common keys, which they may not redefine.
    Registering a name again replaces its earlier defaults.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if not isinstance(defaults, Mapping):
        raise ConfigError(f"defaults of model {name!r} must be a dict, got {defaults!r}")
    clash = [k for k in defaults if k in MODEL_COMMON_KEYS]
    if clash:
        raise ConfigError(
            f"defaults of model {name!r} redefine common model keys {clash}; "
            f"common keys are {list(MODEL_COMMON_KEYS)}"
        )
    choices = {str(k): list(v) for k, v in (choices or {}).items()}
    for key, allowed in choices.items():
        if key not in defaults:
            raise ConfigError(f"choices of model {name!r} name {key!r}, which is not in its defaults")
        if defaults[key] is not None and defaults[key] not in allowed:
            raise ConfigError(
                f"default {defaults[key]!r} of model key {key!r} ({name!r}) is not in {allowed}"
            )
    MODEL_DEFAULTS[name] = copy.deepcopy(dict(defaults))
    MODEL_CHOICES[name] = choices


def _ensure_models_registered() -> None:
    """Import the models package so that it registers its defaults (absent while it is written)."""
    global _MODELS_IMPORT_ERROR
    try:
        import mtl_final.models  # noqa: F401
    except ImportError as exc:  # keep the config usable; the error is shown for unknown models
        _MODELS_IMPORT_ERROR = exc
    else:
        _MODELS_IMPORT_ERROR = None


# --------------------------------------------------------------------------------------------
# YAML: scientific-notation floats (PyYAML reads ``1e-3`` as a string) and readable dumps
# --------------------------------------------------------------------------------------------

_SCI_FLOAT = re.compile(
    r"""^(?:[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+
        |[-+]?\.[0-9][0-9_]*[eE][-+]?[0-9]+)$""",
    re.X,
)
_FLOAT_TAG = "tag:yaml.org,2002:float"


class YamlLoader(yaml.SafeLoader):
    """Safe loader of run configs and dataset schemas: also reads ``1e-3``-style scalars as floats, and
    rejects a key given twice in one mapping (PyYAML would keep the last silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in first_line:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} is given twice (first on line {first_line[key]}); keep one",
                    key_node.start_mark)
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


class _Dumper(yaml.SafeDumper):
    """Safe dumper: block-style mappings, flow-style scalar lists, no anchors.

    It shares the loader's float resolver, so strings such as ``"1e-3"`` are quoted on output.
    """

    def ignore_aliases(self, data: Any) -> bool:
        return True


YamlLoader.add_implicit_resolver(_FLOAT_TAG, _SCI_FLOAT, list("-+0123456789."))
_Dumper.add_implicit_resolver(_FLOAT_TAG, _SCI_FLOAT, list("-+0123456789."))


def _represent_list(dumper: yaml.SafeDumper, data: Sequence[Any]) -> yaml.Node:
    flow = bool(data) and all(not isinstance(x, (dict, list, tuple)) for x in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", list(data), flow_style=flow)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(tuple, _represent_list)


def _parse_yaml(text: str, source: str) -> Any:
    try:
        return yaml.load(text, Loader=YamlLoader)  # noqa: S506 - YamlLoader is a SafeLoader
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {source}: {exc}") from exc


# --------------------------------------------------------------------------------------------
# Merging, files and overrides
# --------------------------------------------------------------------------------------------


def _selector(section: Mapping[str, Any]) -> str | None:
    """The key that a bare string assigned to ``section`` sets: ``name``, else ``kind``."""
    for key in ("name", "kind"):
        if key in section:
            return key
    return None


def _merge_value(current: Any, value: Any) -> Any:
    """``value`` laid over ``current``: dicts merge, a string onto a dict sets its selector."""
    if isinstance(current, dict):
        if isinstance(value, Mapping):
            out = copy.deepcopy(current)
            for key, sub in value.items():
                out[key] = _merge_value(out.get(key), sub) if key in out else copy.deepcopy(sub)
            return out
        if isinstance(value, str) and _selector(current) is not None:
            out = copy.deepcopy(current)
            out[_selector(current)] = value
            return out
    return copy.deepcopy(value)


def _yaml_layers(path: Path, stack: tuple[Path, ...] = ()) -> list[dict[str, Any]]:
    """The mappings of ``path`` and of everything it includes, in merge order (includes first)."""
    path = path.expanduser()
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"config include cycle: {chain}")
    if not path.is_file():
        where = f" (included from {stack[-1]})" if stack else ""
        raise ConfigError(f"config file not found: {path}{where}")
    data = _parse_yaml(path.read_text(encoding="utf-8"), str(path))
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping, got {type(data).__name__}")
    includes = data.pop("include", None)
    if includes is None:
        includes = []
    elif isinstance(includes, (str, os.PathLike)):
        includes = [includes]
    if not isinstance(includes, list) or not all(isinstance(i, (str, os.PathLike)) for i in includes):
        raise ConfigError(f"{path}: 'include' must be a path or a list of paths, got {includes!r}")
    layers: list[dict[str, Any]] = []
    for inc in includes:
        inc_path = Path(inc).expanduser()
        if not inc_path.is_absolute():
            inc_path = path.parent / inc_path
        layers.extend(_yaml_layers(inc_path, (*stack, resolved)))
    layers.append(data)
    return layers


def load_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a config YAML file with its includes resolved (unvalidated, defaults not filled)."""
    out: dict[str, Any] = {}
    for layer in _yaml_layers(Path(path)):
        out = _merge_value(out, layer)
    return out


def _parse_override(item: str) -> tuple[list[str], Any]:
    if not isinstance(item, str) or "=" not in item:
        raise ConfigError(
            f"malformed override {item!r}: expected key=value, "
            "e.g. train.lr=1e-3, block.hidden_units=[400,400] or model=mmoe"
        )
    key, raw = item.split("=", 1)
    key = key.strip()
    parts = key.split(".")
    if not key or any(not p.strip() for p in parts):
        raise ConfigError(f"malformed override {item!r}: bad key {key!r}; expected key=value")
    return [p.strip() for p in parts], _parse_yaml(raw, f"the value of override {item!r}")


def apply_overrides(cfg: Mapping[str, Any], overrides: Sequence[str]) -> dict[str, Any]:
    """Return a copy of ``cfg`` with ``a.b.c=value`` overrides applied in order (unvalidated)."""
    if isinstance(overrides, str):
        overrides = [overrides]
    out = copy.deepcopy(dict(cfg))
    for item in overrides:
        parts, value = _parse_override(item)
        node = out
        for i, part in enumerate(parts[:-1]):
            nxt = node.get(part)
            if nxt is None:  # e.g. data.simulator.x=1 while data.simulator is null
                nxt = node[part] = {}
            elif not isinstance(nxt, dict):
                prefix = ".".join(parts[: i + 1])
                raise ConfigError(
                    f"cannot apply override {item!r}: {prefix!r} is {nxt!r}, not a section"
                )
            node = nxt
        node[parts[-1]] = _merge_value(node.get(parts[-1]), value)
    return out


# --------------------------------------------------------------------------------------------
# Validation
# --------------------------------------------------------------------------------------------


def _type_name(proto: Any) -> str:
    if isinstance(proto, bool):
        return "bool"
    if isinstance(proto, int):
        return "int"
    if isinstance(proto, float):
        return "float (or int)"
    if isinstance(proto, str):
        return "str"
    if isinstance(proto, (list, tuple)):
        elem = _elem_proto(proto)
        return "list" if elem is None else f"list of {_type_name(elem)}"
    if isinstance(proto, Mapping):
        return "mapping"
    return type(proto).__name__


def _elem_proto(proto: Sequence[Any]) -> Any:
    """The element prototype of a non-empty homogeneous list default, else None."""
    if proto and len({type(x) for x in proto}) == 1 and proto[0] is not None:
        return proto[0]
    return None


_BAD = object()


def _coerce(value: Any, proto: Any) -> Any:
    """``value`` converted to the type of ``proto``, or ``_BAD``."""
    if isinstance(proto, bool):
        return value if isinstance(value, bool) else _BAD
    if isinstance(proto, int):
        return value if isinstance(value, int) and not isinstance(value, bool) else _BAD
    if isinstance(proto, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        return _BAD
    if isinstance(proto, str):
        if isinstance(value, str):
            return value
        return os.fspath(value) if isinstance(value, os.PathLike) else _BAD
    if isinstance(proto, (list, tuple)):
        if not isinstance(value, (list, tuple)):
            return _BAD
        elem = _elem_proto(proto)
        if elem is None:
            return copy.deepcopy(list(value))
        out = [_coerce(x, elem) for x in value]
        return _BAD if any(x is _BAD for x in out) else out
    return copy.deepcopy(value) if isinstance(value, type(proto)) else _BAD


def _valid_keys(schema: Mapping[str, Any], prefix: str = "") -> list[str]:
    """Every dotted key of ``schema`` (sections and leaves; free-form dicts not entered)."""
    keys: list[str] = []
    for key, sub in schema.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        keys.append(path)
        if isinstance(sub, dict) and path not in FREE_FORM:
            keys.extend(_valid_keys(sub, path))
    return keys


def _suggest(key: str, valid: Sequence[str]) -> str | None:
    """The closest valid dotted key to the unknown ``key``, if any is close."""
    parent, _, leaf = key.rpartition(".")
    valid_set = set(valid)
    parent_known = parent == "" or parent in valid_set
    siblings = [v.rpartition(".")[2] for v in valid if v.rpartition(".")[0] == parent]

    def join(name: str) -> str:
        return f"{parent}.{name}" if parent else name

    if parent_known and siblings:
        match = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
        if match:
            return join(match[0])
        prefixed = [
            s for s in siblings
            if min(len(s), len(leaf)) >= 2 and (leaf.startswith(s) or s.startswith(leaf))
        ]
        if prefixed:
            return join(max(prefixed, key=lambda s: difflib.SequenceMatcher(None, leaf, s).ratio()))
    parts = key.split(".")
    ancestors = {".".join(parts[:i]) for i in range(1, len(parts))}
    others = [
        v for v in valid
        if v not in ancestors and not (parent_known and v.rpartition(".")[0] == parent)
    ]
    match = difflib.get_close_matches(key, others, n=1, cutoff=0.6)
    if match:
        return match[0]
    same_leaf = [v for v in valid if v.rpartition(".")[2] == leaf]
    return same_leaf[0] if same_leaf else None


class _Validator:
    """One validation pass over a merged config; collects every error."""

    def __init__(self, schema: dict[str, Any], model_name: str | None, lenient: set[str]) -> None:
        self.schema = schema
        self.model_name = model_name
        self.lenient = lenient  # sections whose unknown keys are passed through unchecked
        self.valid = _valid_keys(schema)
        self.errors: list[str] = []

    def choices(self, path: str) -> list[Any] | None:
        if path in CHOICES:
            return CHOICES[path]
        if path.startswith("model.") and self.model_name in MODEL_CHOICES:
            return MODEL_CHOICES[self.model_name].get(path[len("model."):])
        return None

    def unknown(self, path: str, value: Any) -> None:
        while isinstance(value, Mapping) and len(value) == 1:  # name the leaf set by a.b.c=v
            key, value = next(iter(value.items()))
            path = f"{path}.{key}"
        msg = f"unknown config key {path!r}"
        hint = _suggest(path, self.valid)
        if hint is not None:
            msg += f" — did you mean {hint!r}?"
        top, _, rest = path.partition(".")
        if top == "model" and rest:
            leaf = rest.partition(".")[0]
            owners = [n for n, d in MODEL_DEFAULTS.items() if leaf in d and n != self.model_name]
            if owners:
                msg += f" (model {self.model_name!r} has no such key; it belongs to model(s) {owners})"
        self.errors.append(msg)

    def bad_type(self, path: str, proto: Any, value: Any) -> None:
        self.errors.append(
            f"config key {path!r} expects {_type_name(proto)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    def check(self, value: Any, default: Any, path: str) -> Any:
        """The validated (coerced, defaults-filled) form of ``value``."""
        if path in FREE_FORM:
            return self.free_form(value, default, path)
        if isinstance(default, dict):
            return self.section(value, default, path)
        proto = default
        if default is None:
            if value is None or path not in NULLABLE_TYPES:
                return copy.deepcopy(value)
            proto = NULLABLE_TYPES[path]
        out = _coerce(value, proto)
        if out is _BAD:
            self.bad_type(path, proto, value)
            return value
        if path in PATH_KEYS and isinstance(out, str):
            out = os.path.expanduser(out)
        self.finite(path, out)
        allowed = self.choices(path)
        if allowed is not None and out not in allowed:
            msg = f"config key {path!r} must be one of {allowed}, got {out!r}"
            close = difflib.get_close_matches(str(out), [str(a) for a in allowed], n=1)
            if close:
                msg += f" — did you mean {close[0]!r}?"
            self.errors.append(msg)
        if path in BOUNDS:
            self.bounds(path, out)
        return out

    def bounds(self, path: str, value: Any) -> None:
        low, high = BOUNDS[path]
        items = value if isinstance(value, list) else [value]
        for x in items:
            if isinstance(x, (int, float)) and (
                (low is not None and x < low) or (high is not None and x > high)
            ):
                lo = "-inf" if low is None else low
                hi = "inf" if high is None else high
                self.errors.append(f"config key {path!r} must lie in [{lo}, {hi}], got {value!r}")
                return

    def finite(self, path: str, value: Any) -> None:
        """NaN and ±inf pass every range check (comparisons with NaN are False): reject them here."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            self.errors.append(f"config key {path!r} must be a finite number, got {value!r}")

    def free_form(self, value: Any, default: Any, path: str) -> Any:
        if value is None and default is None:
            return None
        if not isinstance(value, Mapping):
            self.bad_type(path, {}, value)
            return value
        out = copy.deepcopy(dict(value))
        allowed = FREE_FORM_KEYS.get(path)
        for key in out if allowed is not None else ():
            if key not in allowed:
                msg = f"unknown config key '{path}.{key}'"
                close = difflib.get_close_matches(str(key), allowed, n=1)
                msg += f" — did you mean '{path}.{close[0]}'?" if close else f"; {path} takes {list(allowed)}"
                self.errors.append(msg)
        entry_type = FREE_FORM[path]
        if entry_type is not None:
            proto = entry_type()
            for key, sub in out.items():
                fixed = _coerce(sub, proto)
                if fixed is _BAD:
                    self.bad_type(f"{path}.{key}", proto, sub)
                else:
                    out[key] = fixed
                    self.finite(f"{path}.{key}", fixed)
        return out

    def section(self, value: Any, default: dict[str, Any], path: str) -> Any:
        if not isinstance(value, Mapping):
            self.bad_type(path or "<config>", {}, value)
            return value
        out: dict[str, Any] = {}
        for key, sub_default in default.items():
            sub = f"{path}.{key}" if path else key
            out[key] = self.check(value[key], sub_default, sub) if key in value else copy.deepcopy(
                sub_default
            )
        for key, sub_value in value.items():
            if key in default:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if path in self.lenient:
                out[key] = copy.deepcopy(sub_value)
            else:
                self.unknown(sub, sub_value)
        return out


def _unknown_model_message(name: str) -> str:
    names = list(MODEL_DEFAULTS)
    ordered = difflib.get_close_matches(name, names, n=len(names), cutoff=0.0) if names else []
    ordered += [n for n in names if n not in ordered]
    msg = f"unknown model {name!r} (config key 'model.name'); registered models: {ordered}"
    if _MODELS_IMPORT_ERROR is not None:
        msg += f" [importing mtl_final.models failed: {_MODELS_IMPORT_ERROR!r}]"
    return msg


def validate_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a merged config and return its resolved copy (coerced, every default filled in).

    Does not import the models package; :func:`load_config` does that first.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    schema = copy.deepcopy(DEFAULTS)
    model = cfg.get("model", {})
    name = model.get("name", DEFAULTS["model"]["name"]) if isinstance(model, Mapping) else None
    lenient: set[str] = set()
    errors: list[str] = []
    model_name: str | None = None
    if isinstance(name, str) and name in MODEL_DEFAULTS:
        model_name = name
        schema["model"].update(copy.deepcopy(MODEL_DEFAULTS[name]))
    else:
        lenient.add("model")  # the model's own keys are unknown: do not report them
        if isinstance(name, str):
            errors.append(_unknown_model_message(name))
    validator = _Validator(schema, model_name, lenient)
    out = validator.check(cfg, schema, "")
    errors.extend(validator.errors)
    if errors:
        if len(errors) == 1:
            raise ConfigError(errors[0])
        raise ConfigError(f"invalid config ({len(errors)} errors):\n  " + "\n  ".join(errors))
    return out


# --------------------------------------------------------------------------------------------
# Public entry points
# --------------------------------------------------------------------------------------------


def load_config(
    path: str | os.PathLike[str] | None,
    overrides: Sequence[str] = (),
    base: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Resolve a run config: DEFAULTS (or ``base``) <- YAML file (with includes) <- overrides.

    Returns a validated plain nested dict with every default filled in; raises ConfigError.
    """
    cfg = copy.deepcopy(DEFAULTS)
    if base is not None:
        cfg = _merge_value(cfg, base)
    if path is not None:
        for layer in _yaml_layers(Path(path)):
            cfg = _merge_value(cfg, layer)
    cfg = apply_overrides(cfg, overrides)
    _ensure_models_registered()
    return validate_config(cfg)


_MISSING = object()


def get(cfg: Mapping[str, Any], key: str, default: Any = _MISSING) -> Any:
    """The value at dotted ``key`` (``get(cfg, "train.lr")``); ``default`` (or KeyError) if absent."""
    node: Any = cfg
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            if default is _MISSING:
                raise KeyError(f"no config key {key!r}")
            return default
        node = node[part]
    return node


def _plain(obj: Any) -> Any:
    """Plain YAML/JSON-able data: tuples to lists, paths to strings, mappings to dicts."""
    if isinstance(obj, Mapping):
        return {k: _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    return obj


def to_yaml(cfg: Mapping[str, Any]) -> str:
    """The YAML text of ``cfg`` (key order kept, block style, scalar lists inline)."""
    return yaml.dump(
        _plain(cfg),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=100,
    )


def dump_config(cfg: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``cfg`` as YAML to ``path`` (parents created) so that ``load_config(path)`` == ``cfg``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(to_yaml(cfg), encoding="utf-8")
    return path


def config_hash(cfg: Mapping[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of ``cfg`` (sorted keys), for naming runs."""
    text = json.dumps(_plain(cfg), sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
