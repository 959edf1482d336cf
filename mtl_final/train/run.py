"""run_experiment: config → data store → model → Trainer → run directory with metrics.json.

Under torchrun every rank runs it: rank 0 builds the data cache first and alone writes the run
directory; the others load the cache and train their shards (mtl_final/distributed.py)."""
from __future__ import annotations

import json
import math
import random
import shutil
import time
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch

from mtl_final import distributed, reliability
from mtl_final.calibration import CALIBRATION_FILE, CalibratedModel, fit_calibration
from mtl_final.config import ConfigError, config_hash, dump_config, load_config
from mtl_final.data.schema import DatasetSchema
from mtl_final.data.simulator_metrics import entire_space_metrics, has_ground_truth
from mtl_final.data.store import EncodedStore, TensorSplit
from mtl_final.models import build_model
from mtl_final.models.base import RankingModel
from mtl_final.train.checkpoint import CheckpointError, atomic_file, check_weights_fit, load_checkpoint
from mtl_final.train.run_dir import claim_run_dir
from mtl_final.train.runtime import configure_cpu, configure_runtime
from mtl_final.train.trainer import CHECKPOINT_FORMAT, Trainer

SPLITS = ("train", "valid", "test")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def uses_simulator(cfg: Mapping[str, Any]) -> bool:
    return cfg["data"]["simulator"] is not None and not cfg["data"]["root"]


def dataset_files(cfg: Mapping[str, Any]) -> tuple[Path, Path]:
    """(schema file, data folder) of a run: data.schema + data.root when data.root is set, else
    the built-in funnel simulator's (data.simulator), which is generated here on first use."""
    data = cfg["data"]
    if uses_simulator(cfg):
        from mtl_final.data.simulator import ensure_simulated

        root = ensure_simulated(data["cache_dir"], **data["simulator"])
        return (Path(data["schema"]) if data["schema"] else root / "schema.yaml"), root
    if not data["schema"] or not data["root"]:
        raise ValueError(
            "no data: set data.schema=<schema.yaml> and data.root=<folder with train/valid/test>, "
            "or data.simulator={n_rows: 200000} for the built-in funnel simulator"
        )
    return Path(data["schema"]), Path(data["root"])


