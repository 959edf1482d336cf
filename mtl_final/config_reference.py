"""The config reference ``docs/config.md``, generated from the spec and each model's ``KEYS``.

``python -m mtl_final.config_reference`` prints it; ``--write docs/config.md`` writes it;
``--check docs/config.md`` exits 1 when the file differs from what the spec gives.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mtl_final.config_spec import SPEC, Key, Section, alias_paths, leaves, type_name

__all__ = ["main", "render", "stale"]

_HEADER = """# Config reference

Every run-config key: its default, type, allowed values and meaning. Set a key in a run YAML
(`train: {lr: 0.01}`) or as an override (`train.lr=0.01`); a section name alone sets its
selector (`model=mmoe`, `tower=final`). Generated from `mtl_final/config_spec.py` and each
model's `KEYS` by `python -m mtl_final.config_reference --write docs/config.md`; edit those, not
this file (tests/test_config.py fails while it is stale).
"""


def _value(value: Any) -> str:
    """A default as YAML writes it: null, true, mlp, [400, 400, 400]."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, str):
        return value or '""'
    return json.dumps(value, ensure_ascii=False)


def _type(key: Key) -> str:
    if key.free_form:
        name = "mapping" if key.entry_type is None else f"mapping of {type_name(key.entry_type())}"
    elif key.path:
        name = "path"
    elif key.default is None and key.proto is None:
        name = "any"
    else:
        name = type_name(key.type_proto)
    return f"{name} or null" if key.default is None else name


def _allowed(key: Key) -> str:
    if key.choices is not None:
        return ", ".join(f"`{_value(c)}`" for c in key.choices)
    if key.entry_keys is not None:
        return "keys " + ", ".join(f"`{k}`" for k in key.entry_keys)
    if key.bounds is None:
        return ""
    low, high = key.bounds
    if high is None:
        return f"≥ {low}"
    return f"≤ {high}" if low is None else f"[{low}, {high}]"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(section: Section, prefix: str) -> list[str]:
    """A markdown table of every key under ``section``, named from ``prefix``."""
    rows = ["| key | default | type | allowed | doc |", "|---|---|---|---|---|"]
    for path, key in leaves(section, prefix):
        cells = (f"`{path}`", f"`{_value(key.default)}`", _type(key), _allowed(key), key.doc)
        rows.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return rows


def _model_keys() -> dict[str, dict[str, Key | Section]]:
    """Registered model name -> its own keys, by name."""
    from mtl_final.models import MODELS

    return {name: dict(MODELS[name].KEYS) for name in sorted(MODELS)}


def render() -> str:
    """The text of ``docs/config.md``."""
    out = [_HEADER]
    top = Section(SPEC.doc, {k: v for k, v in SPEC.keys.items() if isinstance(v, Key)})
    out += ["## Top level", "", *_table(top, ""), ""]
    for name, section in SPEC.keys.items():
        if isinstance(section, Section):
            out += [f"## `{name}`: {section.doc}", "", *_table(section, name), ""]
    models = _model_keys()
    out += ["## Each model's own keys", "",
            "The `model` section holds the keys above and then the chosen model's own keys:", ""]
    for name, keys in models.items():
        if keys:
            out += [f"### `model.name: {name}`", "", *_table(Section(name, keys), "model"), ""]
    bare = [f"`{name}`" for name, keys in models.items() if not keys]
    out += [f"Models without keys of their own: {', '.join(bare)}.", ""]
    aliases = alias_paths(SPEC)
    for keys in models.values():
        aliases.update(alias_paths(Section("", keys), "model"))
    out += ["## Names from other libraries", "",
            "A key written under another library's name is rejected with the matching key as its suggestion:", "",
            "| name | key |", "|---|---|", *(f"| `{a}` | `{k}` |" for a, k in aliases.items()), ""]
    return "\n".join(out)


def stale(path: str | Path) -> str | None:
    """Why the reference at ``path`` is out of date, or None where it is current."""
    path = Path(path)
    if not path.is_file():
        return f"{path} does not exist"
    if path.read_text(encoding="utf-8") != render():
        return f"{path} is out of date with mtl_final/config_spec.py and the models' KEYS"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: print the reference, or ``--write PATH`` it, or ``--check PATH`` it (exit 1 when stale)."""
    parser = argparse.ArgumentParser(prog="python -m mtl_final.config_reference", description=__doc__)
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="write the reference to PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 when PATH is not the current reference")
    args = parser.parse_args(argv)
    if args.write:
        Path(args.write).write_text(render(), encoding="utf-8")
    elif args.check:
        problem = stale(args.check)
        if problem is not None:
            print(f"{problem}; run: python -m mtl_final.config_reference --write {args.check}", file=sys.stderr)
            return 1
    else:
        sys.stdout.write(render())
    return 0


if __name__ == "__main__":
    sys.exit(main())
