"""torchrun script of the data-parallel tests: every model family and block variant of
benchmarks/export_coverage.py trains 3 steps on 2 ranks of the tiny dataset, is evaluated, and must end
with bit-identical parameters and buffers on every rank. Rank 0 prints one `ok <case>` line per case."""
from __future__ import annotations

import sys
from pathlib import Path

import torch

from mtl_final import distributed
from mtl_final.config import load_config
from mtl_final.data.schema import DatasetSchema
from mtl_final.data.store import EncodedStore
from mtl_final.models import build_model
from mtl_final.train.trainer import Trainer
from tests.support.scripts import load_script
from tests.support.tiny_data import tiny_overrides, write_tiny_dataset


def run_case(name: str, overrides: tuple, coverage, store: EncodedStore, root: Path, tmp: Path,
             ctx: distributed.DistContext) -> None:
    """Train one case 3 steps on every rank; raise SystemExit if the ranks' weights differ."""
    multi = name in coverage.MULTI_TASK
    cfg = load_config(None, [*tiny_overrides(root, tmp), f"model={name}", "tasks=[ctr,cvr]" if multi else "tasks=[ctr]",
                             "train.batch_size=64", "train.max_steps=3", "train.eval_every_steps=2",
                             "train.tensorboard=false", *coverage.SMALL, *overrides])
    schema = store.schema.select_tasks(list(cfg["tasks"]))
    labels = {t.name: t.label for t in (*schema.tasks, *schema.parent_tasks)}
    train, valid = (store.split(s).to_tensors(labels) for s in ("train", "valid"))
    torch.manual_seed(0)
    model = build_model(cfg, store.feature_spec, list(schema.tasks))
    distributed.seed_rank_streams(0, ctx)
    trainer = Trainer(model, cfg, run_dir=None, log=lambda s: None, dist=ctx)
    trainer.fit(train, valid)
    metrics = trainer.evaluate(valid)
    state = torch.cat([t.detach().double().flatten() for t in model.state_dict().values()])
    states = distributed.gather_objects(state, ctx)
    case = " ".join((name, *overrides))
    if not all(torch.equal(states[0], s) for s in states[1:]):
        raise SystemExit(f"ranks diverged: {case}")
    if ctx.is_main:
        print(f"ok {case} | steps {trainer.global_step} | valid ctr.auc {metrics['ctr']['auc']:.4f}", flush=True)
    trainer.close()


def main(tmp: Path) -> None:
    ctx = distributed.init_from_env("auto", torch.device("cpu"))
    torch.set_num_threads(1)
    root = tmp / "data"

    def load() -> EncodedStore:
        if ctx.is_main:
            write_tiny_dataset(root)
        return EncodedStore.build_or_load(DatasetSchema.from_yaml(root / "schema.yaml"), root, tmp / "cache", log=None)

    store = distributed.main_first(load, ctx)
    coverage = load_script("benchmarks/export_coverage.py")
    for name, overrides in coverage.cases():
        run_case(name, overrides, coverage, store, root, tmp, ctx)  # its trainer (and DDP) is freed on return
    distributed.shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
