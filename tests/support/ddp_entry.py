"""torchrun entry point of the data-parallel tests: `python -m mtl_final.train`'s main, optionally with
a crash injected into one rank (MTL_CRASH_RANK) just before it takes step MTL_CRASH_STEP."""
from __future__ import annotations

import os
import sys

from mtl_final.train.__main__ import main
from mtl_final.train.trainer import Trainer


def inject_crash(rank: int, step: int) -> None:
    take_step = Trainer.train_step

    def crashing(self, batch, params):
        if self.dist.rank == rank and self.global_step == step - 1:
            raise RuntimeError(f"injected crash on rank {rank} before step {step}")
        return take_step(self, batch, params)

    Trainer.train_step = crashing


if __name__ == "__main__":
    if os.environ.get("MTL_CRASH_STEP"):
        inject_crash(int(os.environ["MTL_CRASH_RANK"]), int(os.environ["MTL_CRASH_STEP"]))
    sys.exit(main(sys.argv[1:]))
