"""python -m mtl_final.train [--config FILE] [--out DIR] [--tasks ctr,cvr] [key=value ...]"""
from __future__ import annotations

import argparse
import sys
from importlib import resources

from mtl_final.config import ConfigError, load_config
from mtl_final.data.errors import DataError

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
    parser.add_argument("--out", help="run directory (default: runs/<time>-<model>-<config hash>)")
    parser.add_argument("--tasks", help="comma-separated tasks to train, e.g. ctr,cvr (same as tasks=[...])")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    overrides = list(args.overrides)
    if args.tasks:
        overrides.insert(0, "tasks=[" + ",".join(t.strip() for t in args.tasks.split(",")) + "]")
    try:
        cfg = load_config(args.config or str(DEFAULT_CONFIG), overrides)
        from mtl_final.train.run import run_experiment

        run_experiment(cfg, args.out)
    except (ConfigError, DataError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
