"""build_block: the one factory for every deep block, tower and expert."""
from __future__ import annotations

from typing import Any, Mapping

from torch import nn

from mtl_final.config_spec import allowed
from mtl_final.nn.final import FinalBlock
from mtl_final.nn.mlp import MLPBlock

BLOCK_KINDS = allowed("block.kind")
_FINAL_ONLY = ("num_steps", "aggregation", "sigma")
_IGNORED = ("kind", "dual", "kd")


def build_block(kind: str, in_dim: int, **options: Any) -> nn.Module:
    """A deep block of `kind` 'mlp' or 'final' mapping [batch, in_dim] → [batch, block.output_dim].

    options: hidden_units, activation, dropout, batch_norm, bias; for 'final' also num_steps,
    aggregation, sigma (silently unused by 'mlp' so one config section serves both kinds).
    """
    options = {k: v for k, v in options.items() if k not in _IGNORED}
    if kind == "mlp":
        return MLPBlock(in_dim, **{k: v for k, v in options.items() if k not in _FINAL_ONLY})
    if kind == "final":
        return FinalBlock(in_dim, **options)
    raise ValueError(f"unknown block kind {kind!r}; choose one of {list(BLOCK_KINDS)}")


def build_block_from_config(section: Mapping[str, Any], in_dim: int, name: str = "block",
                            units_key: str | None = None, **overrides: Any) -> nn.Module:
    """build_block from a config section such as cfg['block'] / cfg['tower'] (keys as in DEFAULTS).

    name: the section's config key (``block``, ``tower``, ``expert``), and units_key the key holding the
    widths where they are not ``<name>.hidden_units`` (``model.shared_units``): a bad value's error
    names them.
    """
    options = {**section, **overrides}
    kind = options.pop("kind")
    try:
        return build_block(kind, in_dim, **options)
    except ValueError as exc:
        keys = f"'{units_key or name + '.hidden_units'}', '{name}.num_steps', '{name}.aggregation'"
        raise ValueError(f"config keys {keys} (block kind {kind!r}): {exc}") from exc
