"""Train torch-rechub 0.9.0's SharedBottom / MMoE / PLE on the census-income files, next to ours.

This harness holds no torch-rechub code. torch-rechub gets its own environment, so that it can
never change mtl_final's torch; its wheel is installed without dependencies and those it imports
(its METADATA's Requires-Dist: numpy, pandas, scikit-learn, tqdm) one by one, each under a
constraint that pins torch:

    python -m venv /tmp/rechub_venv                      # the python of mtl_final's venv
    echo "torch==2.13.0" > /tmp/rechub_constraints.txt
    /tmp/rechub_venv/bin/pip install -c /tmp/rechub_constraints.txt torch==2.13.0
    /tmp/rechub_venv/bin/pip install --no-deps torch-rechub==0.9.0
    for p in numpy pandas scikit-learn tqdm pyyaml pyarrow; do   # pyyaml, pyarrow: our config and store
        /tmp/rechub_venv/bin/pip install -c /tmp/rechub_constraints.txt $p; done
    /tmp/rechub_venv/bin/python benchmarks/torch_rechub_compare.py --seeds 2021,2022,2023

Same files and protocol as ours: each model gets the parameters of our config
(configs/mtl/census_{shared_bottom,mmoe,ple}.yaml, translated by `rechub_params`; settings it
cannot express are refused) and reads the rows of our encoded store (the same vocabularies, OOV
index and numeric normalisation), trains with torch-rechub's MTLTrainer (Adam, weight decay 0),
stops early on our train.monitor (the weighted sum of valid AUCs, with our patience) and is scored
with our metric functions on the best-valid weights. What torch-rechub 0.9.0 does differently and
cannot be told otherwise:
  * numeric fields enter the network as their raw (normalised) value, one input each; ours embed
    them as value · w_f (embedding_dim inputs each);
  * its MMoE / PLE gates are Linear → BatchNorm → softmax; ours Linear → softmax;
  * the loss is the mean of the task losses (ours: their sum); no lr decay on a plateau, no
    gradient clipping; PyTorch's default Linear init (ours: Xavier-normal); embeddings N(0, 1e-4²)
    as ours.
Each (model, seed) runs in this process with --threads torch threads; rows already in the CSV are
kept and not rerun. Writes <out>/census_rechub.csv, .md (our mlp variant of results/census.csv
next to torch-rechub's) and .commands.
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import shlex
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:  # mtl_final is not installed in torch-rechub's venv
    sys.path.insert(0, str(REPO_ROOT))

CONFIGS = {"shared_bottom": "configs/mtl/census_shared_bottom.yaml",
           "mmoe": "configs/mtl/census_mmoe.yaml",
           "ple": "configs/mtl/census_ple.yaml"}
RECHUB_CLASS = {"shared_bottom": "SharedBottom", "mmoe": "MMOE", "ple": "PLE"}
ACTIVATIONS = ("relu", "sigmoid")  # ours that torch-rechub's MLP has under the same name
# our settings torch-rechub's models and MTLTrainer have no parameter for: only these values
FIXED = {"tower.kind": "mlp", "tower.dual": False, "tower.batch_norm": True, "expert.kind": "mlp",
         "expert.batch_norm": True, "train.optimizer": "adam", "train.weight_decay": 0.0,
         "model.embedding_regularizer": 0.0, "model.net_regularizer": 0.0, "model.task_weights": {},
         "train.eval_every_steps": 0, "train.precision": "fp32", "train.matmul_precision": "highest"}


def rechub_params(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """torch-rechub 0.9.0 parameters equal to a resolved census config of ours:
    {"model": class name, "model_kwargs": its keyword arguments besides features and task_types,
    "embed_dim", "batch_size", "lr", "epochs", "patience", "monitor": task → weight of its valid AUC}.

    Raises ValueError for settings torch-rechub cannot express."""
    from mtl_final.config import get
    from mtl_final.train.metrics import parse_monitor

    for key, wanted in FIXED.items():
        if get(cfg, key) != wanted:
            raise ValueError(f"{key}={get(cfg, key)!r}: torch-rechub's run needs {wanted!r}")
    model, tower, expert, train = cfg["model"], cfg["tower"], cfg["expert"], cfg["train"]
    if model["name"] not in RECHUB_CLASS:
        raise ValueError(f"model.name={model['name']!r}: compared models are {sorted(RECHUB_CLASS)}")
    tasks = list(cfg["tasks"] or [])
    if len(tasks) < 2:
        raise ValueError(f"tasks={cfg['tasks']!r}: name the tasks (two or more) of the multi-task run")
    for section in ("tower", "expert"):
        if cfg[section]["activation"] not in ACTIVATIONS:
            raise ValueError(f"{section}.activation={cfg[section]['activation']!r}: torch-rechub's MLP has "
                             f"{list(ACTIVATIONS)} of ours")
    monitor = parse_monitor(train["monitor"], tasks)
    bad = [m for m in monitor if m.partition(".")[2] != "auc" or m.partition(".")[0] not in tasks]
    if bad:
        raise ValueError(f"train.monitor={train['monitor']!r}: torch-rechub's trainer scores the AUC of "
                         f"each task only, not {bad}")

    def mlp(section: Mapping[str, Any], dims: Sequence[int]) -> dict[str, Any]:
        return {"dims": list(dims), "dropout": section["dropout"], "activation": section["activation"]}

    towers = [mlp(tower, tower["hidden_units"]) for _ in tasks]
    if model["name"] == "shared_bottom":
        if not model["shared_units"]:
            raise ValueError("model.shared_units=[]: torch-rechub's SharedBottom needs a bottom layer")
        # our shared block is built from the tower section (its dropout and activation)
        kwargs = {"bottom_params": mlp(tower, model["shared_units"]), "tower_params_list": towers}
    elif model["name"] == "mmoe":
        kwargs = {"n_expert": model["num_experts"], "expert_params": mlp(expert, expert["hidden_units"]),
                  "tower_params_list": towers}
    else:
        kwargs = {"n_level": model["num_levels"], "n_expert_specific": model["num_task_experts"],
                  "n_expert_shared": model["num_shared_experts"],
                  "expert_params": mlp(expert, expert["hidden_units"]), "tower_params_list": towers}
    return {"model": RECHUB_CLASS[model["name"]], "model_kwargs": kwargs, "tasks": tasks,
            "embed_dim": model["embedding_dim"], "batch_size": train["batch_size"], "lr": train["lr"],
            "epochs": train["epochs"], "patience": train["patience"],
            "monitor": {m.partition(".")[0]: w for m, w in monitor.items()}}


def columns(tasks: Sequence[str]) -> list[str]:
    """The CSV columns of runs of these tasks."""
    per_task = [f"{col}_{t}_{metric}" for t in tasks
                for col, metric in (("valid", "auc"), ("test", "auc"), ("test", "logloss"))]
    return ["model", "seed", *per_task, "best_epoch", "epochs_run", "train_seconds", "reference"]


def best_epoch(monitor_by_epoch: Sequence[float]) -> int:
    """1-based epoch of the first maximum of the monitor: the weights torch-rechub's EarlyStopper
    keeps (it needs a strictly greater value to move)."""
    best = max(range(len(monitor_by_epoch)), key=lambda i: (monitor_by_epoch[i], -i))
    return best + 1


def comparison_table(ours: Sequence[Mapping[str, Any]], theirs: Sequence[Mapping[str, Any]],
                     tasks: Sequence[str], models: Sequence[str] = tuple(CONFIGS)) -> str:
    """Markdown: test AUC ×100 per model and task, ours (results/census.csv rows of the mlp variant)
    next to torch-rechub's (rows of this script's CSV), mean ± sample std over seeds (n runs)."""
    from mtl_final.benchmark.report import format_mean_std

    def cell(rows: Sequence[Mapping[str, Any]], model: str, task: str) -> str:
        values = [float(r[f"test_{task}_auc"]) for r in rows if r["model"] == model]
        return f"{format_mean_std(values, 100, 3)} ({len(values)})" if values else "–"

    ours = [r for r in ours if r["variant"] == "mlp"]
    head = " | ".join(f"{t}: ours | {t}: torch-rechub" for t in tasks)
    lines = [f"| model | {head} |", "|---|" + "---:|" * (2 * len(tasks))]
    for model in models:
        cells = " | ".join(f"{cell(ours, model, t)} | {cell(theirs, model, t)}" for t in tasks)
        lines.append(f"| {model} | {cells} |")
    return "\n".join(lines)


def run_one(model: str, cfg: Mapping[str, Any], seed: int, threads: int) -> dict[str, Any]:
    """Train and score one (model, seed) with torch-rechub in this process; returns the CSV row."""
    import numpy as np
    import torch
    import torch_rechub
    from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler
    from torch_rechub.basic.features import DenseFeature, SparseFeature
    from torch_rechub.models import multi_task
    from torch_rechub.trainers import MTLTrainer

    from mtl_final.train.metrics import auc, logloss
    from mtl_final.train.run import load_store

    params = rechub_params(cfg)
    tasks = params["tasks"]
    torch.set_num_threads(threads)
    schema, _, store = load_store(cfg, log=lambda msg: None)
    spec = store.feature_spec
    split = {name: store.split(name).to_tensors(schema.task_labels) for name in ("train", "valid", "test")}

    def inputs(s) -> dict[str, torch.Tensor]:
        x = {name: s.cat[:, j] for j, (name, _) in enumerate(spec.categorical)}
        x.update({name: s.num[:, j] for j, name in enumerate(spec.numeric)})
        return x

    def labels(s) -> torch.Tensor:
        return torch.stack([s.labels[t] for t in tasks], dim=1)

    class Rows:
        """A split whose items are whole batches: rows[list of indices] → (x dict, labels [B, tasks])."""

        def __init__(self, s) -> None:
            self.x, self.y = inputs(s), labels(s)

        def __len__(self) -> int:
            return len(self.y)

        def __getitem__(self, index):
            return {k: v[index] for k, v in self.x.items()}, self.y[index]

    def loader(s, shuffle: bool) -> DataLoader:
        # the batches of torch-rechub's DataGenerator (DataLoader(shuffle=...), last batch kept: the
        # same rows in the same order from the same RNG draws), sliced from whole tensors instead of
        # collated row by row, which took most of an epoch's time
        rows = Rows(s)
        order = RandomSampler(rows) if shuffle else SequentialSampler(rows)
        return DataLoader(rows, batch_size=None, sampler=BatchSampler(order, params["batch_size"], drop_last=False))

    class MonitoredTrainer(MTLTrainer):
        """MTLTrainer whose validation scores end with our monitor (weighted sum of the task AUCs),
        so that earlystop_taskid = len(tasks) stops on it."""

        def evaluate(self, model, data_loader):
            scores = super().evaluate(model, data_loader)
            return scores + [sum(params["monitor"].get(t, 0.0) * s for t, s in zip(tasks, scores))]

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    features = ([SparseFeature(name, vocab_size=size, embed_dim=params["embed_dim"])
                 for name, size in spec.categorical] + [DenseFeature(name) for name in spec.numeric])
    net = getattr(multi_task, params["model"])(features, ["classification"] * len(tasks), **params["model_kwargs"])
    with tempfile.TemporaryDirectory() as model_dir:
        trainer = MonitoredTrainer(net, ["classification"] * len(tasks),
                                   optimizer_params={"lr": params["lr"], "weight_decay": 0.0},
                                   n_epoch=params["epochs"], earlystop_taskid=len(tasks),
                                   earlystop_patience=params["patience"], device="cpu", model_path=model_dir)
        start = time.perf_counter()
        log = trainer.fit(loader(split["train"], True), loader(split["valid"], False))
        seconds = time.perf_counter() - start
    # fit reloads the best weights only when it stops early; a run through every epoch is tested on
    # its best-valid weights too, as ours are
    net.load_state_dict(trainer.early_stopper.best_weights)
    net.eval()
    row: dict[str, Any] = {"model": model, "seed": seed}
    for name in ("valid", "test"):
        with torch.no_grad():
            probs = net(inputs(split[name])).numpy()  # [rows, tasks]
        y = labels(split[name]).numpy()
        for k, t in enumerate(tasks):
            row[f"{name}_{t}_auc"] = auc(y[:, k], probs[:, k])
            if name == "test":
                row[f"test_{t}_logloss"] = logloss(y[:, k], probs[:, k])
    row.update({"best_epoch": best_epoch([epoch[-1] for epoch in log]), "epochs_run": len(log),
                "train_seconds": round(seconds, 1),
                "reference": f"torch-rechub {torch_rechub.__version__} torch {torch.__version__}"})
    return {c: row[c] for c in columns(tasks)}


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.exists():
        return []
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def write_rows(path: Path, rows: Sequence[Mapping[str, Any]], tasks: Sequence[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    order = list(CONFIGS)
    rows = sorted(rows, key=lambda row: (order.index(row["model"]), int(row["seed"])))
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns(tasks), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(path)


def write_report(out: Path, ours_csv: Path, tasks: Sequence[str]) -> Path:
    """<out>/census_rechub.md: the comparison table and the commands that wrote the CSV."""
    from mtl_final.benchmark.runner import read_grid_rows

    theirs = read_rows(out / "census_rechub.csv")
    commands = [line.split("\t", 3) for line in (out / "census_rechub.commands").read_text().splitlines()] \
        if (out / "census_rechub.commands").exists() else []
    lines = ["# torch-rechub 0.9.0 next to ours on census-income", "",
             f"Test AUC ×100, mean ± sample std over seeds (runs). Ours: the `mlp` variant of `{ours_csv.name}` "
             "(configs/mtl/census_*.yaml); torch-rechub: the same configs translated by "
             "`benchmarks/torch_rechub_compare.py` (its docstring lists what differs), the same train / valid / "
             "test files and encoded rows, early stopping on the same monitor.", "",
             comparison_table(read_grid_rows(ours_csv), theirs, tasks), "",
             "Commands that wrote the torch-rechub CSV:", "", "```"]
    lines += [f"# {stamp}  git {rev}\n{cmd}" for stamp, _, rev, cmd in commands] + ["```", ""]
    path = out / "census_rechub.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(CONFIGS), help=f"comma-separated, of {list(CONFIGS)}")
    parser.add_argument("--seeds", default="2021,2022,2023", help="comma-separated, e.g. 2021,2022,2023")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "results" / "census_rechub",
                        help="folder of census_rechub.csv / .md / .commands; runs already in the CSV are kept")
    parser.add_argument("--ours", type=Path, default=REPO_ROOT / "results" / "census.csv",
                        help="our grid CSV shown next to torch-rechub's")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-only", action="store_true", help="run nothing; only rewrite the markdown")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of every config (e.g. data.root=DIR)")
    args = parser.parse_args(argv)
    os.environ.setdefault("TQDM_DISABLE", "1")  # torch-rechub's per-epoch progress bars
    from mtl_final.config import load_config

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in models if m not in CONFIGS]
    if unknown:
        parser.error(f"--models: unknown {unknown}; choose from {list(CONFIGS)}")
    try:
        cfgs = {m: load_config(REPO_ROOT / CONFIGS[m], args.overrides) for m in models}
        tasks = {m: rechub_params(cfg)["tasks"] for m, cfg in cfgs.items()}
    except ValueError as err:
        parser.error(str(err))
    task_list = next(iter(tasks.values()))
    if any(t != task_list for t in tasks.values()):
        parser.error(f"the configs name different tasks: {tasks}")
    if not args.report_only:
        from mtl_final.benchmark.report import log_command

        log_command(args.out, "census_rechub", shlex.join([sys.executable, "benchmarks/torch_rechub_compare.py",
                                                           *(sys.argv[1:] if argv is None else argv)]))
        rows = read_rows(args.out / "census_rechub.csv")
        for model in models:
            for seed in [int(s) for s in args.seeds.split(",") if s.strip()]:
                if any(r["model"] == model and int(r["seed"]) == seed for r in rows):
                    continue
                cfg = load_config(REPO_ROOT / CONFIGS[model], [f"seed={seed}", *args.overrides])
                rows.append(run_one(model, cfg, seed, args.threads))
                write_rows(args.out / "census_rechub.csv", rows, task_list)
                print(f"{model} seed {seed}: " + ", ".join(f"test {t} AUC {float(rows[-1][f'test_{t}_auc']):.6f}"
                                                           for t in task_list), flush=True)
    print(f"report: {write_report(args.out, args.ours, task_list)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
