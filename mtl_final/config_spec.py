"""The run config's keys, each declared once: default, type, allowed values and a one-line doc.

:data:`SPEC` is the tree of every common key (the ``model`` section's common keys included; each
model declares its own keys as a ``KEYS`` class attribute of :class:`Key` objects). The loader and
validator in :mod:`mtl_final.config`, the modules that check a value themselves and the generated
reference ``docs/config.md`` (:mod:`mtl_final.config_reference`) all read the allowed values here.
This module imports nothing heavy, so that any module may read it.
"""
from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "SPEC",
    "ConfigError",
    "Key",
    "Section",
    "alias_paths",
    "allowed",
    "defaults",
    "elem_proto",
    "leaves",
    "lookup",
    "out_of_bounds",
    "type_name",
]


class ConfigError(ValueError):
    """A config file, override or value is invalid."""


@dataclass(frozen=True)
class Key:
    """One config key.

    default: its value when unset. doc: one line for the reference. choices: the allowed values.
    bounds: inclusive (low, high), None = open; a list key's bounds hold for every element.
    proto: a value of the key's type where the default does not show it (a None default, or an
    empty list: ``[1]`` = list of int). path: a leading ``~`` is expanded. free_form: a dict whose
    keys are data (not checked as config keys), each entry of ``entry_type`` (int accepted for
    float) and, where the set is fixed, one of ``entry_keys``. aliases: the names other libraries
    use for this key, suggested as it when given: a bare name in the key's own section, or a full
    dotted key.
    """

    default: Any
    doc: str
    choices: tuple[Any, ...] | None = None
    bounds: tuple[float | None, float | None] | None = None
    proto: Any = None
    path: bool = False
    free_form: bool = False
    entry_type: type | None = None
    entry_keys: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.doc or "\n" in self.doc:
            raise ConfigError(f"a config key needs a one-line doc, got {self.doc!r}")
        if self.choices is not None:
            object.__setattr__(self, "choices", tuple(self.choices))
            if self.default is not None and self.default not in self.choices:
                raise ConfigError(f"default {self.default!r} is not in its choices {list(self.choices)}")
        if isinstance(self.default, Mapping) and not self.free_form:
            raise ConfigError(f"a dict default {self.default!r} is a Section, or a free_form Key")
        if self.bounds is not None and out_of_bounds(self.default, self.bounds):
            raise ConfigError(f"default {self.default!r} lies outside its bounds {self.bounds}")

    @property
    def type_proto(self) -> Any:
        """The value whose type a set value must have (see :func:`type_name`)."""
        return self.default if self.proto is None else self.proto


@dataclass(frozen=True)
class Section:
    """A config section: its one-line doc and its keys and subsections, in output order."""

    doc: str
    keys: Mapping[str, Union[Key, "Section"]] = field(default_factory=dict)


Node = Union[Key, Section]


def out_of_bounds(value: Any, bounds: tuple[float | None, float | None]) -> bool:
    """Whether a number of ``value`` (a number or a list of them) lies outside inclusive ``bounds``."""
    low, high = bounds
    items = value if isinstance(value, list) else [value]
    return any(
        isinstance(x, (int, float)) and ((low is not None and x < low) or (high is not None and x > high))
        for x in items
    )


def elem_proto(proto: Sequence[Any]) -> Any:
    """The element prototype of a non-empty homogeneous list, else None."""
    if proto and len({type(x) for x in proto}) == 1 and proto[0] is not None:
        return proto[0]
    return None


def type_name(proto: Any) -> str:
    """The type a value must have to stand where ``proto`` does: ``int``, ``list of str``, ..."""
    if isinstance(proto, bool):
        return "bool"
    if isinstance(proto, int):
        return "int"
    if isinstance(proto, float):
        return "float (or int)"
    if isinstance(proto, str):
        return "str"
    if isinstance(proto, (list, tuple)):
        elem = elem_proto(proto)
        return "list" if elem is None else f"list of {type_name(elem)}"
    if isinstance(proto, Mapping):
        return "mapping"
    return type(proto).__name__


def defaults(node: Node) -> Any:
    """The default value of a key, or the nested dict of defaults of a section (a fresh copy)."""
    if isinstance(node, Section):
        return {name: defaults(sub) for name, sub in node.keys.items()}
    return copy.deepcopy(node.default)


def leaves(section: Section, prefix: str = "") -> Iterator[tuple[str, Key]]:
    """(dotted key, Key) of every key under ``section``, in order."""
    for name, sub in section.keys.items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(sub, Section):
            yield from leaves(sub, path)
        else:
            yield path, sub


