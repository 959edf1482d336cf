"""Trainer: the FINAL paper's protocol (paper_notes §3) for single- and multi-task models.

Adam; evaluate on valid every epoch (or every k steps); monitor a valid metric; on no
improvement lr ← max(lr·factor, min_lr) and count; stop after `patience` non-improving
evaluations; reload the best weights. Gradient norm clipping, whole-table embedding L2
(in the model's loss), TensorBoard scalars and atomic checkpoints: best.pt (best weights) and
last.pt after every validation, which `restore` continues exactly. train.precision=bf16 runs the
forward passes (training and evaluation) under bfloat16 autocast; weights, optimizer state,
logits and losses stay float32. train.matmul_precision sets torch's float32 matmul precision (medium:
bfloat16-rounded inputs with float32 sums, on AMX CPUs through oneDNN; elsewhere float32 accuracy).
train.kernels=native lets dense blocks run fused CPU kernels (mtl_final/nn/dense_tail.py);
train.cpu_matmul sends the float32 matmuls of training steps and evaluation on CPU to MKL or oneDNN
(mtl_final/nn/cpu_matmul.py). Those three are process-wide, like the thread count: `configure_runtime`
(train/runtime.py) sets them before a Trainer is built, and the Trainer runs under them.
train.loss_balance combines the task losses (train/loss_balance.py); its learned state is in last.pt.

A non-finite train loss (checked at every evaluation, on the mean over ranks) stops training with
`NonFiniteLoss`; a NaN monitored valid metric (an AUC over rows of one class) with `UndefinedMonitor`
at the first evaluation. Both are ValueErrors, which the CLI reports as one error line.

Under torchrun (`dist`, see mtl_final/distributed.py) each rank trains on its shard of every global
batch through DistributedDataParallel, evaluation gathers every rank's predictions, and rank 0 alone
writes checkpoints and TensorBoard events; last.pt then holds every rank's generator state.
"""
from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch
from torch import nn

from mtl_final import distributed
from mtl_final.config_spec import allowed
from mtl_final.data.batches import BatchLoader
from mtl_final.data.store import TensorSplit
from mtl_final.models.base import RankingModel
from mtl_final.nn import cpu_matmul
from mtl_final.train.checkpoint import save_atomic
from mtl_final.train.loss_balance import build_balancer
from mtl_final.train.metrics import monitor_value, parse_monitor, task_metrics


CHECKPOINT_FORMAT = 2  # what last.pt holds; 1 (no format key) had no resume state


class NonFiniteLoss(ValueError):
    """The train loss became NaN or infinite: the weights are no longer finite, training cannot go on."""


class UndefinedMonitor(ValueError):
    """The monitored valid metric is NaN (e.g. an AUC over rows that hold one class): it can never
    pick the best weights, so training stops at the first evaluation instead of running on it."""


def build_optimizer(model: nn.Module, train_cfg: Mapping[str, Any],
                    extra: Sequence[nn.Parameter] = ()) -> torch.optim.Optimizer:
    """train.optimizer over `model`'s trainable parameters; `extra` (a loss balancer's learned weights)
    join as a second parameter group without weight decay."""
    name, lr, wd = train_cfg["optimizer"], train_cfg["lr"], train_cfg["weight_decay"]
    params: list[Any] = [p for p in model.parameters() if p.requires_grad]
    if extra:
        params = [{"params": params}, {"params": list(extra), "weight_decay": 0.0}]
    if name == "adam":
        return torch.optim.Adam(params, lr=lr, weight_decay=wd, foreach=True)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=wd, foreach=True)
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=wd, momentum=0.9, foreach=True)
    *first, last = allowed("train.optimizer")
    raise ValueError(f"unknown train.optimizer {name!r}; choose {', '.join(first)} or {last}")