def resolve_dataset(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> tuple[DatasetSchema, Path]:
    """The schema and data folder of a run (see `dataset_files`)."""
    schema_path, root = dataset_files(cfg)
    return DatasetSchema.from_yaml(schema_path), root


def load_store(cfg: Mapping[str, Any], log: Callable[[str], None] = print
               ) -> tuple[DatasetSchema, Path, EncodedStore]:
    """The run's schema (tasks selected), data folder and encoded store, built on first use."""
    schema, root = resolve_dataset(cfg, log)
    if cfg["tasks"]:
        schema = schema.select_tasks(list(cfg["tasks"]))
    store = EncodedStore.build_or_load(schema, root, cfg["data"]["cache_dir"],
                                       invalid_funnel_rows=cfg["data"]["invalid_funnel_rows"], log=log)
    return schema, root, store


def default_run_dir(cfg: Mapping[str, Any], base: str | Path = "runs") -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return Path(base) / f"{stamp}-{cfg['model']['name']}-{config_hash(cfg)[:8]}"


def run_experiment(cfg: dict[str, Any], run_dir: str | Path | None = None,
                   log: Callable[[str], None] = print, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate one configuration; writes config.yaml, schema.yaml (a copy of the dataset
    schema), encoders.json, best.pt, last.pt, TensorBoard events and metrics.json into run_dir.
    Returns the metrics dict.

    A metric that is undefined (AUC or gAUC of rows holding one class, any metric of no rows) is NaN
    in the returned dict and null in metrics.json. `epochs_run` counts the epochs training entered
    (one stopped mid-epoch counts); `best_epoch` is the epoch of the best evaluation (0: none).

    resume=True continues the interrupted run in run_dir from its last.pt (see `resume_run`). Else run_dir
    must be new, empty or hold no run files; a run in progress in it (its lock file) is refused either way."""
    t = cfg["train"]
    configure_cpu(t["num_threads"])
    dist, device = _start_processes(t["device"], cfg["distributed"]["backend"])
    if not dist.is_main:
        log = _silent
    seed_everything(int(cfg["seed"]))
    # the data first: a config whose data or tasks are wrong fails before it writes a run directory
    schema, root, store = distributed.main_first(lambda: load_store(cfg, log), dist)
    run_dir, claim = _claim_run_dir(cfg, run_dir, dist, resume, log)
    with claim:  # one run per folder: the lock is released when the run ends or fails
        _prepare_run_dir(cfg, run_dir, store, dist, resume)
        splits = _tensor_splits(cfg, schema, store, run_dir, dist, log)
        model = _build_model(cfg, store, schema, dist)
        gauc_column = _gauc_column(t["gauc_field"], store)
        configure_runtime(t, device, log)
        trainer = Trainer(model, cfg, run_dir, device=device, log=log, gauc_column=gauc_column, dist=dist)
        if resume:
            _restore(trainer, run_dir, device, log)
        trainer.fit(splits["train"], splits["valid"])
        uncalibrated = _calibrate(cfg, trainer, splits, run_dir, dist, log)
        metrics = _final_metrics(trainer, store, schema, root, splits, dist)
        metrics.update(uncalibrated)
        _write_outputs(cfg, trainer, metrics, run_dir, dist, log)
        return metrics


def _start_processes(device_name: str, backend: str) -> tuple[distributed.DistContext, torch.device]:
    """This process's distributed context (single when not under torchrun) and its device
    (train.device; each rank's own GPU under torchrun)."""
    device = resolve_device(device_name)
    dist = distributed.init_from_env(backend, device)
    return dist, distributed.rank_device(device, dist)


def _claim_run_dir(cfg: Mapping[str, Any], run_dir: str | Path | None, dist: distributed.DistContext,
                   resume: bool, log: Callable[[str], None]) -> tuple[Path, AbstractContextManager[Any]]:
    """The run directory (the same on every rank) and the claim to hold while the run uses it: rank 0's
    lock (rank 0 alone writes the folder), a no-op on the other ranks."""
    run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else str(default_run_dir(cfg)), dist))
    lock = distributed.main_first(lambda: claim_run_dir(run_dir, resume, log) if dist.is_main else None, dist)
    return run_dir, lock if lock is not None else nullcontext()


def _prepare_run_dir(cfg: Mapping[str, Any], run_dir: Path, store: EncodedStore,
                     dist: distributed.DistContext, resume: bool) -> None:
    """A new run writes its config.yaml, the encoders and a copy of the schema into its claimed run
    directory (rank 0); a resumed one checks its encoders match."""
    if resume:
        _check_same_encoders(store.encoders.to_dict(), run_dir / "encoders.json")
    elif dist.is_main:  # claim_run_dir made the folder and found no run files in it
        dump_config(cfg, run_dir / "config.yaml")
        store.encoders.save(run_dir / "encoders.json")
        # a copy of the schema, so that predict and export need nothing outside the run directory
        shutil.copyfile(dataset_files(cfg)[0], run_dir / "schema.yaml")


def _tensor_splits(cfg: Mapping[str, Any], schema: DatasetSchema, store: EncodedStore, run_dir: Path,
                   dist: distributed.DistContext, log: Callable[[str], None]) -> dict[str, TensorSplit]:
    """Split name -> TensorSplit in RAM, with the tasks' and their parents' labels."""
    task_labels = {task.name: task.label for task in (*schema.tasks, *schema.parent_tasks)}
    splits = {name: store.split(name).to_tensors(task_labels) for name in SPLITS}
    log(f"data: {schema.name} " + ", ".join(f"{k} {v.cat.shape[0]:,} rows" for k, v in splits.items())
        + f" | tasks {[t.name for t in schema.tasks]} | run dir {run_dir}")
    if dist.enabled:
        batch = cfg["train"]["batch_size"]
        log(f"distributed: {dist.world_size} processes ({dist.backend}), {batch} rows per step "
            f"shared out as about {batch // dist.world_size} per process")
    return splits


def _build_model(cfg: Mapping[str, Any], store: EncodedStore, schema: DatasetSchema,
                 dist: distributed.DistContext) -> RankingModel:
    """The configured model, initialised from the run seed; then each rank's own random stream."""
    seed_everything(int(cfg["seed"]))
    model = build_model(cfg, store.feature_spec, list(schema.tasks))
    distributed.seed_rank_streams(int(cfg["seed"]), dist)
    return model


def _gauc_column(field: str | None, store: EncodedStore) -> int | None:
    """Index of the categorical field train.gauc_field among the store's (None when it is not set)."""
    if not field:
        return None
    names = [name for name, _ in store.feature_spec.categorical]
    if field not in names:
        raise ValueError(f"train.gauc_field={field!r} is not a categorical field; choose one of {names}")
    return names.index(field)


def _calibrate(cfg: Mapping[str, Any], trainer: Trainer, splits: Mapping[str, TensorSplit], run_dir: Path,
               dist: distributed.DistContext, log: Callable[[str], None]) -> dict[str, Any]:
    """calibration=isotonic|platt: fit a calibrator per task on the best weights' valid predictions
    (mtl_final/calibration.py), write calibration.json and the reliability diagrams (rank 0), and let
    `trainer` score calibrated probabilities from here on, so that metrics.json's valid, test (and
    test_entire_space) are those of the calibrated outputs. Returns the raw ones as valid_uncalibrated
    and test_uncalibrated; {} with calibration=none."""
    method = cfg["calibration"]
    if method == "none":
        return {}
    # the raw predictions, scored once each (on every rank: predict gathers their rows)
    raw_probs = {split: trainer.predict(splits[split]) for split in ("valid", "test")}
    raw = {f"{split}_uncalibrated": trainer.evaluate(splits[split], probs) for split, probs in raw_probs.items()}
    tasks, valid, test = trainer.model.tasks, splits["valid"], splits["test"]
    calibration = fit_calibration(method, tasks, raw_probs["valid"], _labels(valid))
    if dist.is_main:
        calibration.save(run_dir / CALIBRATION_FILE)
    log(f"calibration: {method} fitted on valid ({run_dir / CALIBRATION_FILE}); valid and test metrics are "
        "of the calibrated outputs, *_uncalibrated of the model's own")
    missing = reliability.missing_plotter()
    if missing:
        log(f"reliability diagrams skipped: {missing}")
    elif dist.is_main:
        probs = raw_probs["test"]
        files = reliability.write_reliability_diagrams(run_dir, tasks, probs, calibration.apply(probs), _labels(test))
        log(f"reliability diagrams (test split): {', '.join(f.name for f in files)}")
    trainer.model = CalibratedModel(trainer.model, calibration)
    return raw


def _labels(split: TensorSplit) -> dict[str, np.ndarray]:
    return {name: y.numpy() for name, y in split.labels.items()}


def _restore(trainer: Trainer, run_dir: Path, device: torch.device, log: Callable[[str], None]) -> None:
    """Load the interrupted run's last.pt (and best.pt, when one was written) into `trainer`."""
    last = load_checkpoint(run_dir / "last.pt", device)
    best = load_checkpoint(run_dir / "best.pt", device) if (run_dir / "best.pt").exists() else None
    for name, state in (("last.pt", last), ("best.pt", best)):
        if state is not None:
            check_weights_fit(trainer.model, state, run_dir / name)
    trainer.restore(last, best)
    log(f"resumed {run_dir} at step {trainer.global_step} (epoch {last['epoch']}, "
        f"{len(trainer.history)} evaluations done)")


def _final_metrics(trainer: Trainer, store: EncodedStore, schema: DatasetSchema, root: Path,
                   splits: Mapping[str, TensorSplit], dist: distributed.DistContext) -> dict[str, Any]:
    """metrics.json of a trained run: valid and test metrics of the best weights, the training
    summary, the data report and, when the test file has the simulator's ground-truth columns
    (simulated data, through data.simulator or data.root), the test's entire-space CVR metrics."""
    test_probs = trainer.predict(splits["test"])  # scored once: the metrics and the ground truth both read it
    metrics: dict[str, Any] = {
        "valid": trainer.evaluate(splits["valid"]),
        "test": trainer.evaluate(splits["test"], test_probs),
        "best_epoch": trainer.best_epoch,
        "epochs_run": trainer.epochs_run,
        "train_seconds": round(trainer.train_seconds, 3),
        "steps": trainer.global_step,
        "parameters": sum(p.numel() for p in trainer.model.parameters()),
        "world_size": dist.world_size,
        "data_report": store.report,
    }
    test_file = root / schema.files["test"]
    if has_ground_truth(test_file):
        metrics["test_entire_space"] = entire_space_metrics(test_probs, test_file, schema.tasks)
    return metrics


def _write_outputs(cfg: Mapping[str, Any], trainer: Trainer, metrics: dict[str, Any], run_dir: Path,
                   dist: distributed.DistContext, log: Callable[[str], None]) -> None:
    """metrics.json (rank 0), TensorBoard's hyper-parameters, the closed trainer and the summary line."""
    if dist.is_main:
        _write_json(run_dir / "metrics.json", metrics)
    final = {f"test/{task}/{name}": float(v) for task, ms in metrics["test"].items()
             for name, v in ms.items() if name != "rows"}
    trainer.log_hparams(_flatten(cfg), final)
    trainer.close()
    summary = " ".join(f"{task}.auc={ms['auc']:.6f}" for task, ms in metrics["test"].items())
    log(f"test: {summary} | best epoch {trainer.best_epoch} of {trainer.epochs_run} | "
        f"{trainer.train_seconds:.1f}s | metrics in {run_dir / 'metrics.json'}")


def resume_run(run_dir: str | Path, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Continue an interrupted run from its directory: the config.yaml it wrote, its encoders and
    its last.pt (written after every validation). The continued run takes the same steps, batches
    and dropout draws as an uninterrupted one, so on the same machine and thread count it ends
    with the same weights and metrics. A finished run only has its metrics recomputed."""
    run_dir = Path(run_dir)
    for name in ("config.yaml", "last.pt"):
        if not (run_dir / name).is_file():
            raise FileNotFoundError(f"cannot resume {run_dir}: no {name} (a run writes last.pt after its first "
                                    "validation; start it again with --config instead)")
    return run_experiment(load_config(run_dir / "config.yaml"), run_dir, log=log, resume=True)


def can_resume(run_dir: str | Path, cfg: Mapping[str, Any]) -> bool:
    """Whether run_dir holds an unfinished run (no metrics.json) of exactly `cfg` whose last.pt this
    version can continue. A finished run is not reused: rerunning it means training it again."""
    run_dir = Path(run_dir)
    if (run_dir / "metrics.json").exists() or not (run_dir / "last.pt").is_file() \
            or not (run_dir / "config.yaml").is_file():
        return False
    try:
        if load_config(run_dir / "config.yaml") != cfg:
            return False
    except ConfigError:
        return False
    try:
        return load_checkpoint(run_dir / "last.pt").get("format") == CHECKPOINT_FORMAT
    except CheckpointError:  # truncated or corrupt: the run cannot go on
        return False


def _check_same_encoders(fitted: dict[str, Any], saved: Path) -> None:
    if not saved.is_file():
        raise FileNotFoundError(f"cannot resume: {saved} is missing")
    if json.loads(saved.read_text(encoding="utf-8")) != json.loads(json.dumps(fitted)):
        raise ValueError(f"cannot resume: the encoders fitted on today's train data differ from {saved} "
                         "(the data changed since the run started); start a new run instead")


def _silent(message: str) -> None:
    """The log of ranks other than 0: rank 0 speaks for the job."""


def _write_json(path: Path, obj: Any) -> None:
    """Write `obj` as JSON, atomically; a NaN or infinite number (an undefined metric) is written as null."""
    text = json.dumps(_null_non_finite(obj), indent=2, default=_json_default, allow_nan=False) + "\n"
    with atomic_file(path) as f:
        f.write(text.encode("utf-8"))


def _null_non_finite(value: Any) -> Any:
    """`value` with every NaN / ±inf float (also numpy's) replaced by None, recursively."""
    if isinstance(value, Mapping):
        return {k: _null_non_finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_null_non_finite(v) for v in value]
    if isinstance(value, (float, np.floating)) and not math.isfinite(value):
        return None
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value)}")


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
