"""Run configuration: defaults, YAML files with includes, ``key=value`` overrides and validation.

A run's config is a plain nested dict. :func:`load_config` starts from :data:`DEFAULTS` (the
defaults of :data:`mtl_final.config_spec.SPEC`, where every key is declared), merges a YAML file
(and the files it ``include``s), applies command-line style overrides, validates every key and
value against the spec, and returns the fully resolved tree. The ``model`` section is the common
model keys plus the chosen model's own keys, registered by the models package through
:func:`register_model_keys`.
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

from mtl_final.config_spec import (
    SPEC,
    ConfigError,
    Key,
    Section,
    alias_paths,
    defaults,
    elem_proto,
    out_of_bounds,
    type_name,
)

__all__ = [
    "DEFAULTS",
    "MODEL_KEYS",
    "ConfigError",
    "apply_overrides",
    "config_hash",
    "dump_config",
    "get",
    "load_config",
    "load_yaml",
    "register_model_keys",
    "to_yaml",
    "validate_config",
]


# --------------------------------------------------------------------------------------------
# Defaults and the models' own keys
# --------------------------------------------------------------------------------------------

DEFAULTS: dict[str, Any] = defaults(SPEC)

MODEL_COMMON_KEYS: tuple[str, ...] = tuple(SPEC.keys["model"].keys)

# Model name -> that model's own keys (merged into the ``model`` section after the common keys).
MODEL_KEYS: dict[str, dict[str, Key | Section]] = {}

_MODELS_IMPORT_ERROR: BaseException | None = None


def register_model_keys(name: str, keys: Mapping[str, Key | Section]) -> None:
    """Register model ``name``'s own config keys (a Key, or a Section of them, per key).

    The keys live in the ``model`` section next to the common keys, which they may not redefine.
    Registering a name again replaces its earlier keys.
    """
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if not isinstance(keys, Mapping) or not all(isinstance(k, (Key, Section)) for k in keys.values()):
        raise ConfigError(f"keys of model {name!r} must be a dict of config_spec.Key or Section, got {keys!r}")
    clash = [k for k in keys if k in MODEL_COMMON_KEYS]
    if clash:
        raise ConfigError(
            f"defaults of model {name!r} redefine common model keys {clash}; "
            f"common keys are {list(MODEL_COMMON_KEYS)}"
        )
    MODEL_KEYS[name] = dict(keys)


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
        elem = elem_proto(proto)
        if elem is None:
            return copy.deepcopy(list(value))
        out = [_coerce(x, elem) for x in value]
        return _BAD if any(x is _BAD for x in out) else out
    return copy.deepcopy(value) if isinstance(value, type(proto)) else _BAD


def _valid_keys(section: Section, prefix: str = "") -> list[str]:
    """Every dotted key of ``section``: its keys and subsections, and theirs."""
    keys: list[str] = []
    for name, sub in section.keys.items():
        path = f"{prefix}.{name}" if prefix else str(name)
        keys.append(path)
        if isinstance(sub, Section):
            keys.extend(_valid_keys(sub, path))
    return keys


def _closest(key: str, names: Sequence[str], known: set[str]) -> str | None:
    """The closest of dotted ``names`` to the unknown ``key``, if any is close; ``known``: the valid keys."""
    parent, _, leaf = key.rpartition(".")
    parent_known = parent == "" or parent in known
    siblings = [v.rpartition(".")[2] for v in names if v.rpartition(".")[0] == parent]

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
        v for v in names
        if v not in ancestors and not (parent_known and v.rpartition(".")[0] == parent)
    ]
    match = difflib.get_close_matches(key, others, n=1, cutoff=0.6)
    if match:
        return match[0]
    same_leaf = [v for v in names if v.rpartition(".")[2] == leaf]
    return same_leaf[0] if same_leaf else None


def _suggest(key: str, valid: Sequence[str], aliases: Mapping[str, str]) -> str | None:
    """The closest valid dotted key to the unknown ``key``, if any is close (an alias stands for its key)."""
    hint = _closest(key, [*valid, *aliases], set(valid))
    return aliases.get(hint, hint) if hint is not None else None


class _Validator:
    """One validation pass over a merged config; collects every error."""

    def __init__(self, spec: Section, model_name: str | None, lenient: set[str]) -> None:
        self.model_name = model_name
        self.lenient = lenient  # sections whose unknown keys are passed through unchecked
        self.valid = _valid_keys(spec)
        valid = set(self.valid)
        # an alias that is a key of this config (a model's own key) is that key, not the alias
        self.aliases = {a: k for a, k in alias_paths(spec).items() if a not in valid}
        self.errors: list[str] = []

    def unknown(self, path: str, value: Any) -> None:
        while isinstance(value, Mapping) and len(value) == 1:  # name the leaf set by a.b.c=v
            key, value = next(iter(value.items()))
            path = f"{path}.{key}"
        msg = f"unknown config key {path!r}"
        hint = _suggest(path, self.valid, self.aliases)
        if hint is not None:
            msg += f" — did you mean {hint!r}?"
        top, _, rest = path.partition(".")
        if top == "model" and rest:
            leaf = rest.partition(".")[0]
            owners = [n for n, keys in MODEL_KEYS.items() if leaf in keys and n != self.model_name]
            if owners:
                msg += f" (model {self.model_name!r} has no such key; it belongs to model(s) {owners})"
        self.errors.append(msg)

    def bad_type(self, path: str, proto: Any, value: Any) -> None:
        self.errors.append(
            f"config key {path!r} expects {type_name(proto)}, "
            f"got {value!r} ({type(value).__name__})"
        )

    def check(self, value: Any, node: Key | Section, path: str) -> Any:
        """The validated (coerced, defaults-filled) form of ``value``."""
        if isinstance(node, Section):
            return self.section(value, node, path)
        if node.free_form:
            return self.free_form(value, node, path)
        if node.default is None and (value is None or node.proto is None):
            return copy.deepcopy(value)
        out = _coerce(value, node.type_proto)
        if out is _BAD:
            self.bad_type(path, node.type_proto, value)
            return value
        if node.path and isinstance(out, str):
            out = os.path.expanduser(out)
        self.finite(path, out)
        if node.choices is not None and out not in node.choices:
            allowed = list(node.choices)
            msg = f"config key {path!r} must be one of {allowed}, got {out!r}"
            close = difflib.get_close_matches(str(out), [str(a) for a in allowed], n=1)
            if close:
                msg += f" — did you mean {close[0]!r}?"
            self.errors.append(msg)
        if node.bounds is not None and out_of_bounds(out, node.bounds):
            low, high = node.bounds
            lo = "-inf" if low is None else low
            hi = "inf" if high is None else high
            self.errors.append(f"config key {path!r} must lie in [{lo}, {hi}], got {out!r}")
        return out

    def finite(self, path: str, value: Any) -> None:
        """NaN and ±inf pass every range check (comparisons with NaN are False): reject them here."""
        items = value if isinstance(value, list) else [value]
        if any(isinstance(x, float) and not math.isfinite(x) for x in items):
            self.errors.append(f"config key {path!r} must be a finite number, got {value!r}")

    def free_form(self, value: Any, node: Key, path: str) -> Any:
        if value is None and node.default is None:
            return None
        if not isinstance(value, Mapping):
            self.bad_type(path, {}, value)
            return value
        out = copy.deepcopy(dict(value))
        allowed = node.entry_keys
        for key in out if allowed is not None else ():
            if key not in allowed:
                msg = f"unknown config key '{path}.{key}'"
                close = difflib.get_close_matches(str(key), allowed, n=1)
                msg += f" — did you mean '{path}.{close[0]}'?" if close else f"; {path} takes {list(allowed)}"
                self.errors.append(msg)
        if node.entry_type is not None:
            proto = node.entry_type()
            for key, sub in out.items():
                fixed = _coerce(sub, proto)
                if fixed is _BAD:
                    self.bad_type(f"{path}.{key}", proto, sub)
                else:
                    out[key] = fixed
                    self.finite(f"{path}.{key}", fixed)
        return out

    def section(self, value: Any, node: Section, path: str) -> Any:
        if not isinstance(value, Mapping):
            self.bad_type(path or "<config>", {}, value)
            return value
        out: dict[str, Any] = {}
        for key, sub_node in node.keys.items():
            sub = f"{path}.{key}" if path else key
            out[key] = self.check(value[key], sub_node, sub) if key in value else defaults(sub_node)
        for key, sub_value in value.items():
            if key in node.keys:
                continue
            sub = f"{path}.{key}" if path else str(key)
            if path in self.lenient:
                out[key] = copy.deepcopy(sub_value)
            else:
                self.unknown(sub, sub_value)
        return out


def _unknown_model_message(name: str) -> str:
    names = list(MODEL_KEYS)
    ordered = difflib.get_close_matches(name, names, n=len(names), cutoff=0.0) if names else []
    ordered += [n for n in names if n not in ordered]
    msg = f"unknown model {name!r} (config key 'model.name'); registered models: {ordered}"
    if _MODELS_IMPORT_ERROR is not None:
        msg += f" [importing mtl_final.models failed: {_MODELS_IMPORT_ERROR!r}]"
    return msg


def _run_spec(model_name: str) -> Section:
    """SPEC with the ``model`` section holding the common keys and then model ``model_name``'s own."""
    common = SPEC.keys["model"]
    assert isinstance(common, Section)
    model = Section(common.doc, {**common.keys, **MODEL_KEYS[model_name]})
    return Section(SPEC.doc, {**SPEC.keys, "model": model})


def validate_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Validate a merged config and return its resolved copy (coerced, every default filled in).

    Does not import the models package; :func:`load_config` does that first.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    spec = SPEC
    model = cfg.get("model", {})
    name = model.get("name", DEFAULTS["model"]["name"]) if isinstance(model, Mapping) else None
    lenient: set[str] = set()
    errors: list[str] = []
    model_name: str | None = None
    if isinstance(name, str) and name in MODEL_KEYS:
        model_name = name
        spec = _run_spec(name)
    else:
        lenient.add("model")  # the model's own keys are unknown: do not report them
        if isinstance(name, str):
            errors.append(_unknown_model_message(name))
    validator = _Validator(spec, model_name, lenient)
    out = validator.check(cfg, spec, "")
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