class Trainer:
    """Fits one model. `fit(train, valid)` → history; `evaluate(split)` → metrics per task."""

    def __init__(
        self,
        model: RankingModel,
        cfg: Mapping[str, Any],
        run_dir: str | Path | None = None,
        device: torch.device | str = "cpu",
        log: Callable[[str], None] = print,
        gauc_column: int | None = None,
        dist: distributed.DistContext = distributed.SINGLE,
    ) -> None:
        self.model = model.to(device)
        self.cfg = cfg
        self.t = cfg["train"]
        self.device = torch.device(device)
        self.dist = dist
        # what training calls (DDP or the model)
        self.net = distributed.wrap(self.model, dist, self.device, cfg["distributed"]["sync_batchnorm"])
        self.run_dir = Path(run_dir) if run_dir else None
        self.log = log
        self.gauc_column = gauc_column
        self.balancer = build_balancer(cfg, self.model, dist)  # train.loss_balance
        self.optimizer = build_optimizer(model, self.t, list(self.balancer.parameters()))
        self.bf16 = self.t["precision"] == "bf16"
        self.monitor = parse_monitor(self.t["monitor"], model.task_names)
        self.sign = 1.0 if self.t["monitor_mode"] == "max" else -1.0
        self.writer = None  # opened by fit (after a restore, so that it can purge redone steps)
        self.global_step = 0
        self.epoch_loss: tuple[float, int] = (0.0, 0)  # loss sum and steps of the current epoch so far
        self.train_seconds = 0.0
        self.best_value = -math.inf
        self.best_state: dict[str, torch.Tensor] | None = None
        self.best_epoch = 0
        self.stopping_steps = 0
        self.history: list[dict[str, Any]] = []

    def autocast(self) -> torch.autocast:
        """The forward-pass precision context of train.precision (a no-op for fp32)."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16)

    # --- evaluation -------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, data: Any) -> dict[str, np.ndarray]:
        """Probabilities per output name over a whole split, in row order. With several ranks each
        scores its contiguous share of the rows and every rank gets all of them back."""
        self.model.eval()
        distributed.sync_buffers(self.model, self.dist)
        lo, hi = distributed.shard_bounds(data.n_rows, self.dist.rank, self.dist.world_size)
        if (lo, hi) != (0, data.n_rows):
            data = TensorSplit(data.cat[lo:hi], data.num[lo:hi], {t: y[lo:hi] for t, y in data.labels.items()},
                               {n: s[lo:hi] for n, s in data.seq.items()})
        chunks: dict[str, list[torch.Tensor]] = {}
        for batch in BatchLoader(data, self.t["eval_batch_size"], shuffle=False):
            with cpu_matmul.scope(self.device), self.autocast():
                out = self.model(batch.to(self.device))
            for name, p in out.probs.items():
                chunks.setdefault(name, []).append(p.float())
        names = self.model.output_names  # the same on every rank, also one that scored no rows
        local = torch.stack([torch.cat(chunks[n]) if chunks else torch.zeros(0, device=self.device)
                             for n in names], dim=1)  # [rows of this rank, outputs]
        scored = distributed.gather_rows(local, self.dist).cpu()
        return {name: scored[:, i].contiguous().numpy() for i, name in enumerate(names)}

    def evaluate(self, data: Any, probs: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
        """Metrics per task over a whole split; with several ranks computed on rank 0 and broadcast,
        so every rank takes the same schedule decision. probs: `predict(data)` where the caller has it."""
        probs = self.predict(data) if probs is None else probs
        metrics = None
        if self.dist.is_main:
            labels = {name: data.labels[name].numpy() for name in data.labels}
            groups = data.cat[:, self.gauc_column].numpy() if self.gauc_column is not None else None
            metrics = task_metrics(self.model.tasks, probs, labels, groups)
        return distributed.broadcast_object(metrics, self.dist)

    # --- training ---------------------------------------------------------------------
    def fit(self, train: Any, valid: Any) -> list[dict[str, Any]]:
        """Train until early stop, train.epochs or train.max_steps; then reload the best weights.
        After `restore` it continues where the checkpoint left off (the same steps, batches and
        dropout draws as an uninterrupted run)."""
        t = self.t
        loader = BatchLoader(train, t["batch_size"], shuffle=True, seed=int(self.cfg["seed"]),
                             shard=(self.dist.rank, self.dist.world_size), min_share=2)
        if loader.dropped_rows:
            per = f" per process for {self.dist.world_size} processes" if self.dist.enabled else ""
            self.log(f"note: the last {loader.dropped_rows} train row(s) of every epoch's order are left out: "
                     f"a last batch needs at least 2 rows{per} (BatchNorm)")
        eval_every = t["eval_every_steps"] or len(loader)
        params = [p for p in self.model.parameters() if p.requires_grad]
        start = time.perf_counter() - self.train_seconds
        epoch, skip = divmod(self.global_step, len(loader))  # epochs done, batches done in the next one
        if skip == 0:
            self.epoch_loss = (0.0, 0)
        stop = self.finished()
        if stop and skip:  # a finished run that stopped mid-epoch: that epoch was run
            epoch += 1
        self._open_writer()
        while not stop and epoch < t["epochs"]:
            epoch += 1
            loader.set_epoch(epoch)
            self.model.train()
            running = torch.full((), self.epoch_loss[0], device=self.device)
            n_steps = self.epoch_loss[1]
            for batch in self._progress(loader, epoch, skip):
                loss, parts = self.train_step(batch.to(self.device), params)
                self.global_step += 1
                n_steps += 1
                running += loss.detach()
                if self.writer and self.global_step % 10 == 0:
                    self.writer.add_scalar("train/loss", loss.item(), self.global_step)
                    for name, value in parts.items():
                        self.writer.add_scalar(f"train/loss_{name}", value.item(), self.global_step)
                    for name, weight in self.balancer.task_weights().items():
                        self.writer.add_scalar(f"train/task_weight_{name}", weight, self.global_step)
                capped = bool(t["max_steps"]) and self.global_step >= t["max_steps"]
                if self.global_step % eval_every == 0 or capped:
                    self.epoch_loss = (float(running), n_steps)
                    self.train_seconds = time.perf_counter() - start
                    train_loss = distributed.mean_over_ranks(float(running) / n_steps, self.dist, self.device)
                    stop = self._evaluate_and_schedule(valid, epoch, train_loss, start) or capped
                    self.model.train()
                    if stop:
                        break
            skip, self.epoch_loss = 0, (0.0, 0)
        self.train_seconds = time.perf_counter() - start
        self.epochs_run = epoch
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
        if self.writer:
            self.writer.flush()
        return self.history

    def finished(self) -> bool:
        """Whether training stopped early: patience used up (only after an evaluation, so that
        train.patience=0 stops after the first one, as FuxiCTR's), or train.max_steps reached (the epoch
        loop itself ends at train.epochs)."""
        t = self.t
        return (bool(self.history) and self.stopping_steps >= t["patience"]) \
            or (bool(t["max_steps"]) and self.global_step >= t["max_steps"])

    # --- resume -----------------------------------------------------------------------
    def checkpoint(self) -> dict[str, Any]:
        """Everything `restore` needs to continue this run exactly: weights, optimizer, loss balancer,
        schedule, history, the running loss of the current epoch and the RNG state (dropout draws). With
        several ranks every rank must call it (it gathers their losses and generator states into `ranks`)."""
        own = self._rank_state()
        state = {"format": CHECKPOINT_FORMAT, "model": self.model.state_dict(),
                 "optimizer": self.optimizer.state_dict(), "balancer": self.balancer.state_dict(),
                 "step": self.global_step,
                 "epoch": self.history[-1]["epoch"] if self.history else 0, "history": self.history,
                 "best_value": self.best_value, "best_epoch": self.best_epoch,
                 "stopping_steps": self.stopping_steps, "train_seconds": self.train_seconds,
                 "world_size": self.dist.world_size, **own}
        if self.dist.enabled:
            state["ranks"] = distributed.gather_objects(own, self.dist)
        return state

    def _rank_state(self) -> dict[str, Any]:
        """What differs between ranks: this rank's running epoch loss and generator states."""
        own: dict[str, Any] = {"epoch_loss": self.epoch_loss, "rng": torch.get_rng_state()}
        if self.device.type == "cuda":
            own["cuda_rng"] = torch.cuda.get_rng_state(self.device).cpu()
        return own

    def restore(self, last: dict[str, Any], best: dict[str, Any] | None) -> None:
        """Load a `checkpoint` (last.pt) and the best weights (best.pt) of an interrupted run."""
        if last.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"this last.pt (format {last.get('format')}) was written by another version of "
                             f"mtl_final than this one (format {CHECKPOINT_FORMAT}) and cannot be resumed; "
                             "start the run again")
        world = int(last.get("world_size", 1))
        if world != self.dist.world_size:
            launch = "python -m mtl_final.train" if world == 1 else f"torchrun --nproc-per-node {world} -m mtl_final.train"
            raise ValueError(f"this run was trained by {world} process(es) and this resume has "
                             f"{self.dist.world_size}; an exact continuation needs the same, so resume it with "
                             f"{launch} --resume RUN_DIR")
        own = last["ranks"][self.dist.rank] if world > 1 else last
        self.model.load_state_dict(last["model"])
        self.optimizer.load_state_dict(last["optimizer"])
        self.balancer.load_state_dict(last.get("balancer", {}))  # {}: the state of sum, which learns nothing
        self.global_step = int(last["step"])
        self.best_value, self.best_epoch = float(last["best_value"]), int(last["best_epoch"])
        self.stopping_steps, self.history = int(last["stopping_steps"]), list(last["history"])
        self.epoch_loss, self.train_seconds = tuple(own["epoch_loss"]), float(last["train_seconds"])
        self.best_state = best["model"] if best is not None else None
        torch.set_rng_state(own["rng"])
        if "cuda_rng" in own and self.device.type == "cuda":
            torch.cuda.set_rng_state(own["cuda_rng"], self.device)

    def _open_writer(self) -> None:
        """The run's TensorBoard writer; after a restore it hides the scalars an interrupted run
        logged past its checkpoint (they are about to be logged again)."""
        if self.writer is None and self.run_dir and self.t["tensorboard"] and self.dist.is_main:
            from torch.utils.tensorboard import SummaryWriter

            purge = self.global_step + 1 if self.global_step else None
            self.writer = SummaryWriter(str(self.run_dir), purge_step=purge)

    def train_step(self, batch: Any, params: list[nn.Parameter]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """One optimizer step on `batch`: forward (under `autocast`), loss, backward, clipping, update.
        Returns the total loss and its named parts."""
        with cpu_matmul.scope(self.device):
            with self.autocast():
                out = self.net(batch)
            loss, parts = self.balancer.loss(self.model, out, batch)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.balancer.after_backward()
        if self.t["grad_clip_norm"]:
            nn.utils.clip_grad_norm_(params, self.t["grad_clip_norm"], foreach=True)
        self.optimizer.step()
        self.balancer.after_step()
        return loss, parts

    def _progress(self, loader: BatchLoader, epoch: int, skip: int):
        batches = loader.batches(start=skip)
        if not self.t["progress"] or not self.dist.is_main:
            return batches
        from tqdm import tqdm

        return tqdm(batches, desc=f"epoch {epoch}", leave=False, mininterval=1.0, initial=skip, total=len(loader))

    def _evaluate_and_schedule(self, valid: Any, epoch: int, train_loss: float, start: float) -> bool:
        """One validation of the schedule: evaluate, record, keep the best weights or decay the lr,
        log and checkpoint. Returns whether patience is used up."""
        self._check_finite_loss(train_loss, epoch)
        metrics = self.evaluate(valid)
        value = self._monitored(metrics, epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        self.history.append({"epoch": epoch, "step": self.global_step, "train_loss": train_loss, "lr": lr,
                             "monitor": value, "valid": metrics, "seconds": time.perf_counter() - start})
        improved = self._improves(value)
        if improved:
            self._keep_best(value, epoch)
        else:
            self._decay_lr(lr)
        self.stopping_steps = 0 if improved else self.stopping_steps + 1
        self._log_evaluation(self.history[-1], improved)
        self._save_last()
        return self.stopping_steps >= self.t["patience"]

    def _check_finite_loss(self, train_loss: float, epoch: int) -> None:
        """Raise NonFiniteLoss when the train loss (the mean over ranks: every rank raises together)
        is NaN or infinite."""
        if math.isfinite(train_loss):
            return
        since, kept = (f"step {self.history[-1]['step']}", "last.pt and best.pt keep the last evaluation") \
            if self.history else ("the start", "no evaluation was checkpointed")
        raise NonFiniteLoss(
            f"the train loss is {train_loss} at epoch {epoch} step {self.global_step}: a step since {since} "
            f"had a non-finite loss, so the weights are no longer finite and training stops ({kept}); "
            "lower train.lr, keep train.grad_clip_norm on, or check the inputs for extreme values")

    def _monitored(self, metrics: dict[str, dict[str, float]], epoch: int) -> float:
        """The train.monitor value of valid `metrics`; UndefinedMonitor when it is not finite (the valid
        labels are fixed: it would be undefined at every evaluation)."""
        value = monitor_value(metrics, self.monitor)
        if math.isfinite(value):
            return value
        rows = {}  # each undefined metric path -> the rows its task scored
        for path in self.monitor:
            task, metric = path.split(".")
            if not math.isfinite(metrics[task][metric]):
                rows[path] = metrics[task].get("rows")
        raise UndefinedMonitor(
            f"train.monitor is {value} on valid at epoch {epoch} step {self.global_step}: {list(rows)} "
            f"undefined (rows scored: {rows}; an AUC needs both labels among its rows, a gAUC a group "
            "holding both); choose another train.monitor or a valid split with both labels")

    def _improves(self, value: float) -> bool:
        """Whether the monitor `value` beats the best so far; FuxiCTR's min_delta: a gain of at most
        train.min_delta is a miss (the lr drops, patience runs)."""
        return math.isfinite(value) and self.sign * value > self.best_value + self.t["min_delta"]

    def _keep_best(self, value: float, epoch: int) -> None:
        """Remember the current weights as the best (in memory and, on rank 0, as best.pt)."""
        self.best_value = self.sign * value
        self.best_epoch = epoch
        self.best_state = copy.deepcopy(self.model.state_dict())
        if self.run_dir and self.dist.is_main:
            save_atomic({"model": self.best_state, "epoch": epoch, "step": self.global_step,
                         "monitor": value}, self.run_dir / "best.pt")

    def _decay_lr(self, lr: float) -> None:
        """lr ← lr·train.lr_decay_factor, floored at train.min_lr but never raised (an lr already
        under min_lr stays)."""
        new_lr = min(lr, max(lr * self.t["lr_decay_factor"], self.t["min_lr"]))
        for group in self.optimizer.param_groups:
            group["lr"] = new_lr

    def _log_evaluation(self, record: dict[str, Any], improved: bool) -> None:
        """One log line for the evaluation `record` (a history entry) and its TensorBoard scalars."""
        metrics, value, lr = record["valid"], record["monitor"], record["lr"]
        summary = " ".join(f"{task}.auc={m['auc']:.6f}" for task, m in metrics.items())
        self.log(f"epoch {record['epoch']} step {self.global_step}: train loss {record['train_loss']:.6f} | "
                 f"valid {summary} | monitor {value:.6f}{' *' if improved else ''} | lr {lr:.1e}")
        if self.writer:
            self.writer.add_scalar("lr", lr, self.global_step)
            self.writer.add_scalar("valid/monitor", value, self.global_step)
            for task, ms in metrics.items():
                for name, v in ms.items():
                    if name != "rows":
                        self.writer.add_scalar(f"valid/{task}/{name}", v, self.global_step)

    def _save_last(self) -> None:
        """Write last.pt (what `restore` continues from) into the run directory, if there is one."""
        if self.run_dir:
            state = self.checkpoint()  # on every rank: it gathers their generator states
            if self.dist.is_main:
                save_atomic(state, self.run_dir / "last.pt")

    def log_hparams(self, hparams: Mapping[str, Any], final_metrics: Mapping[str, float]) -> None:
        """Write the run's hyper-parameters and final metrics to TensorBoard's HPARAMS tab."""
        if not self.writer:
            return
        from torch.utils.tensorboard.summary import hparams as hparams_summary

        clean = {k: (v if isinstance(v, (int, float, str, bool)) else str(v)) for k, v in hparams.items()}
        finite = {k: v for k, v in final_metrics.items() if math.isfinite(v)}
        exp, ssi, sei = hparams_summary(clean, finite)
        file_writer = self.writer._get_file_writer()
        for summary in (exp, ssi, sei):
            file_writer.add_summary(summary)
        for k, v in finite.items():
            self.writer.add_scalar(k, v, self.global_step)
        self.writer.flush()

    def close(self) -> None:
        """Close the TensorBoard writer and drop the DDP wrapper, which holds the process group, so
        that `distributed.shutdown` tears the group down while nothing uses it."""
        if self.writer:
            self.writer.close()
        self.net = self.model
