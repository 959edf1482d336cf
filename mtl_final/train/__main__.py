"""python -m mtl_final.train [--config FILE] [--out DIR] [--tasks ctr,cvr] [key=value ...]
   python -m mtl_final.train --resume RUN_DIR
   torchrun --standalone --nproc-per-node N -m mtl_final.train ...   (data-parallel, mtl_final/distributed.py)"""
from __future__ import annotations

import argparse
import sys
from importlib import resources

from mtl_final.config import ConfigError, load_config
from mtl_final.data.errors import DataError
from mtl_final.distributed import DistributedError, shutdown

DEFAULT_CONFIG = resources.files("mtl_final") / "configs" / "default_run.yaml"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m mtl_final.train",
        description="Train and evaluate one model; writes config.yaml, encoders.json, best.pt, "
                    "TensorBoard events and metrics.json into the run directory.",
        epilog="Overrides are dotted keys with YAML values, e.g. model=final block.hidden_units=[400,400] "
               "tower=final tower.dual=true train.lr=1e-3. Without --config the built-in funnel "
               "simulator and an ESMM model are used.",
    )
    parser.add_argument("--config", help="YAML run config (default: the bundled simulator ESMM job)")
    parser.add_argument("--out", help="run directory, a new or empty folder "
                                      "(default: runs/<time>-<model>-<config hash>)")
    parser.add_argument("--tasks", help="comma-separated tasks to train, e.g. ctr,cvr (same as tasks=[...])")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="continue an interrupted run from RUN_DIR/last.pt, with the config it wrote")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_intermixed_args(argv)  # options may come between the overrides


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.tasks:
        overrides.insert(0, "tasks=[" + ",".join(t.strip() for t in args.tasks.split(",")) + "]")
    if args.resume and (args.config or args.out or overrides):
        print("error: --resume continues a run with the config it wrote; it takes no --config, --out, --tasks "
              "or key=value overrides (start a new run to change the experiment)", file=sys.stderr)
        return 2
    try:
        if args.resume:
            from mtl_final.train.run import resume_run

            resume_run(args.resume)
            return 0
        cfg = load_config(args.config or str(DEFAULT_CONFIG), overrides)
        from mtl_final.train.run import run_experiment

        run_experiment(cfg, args.out)
    except (ConfigError, DataError, DistributedError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # a missing file, or --out / data.cache_dir naming a file, unwritable, ...
        where = f": {err.filename}" if err.filename else ""
        print(f"error: {err.strerror or err}{where}", file=sys.stderr)
        return 2
    finally:
        shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
