"""How fast do two runs of one model drift apart? Native kernels vs PyTorch ops, step by step.

    python benchmarks/path_divergence.py --config configs/benchmarks/frappe_x1/final_1b.yaml --steps 300
    python benchmarks/path_divergence.py --config ... --pair torch,torch --perturb 1e-7   # the baseline

Builds two copies of the config's model from the same seed and trains them side by side on the
same batches (same shuffle), re-seeding PyTorch's generator before every step so that both draw
the same dropout keys. --pair picks each copy's kernels (native | torch); PyTorch ops draw the fused
kernel's dropout masks (benchmarks/hash_mask_dropout.py), so the copies differ only in float
arithmetic, plus --perturb, a relative change of the second copy's initial weights. Prints both
losses and ‖θ₁ − θ₂‖ / ‖θ₁‖ at a few steps. If the native kernels computed anything else than the
modules, native-vs-torch would drift faster than the torch-vs-torch baseline with a tiny perturbation.
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from hash_mask_dropout import use_kernel_masks  # benchmarks/, on sys.path when run as a script
from mtl_final import kernels
from mtl_final.config import load_config
from mtl_final.data.batches import BatchLoader
from mtl_final.data.store import EncodedStore
from mtl_final.models import build_model
from mtl_final.train.run import resolve_dataset, seed_everything
from mtl_final.train.runtime import configure_cpu
from mtl_final.train.trainer import build_optimizer

REPORT_AT = (1, 2, 5, 10, 20, 50, 100, 200, 300, 500, 1000)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--pair", default="native,torch", help="kernels of the two copies")
    parser.add_argument("--perturb", type=float, default=0.0, help="relative change of copy 2's initial weights")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    modes = args.pair.split(",")
    configure_cpu(args.threads)
    use_kernel_masks()
    cfg = load_config(args.config, ["train.progress=false", "train.tensorboard=false", *args.overrides])
    schema, root = resolve_dataset(cfg)
    if cfg["tasks"]:
        schema = schema.select_tasks(cfg["tasks"])
    store = EncodedStore.build_or_load(schema, root, cfg["data"]["cache_dir"], log=lambda s: None)
    train = store.split("train").to_tensors({t.name: t.label for t in (*schema.tasks, *schema.parent_tasks)})
    models, optimizers = [], []
    for _ in modes:
        seed_everything(cfg["seed"])
        models.append(build_model(cfg, store.feature_spec, list(schema.tasks)))
        optimizers.append(build_optimizer(models[-1], cfg["train"]))
    with torch.no_grad():
        for p in models[1].parameters():
            p.mul_(1 + args.perturb)
    loader = BatchLoader(train, cfg["train"]["batch_size"], shuffle=True, seed=cfg["seed"])
    print(f"{args.pair}, perturb {args.perturb:g}: step, losses, parameter distance / norm")
    step, epoch = 0, 0
    while step < args.steps:
        epoch += 1
        loader.set_epoch(epoch)
        for batch in loader:
            step += 1
            losses = []
            for mode, model, optimizer in zip(modes, models, optimizers):
                kernels.use_kernels(mode)
                model.train()
                torch.manual_seed(step)
                loss, _ = model.loss(model(batch), batch)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(model.parameters(), cfg["train"]["grad_clip_norm"], foreach=True)
                optimizer.step()
                losses.append(loss.item())
            if step in REPORT_AT or step == args.steps:
                a, b = (torch.cat([p.detach().flatten() for p in m.parameters()]) for m in models)
                print(f"{step:5d}  {losses[0]:.6f} {losses[1]:.6f}  {((a - b).norm() / a.norm()).item():.3e}")
            if step >= args.steps:
                break


if __name__ == "__main__":
    main()
