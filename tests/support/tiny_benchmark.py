"""The tiny dataset and configs of the benchmark runner's tests."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np


def write_split(path: Path, n: int, rng: np.random.Generator) -> None:
    """n rows of three categorical fields and a label that depends on the first."""
    a, b, c = rng.integers(1, 6, n), rng.integers(1, 9, n), rng.integers(1, 4, n)
    label = (rng.random(n) < 1 / (1 + np.exp(-(a - 3) * 0.8))).astype(int)
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["label", "f1", "f2", "f3"])
        w.writerows(zip(label, a, b, c))


def tiny_benchmark(tmp_path: Path) -> dict[str, Path]:
    """A tiny one-task dataset and benchmark configs (LR, MLP) for the benchmark runner; the conftest
    fixture `tiny` calls it."""
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for split, n in (("train", 200), ("valid", 80), ("test", 80)):
        write_split(data / f"{split}.csv", n, rng)
    schema = tmp_path / "tiny_schema.yaml"
    schema.write_text(
        "name: tiny\nfiles: {train: train.csv, valid: valid.csv, test: test.csv}\n"
        "fields:\n  - {name: f1, type: categorical}\n  - {name: f2, type: categorical}\n"
        "  - {name: f3, type: categorical}\ntasks:\n  - {name: ctr, label: label}\n"
    )
    configs = tmp_path / "configs"
    (configs / "tiny").mkdir(parents=True)
    (configs / "tiny" / "base.yaml").write_text(
        f"tasks: [ctr]\n"
        f"data: {{schema: {schema}, root: {tmp_path / 'no_such_folder'}, cache_dir: {tmp_path / 'cache'}}}\n"
        "model: {embedding_dim: 4, embedding_regularizer: 0.01}\n"
        "train: {epochs: 1, batch_size: 64, tensorboard: false, monitor: ctr.auc, num_threads: 1, device: cpu}\n"
    )
    (configs / "tiny" / "lr.yaml").write_text("include: base.yaml\nmodel: {name: lr}\n")
    (configs / "tiny" / "mlp.yaml").write_text(
        "include: base.yaml\nmodel: {name: mlp}\nblock: {hidden_units: [8], dropout: 0.0}\n")
    return {"data": data, "configs": configs, "out": tmp_path / "results", "runs": tmp_path / "runs"}


def benchmark_argv(t: dict[str, Path], models: str = "LR,MLP", seeds: str = "1,2") -> list[str]:
    """`python -m mtl_final.benchmark` arguments for the dataset of `tiny_benchmark`."""
    # data.root in base.yaml points nowhere: the override must reach every run
    return ["--dataset", "tiny", "--models", models, "--seeds", seeds, "--out", str(t["out"]),
            "--runs-dir", str(t["runs"]), "--configs", str(t["configs"]), f"data.root={t['data']}"]