def alias_paths(section: Section, prefix: str = "") -> dict[str, str]:
    """Dotted alias -> the dotted key it names, for every alias declared under ``section``."""
    out: dict[str, str] = {}
    for path, key in leaves(section, prefix):
        parent = path.rpartition(".")[0]
        for alias in key.aliases:
            out.setdefault(alias if "." in alias or not parent else f"{parent}.{alias}", path)
    return out


def _deep_section(doc: str, hidden_units: list[int], dropout: float, *, model_aliases: bool = False,
                  **extra: Key) -> Section:
    """The keys of a deep-block section (block, tower, expert), declared once for the three.

    model_aliases: the section that model-level names of other libraries (``model.hidden_units``)
    point to.
    """

    def names(*own: str, model: tuple[str, ...] = ()) -> tuple[str, ...]:
        return (*own, *(f"model.{m}" for m in model if model_aliases))

    return Section(doc, {
        "kind": Key("mlp", "mlp, or final (FINAL layers, a drop-in for the MLP)", choices=("mlp", "final")),
        "hidden_units": Key(hidden_units, "layer widths", bounds=(1, None),
                            aliases=names("dnn_hidden_units", model=("hidden_units", "dnn_hidden_units"))),
        "activation": Key("relu", "activation of each layer",
                          choices=("relu", "tanh", "sigmoid", "identity", "gelu", "silu"),
                          aliases=names("hidden_activations", model=("hidden_activations",))),
        "dropout": Key(dropout, "dropout after each layer", bounds=(0.0, 1.0),
                       aliases=names("dropout_rate", "net_dropout", model=("net_dropout",))),
        "batch_norm": Key(True, "BatchNorm in each layer", aliases=names(model=("batch_norm",))),
        "num_steps": Key(2, "FINAL: multiplicative steps N per layer", bounds=(1, None)),
        "aggregation": Key("concat", "FINAL: how a layer's N steps combine", choices=("concat", "sum")),
        "sigma": Key("identity", "FINAL: σ applied to each step", choices=("identity", "tanh", "sigmoid")),
        **extra,
    })


