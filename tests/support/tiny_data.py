"""The tiny CSV dataset of the end-to-end tests (three categorical fields, one numeric, ctr and cvr
labels), the config overrides that train on it, and a trained tiny ESMM run."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mtl_final.train.__main__ import main as train_main


def write_tiny_dataset(root: Path, n: int = 600, seed: int = 0) -> Path:
    """Three categorical fields and one numeric; the label depends on a pairwise interaction."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, rows in (("train", n), ("valid", n // 3), ("test", n // 3)):
        a, b, c = rng.integers(0, 8, rows), rng.integers(0, 6, rows), rng.integers(0, 4, rows)
        x = rng.normal(size=rows).round(3)
        logit = 1.5 * ((a % 2) == (b % 2)) - 0.75 + 0.5 * x
        click = (rng.random(rows) < 1 / (1 + np.exp(-logit))).astype(int)
        conv = click * (rng.random(rows) < 0.4 + 0.2 * (c == 1)).astype(int)
        lines = ["a,b,c,x,click,conv"] + [f"{a[i]},{b[i]},{c[i]},{x[i]},{click[i]},{conv[i]}" for i in range(rows)]
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    (root / "schema.yaml").write_text(
        "name: tiny\nfields:\n  - {name: a, type: categorical}\n  - {name: b, type: categorical}\n"
        "  - {name: c, type: categorical}\n  - {name: x, type: numeric, norm: standard}\n"
        "tasks:\n  - {name: ctr, label: click}\n  - {name: cvr, label: conv, on: ctr}\n")
    return root


def tiny_overrides(root: Path, tmp: Path) -> list[str]:
    return [f"data.schema={root / 'schema.yaml'}", f"data.root={root}", f"data.cache_dir={tmp / 'cache'}",
            "train.batch_size=128", "train.epochs=3", "train.progress=false", "block.hidden_units=[16]",
            "tower.hidden_units=[8]", "expert.hidden_units=[8]"]


def train_tiny_esmm(tmp: Path, *overrides: str) -> tuple[Path, Path]:
    """(data root, run dir) of a 1-epoch ESMM run (ctr, cvr) on a 300-row tiny dataset under tmp."""
    root = write_tiny_dataset(tmp / "data", n=300)
    run = tmp / "run"
    assert train_main(["--out", str(run), "--tasks", "ctr,cvr", *tiny_overrides(root, tmp), "model=esmm",
                       "train.epochs=1", "train.batch_size=32", "train.lr=0.01", "train.tensorboard=false",
                       "train.num_threads=1", *overrides]) == 0
    return root, run


def resume_overrides(root: Path, tmp: Path) -> list[str]:
    # FINAL 2B+KD with dropout (the resumed run must redo the same dropout draws) and validation every
    # 3 steps of 5-step epochs, so that checkpoints fall inside epochs too
    return tiny_overrides(root, tmp) + ["model=final", "block.kind=final", "tasks=[ctr]", "model.num_blocks=2",
                                        "model.kd=true", "block.dropout=0.2", "train.epochs=4",
                                        "train.eval_every_steps=3", "train.patience=10"]
