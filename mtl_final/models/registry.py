"""Model registry: config name → class, and the one `build_model`."""
from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence, TypeVar

from mtl_final.data.features import FeatureSpec
from mtl_final.models.base import RankingModel

MODELS: dict[str, type[RankingModel]] = {}
T = TypeVar("T", bound=type[RankingModel])


def register_model(name: str) -> Callable[[T], T]:
    """Class decorator: make a model available as `model.name: <name>` with its own config `KEYS`."""

    def wrap(cls: T) -> T:
        from mtl_final.config import register_model_keys

        if name in MODELS:
            raise ValueError(f"model name {name!r} registered twice")
        MODELS[name] = cls
        register_model_keys(name, cls.KEYS)
        return cls

    return wrap


def build_model(cfg: Mapping[str, Any], features: FeatureSpec, tasks: Sequence[Any]) -> RankingModel:
    """Instantiate cfg.model.name for these features and tasks, with the paper's initialisation."""
    name = cfg["model"]["name"]
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {sorted(MODELS)}")
    model = MODELS[name](features, tasks, cfg)
    model.init_weights()
    return model