SPEC = Section("run config", {
    "seed": Key(2021, "seeds torch, numpy, python and the batch shuffle", bounds=(0, 2**32 - 1),  # numpy's seeds
                aliases=("random_seed",)),
    "tasks": Key(None, "tasks to train (null = every task of the dataset schema)", proto=["task"]),
    "calibration": Key("none", "after training, each task's probability through a calibrator fitted on valid: "
                               "isotonic, or platt σ(a·logit p + b); ctcvr = product",
                       choices=("none", "isotonic", "platt")),
    "data": Section("dataset files and the funnel simulator", {
        "schema": Key(None, "path to the dataset schema YAML", proto="path", path=True),
        "root": Key(None, "folder holding the train, valid and test files", proto="path", path=True,
                    aliases=("data_dir", "data_root")),
        "cache_dir": Key(".cache/mtl_final", "encoded-store and simulator cache", path=True),
        "invalid_funnel_rows": Key("error", "rows with a conversion but no click: error, or drop (counted)",
                                   choices=("error", "drop")),
        # the keys: the arguments of mtl_final.data.simulator.ensure_simulated
        "simulator": Key(None, "built-in funnel simulator parameters, used when data.root is unset (null = off)",
                         free_form=True, entry_keys=("n_rows", "seed", "splits", "format", "chunk_rows", "version")),
    }),
    "model": Section("the model and the keys every model shares (each model's own keys: see below)", {
        "name": Key("mlp", "the model: one of the registered models below"),
        "embedding_dim": Key(10, "field embedding size", bounds=(1, None), aliases=("embed_dim", "embedding_size")),
        "embedding_regularizer": Key(0.0, "λ of (λ/2)·‖E‖² over whole embedding tables", bounds=(0.0, None)),
        "numeric_init": Key("embedding", "numeric-field vectors: embedding = N(0, 1e-4²) like the tables, "
                                         "xavier = std √(2 / (1 + dim)) as FuxiCTR", choices=("embedding", "xavier")),
        "net_regularizer": Key(0.0, "λ of (λ/2)·‖θ‖² over every trainable parameter outside the embedding tables",
                               bounds=(0.0, None)),
        "task_weights": Key({}, "task name → loss weight (unnamed tasks weigh 1)", free_form=True, entry_type=float),
    }),
    "block": _deep_section("the deep block of single-task models", [400, 400, 400], 0.0, model_aliases=True),
    "tower": _deep_section(
        "the per-task towers of multi-task models", [256, 128], 0.1,
        dual=Key(False, "two blocks per task, logits averaged"),
        kd=Key(True, "with dual: self-distillation toward the averaged detached prediction"),
    ),
    "expert": _deep_section("the experts of MMoE and PLE", [256], 0.1),
    "train": Section("optimisation, evaluation, early stopping and the compute path", {
        # BatchNorm normalises 2 rows or more
        "batch_size": Key(4096, "training batch size", bounds=(2, None), aliases=("batch",)),
        "eval_batch_size": Key(16384, "evaluation chunk (every row is scored)", bounds=(1, None)),
        "optimizer": Key("adam", "the optimizer", choices=("adam", "adamw", "sgd")),
        "lr": Key(0.001, "learning rate", bounds=(0.0, None), aliases=("learning_rate", "lr_rate")),
        "weight_decay": Key(0.0, "the optimizer's weight decay", bounds=(0.0, None)),
        # 0 would write a run without an evaluation, so without the best.pt that predict and export read
        "epochs": Key(100, "training epochs at most (early stopping may end sooner)", bounds=(1, None),
                      aliases=("num_epochs", "n_epochs", "max_epochs")),
        "eval_every_steps": Key(0, "evaluate every this many steps (0 = once per epoch)", bounds=(0, None)),
        "monitor": Key("auto", "early-stop metric: task.metric (cvr.auc) or a weighted sum (ctr.auc:1,cvr.auc:2); "
                               "auto = the sum of task AUCs"),
        "monitor_mode": Key("max", "whether the monitor improves upwards (max) or downwards (min)",
                            choices=("max", "min")),
        "lr_decay_factor": Key(0.1, "lr factor when an evaluation does not improve", bounds=(0.0, 1.0)),
        "min_lr": Key(1.0e-6, "the lr decays no lower", bounds=(0.0, None)),
        "patience": Key(2, "early stop after this many evaluations without improvement", bounds=(0, None),
                        aliases=("early_stop_patience", "early_stopping_patience")),
        "min_delta": Key(1.0e-6, "an evaluation improves when it beats the best monitor value by more",
                         bounds=(0.0, None)),
        "loss_balance": Key("sum", "how the task losses combine: sum (model.task_weights), uncertainty (learned "
                                   "log-variances) or gradnorm (weights balancing gradient norms)",
                            choices=("sum", "uncertainty", "gradnorm")),
        "gradnorm_alpha": Key(1.5, "GradNorm: α, how strongly slower-training tasks get larger gradients",
                              bounds=(0.0, None)),
        "grad_clip_norm": Key(10.0, "gradient norm clip (0 = off)", bounds=(0.0, None),
                              aliases=("max_grad_norm", "clip_grad_norm")),
        "num_threads": Key(0, "torch threads (0 = torch default)", bounds=(0, None)),
        "precision": Key("fp32", "fp32, or bf16 autocast (matmuls in bfloat16; weights, heads, losses float32)",
                         choices=("fp32", "bf16")),
        "matmul_precision": Key("highest", "torch float32 matmul precision: highest = IEEE, high = TF32, "
                                           "medium = also bfloat16 inputs (AMX CPUs)",
                                choices=("highest", "high", "medium")),
        "kernels": Key("native", "native = fused C kernels for CPU dense layers and AutoInt attention; torch = "
                                 "PyTorch ops only", choices=("native", "torch")),
        "cpu_matmul": Key("auto", "CPU float32 matmul library: blas (MKL), onednn, or auto (onednn on AMD CPUs "
                                  "where it stays float32)", choices=("auto", "blas", "onednn")),
        "device": Key("auto", "auto, cpu, cuda or cuda:N"),
        "progress": Key(True, "tqdm progress bar"),
        "tensorboard": Key(True, "TensorBoard event files in the run folder"),
        "gauc_field": Key(None, "categorical field to group gAUC by", proto="field"),
        "max_steps": Key(0, "stop after this many steps (0 = no limit; smoke runs)", bounds=(0, None)),
    }),
    "distributed": Section("multi-process training, used only under torchrun (WORLD_SIZE > 1)", {
        "backend": Key("auto", "auto (nccl on CUDA, gloo on CPU), gloo or nccl", choices=("auto", "gloo", "nccl")),
        "sync_batchnorm": Key(False, "BatchNorm statistics over the global batch instead of each rank's share"),
    }),
})


def lookup(path: str, root: Section = SPEC) -> Key:
    """The Key at dotted ``path`` (``lookup("train.optimizer").choices``); KeyError if there is none."""
    node: Node = root
    for part in path.split("."):
        if not isinstance(node, Section) or part not in node.keys:
            raise KeyError(f"no config key {path!r} in the spec")
        node = node.keys[part]
    if not isinstance(node, Key):
        raise KeyError(f"{path!r} is a config section, not a key")
    return node


def allowed(path: str) -> tuple[Any, ...]:
    """The allowed values of the choice key at dotted ``path`` (``allowed("block.kind")``)."""
    choices = lookup(path).choices
    if choices is None:
        raise KeyError(f"config key {path!r} has no fixed choices")
    return choices
