"""The command line of the scripts that write one generated results file: write it, or --check it."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_or_check(path: Path, text: str, description: str) -> None:
    """Write `text` to `path`; with --check, exit 1 if the file differs from it instead."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {path.name} is out of date")
    if parser.parse_args().check:
        sys.exit(0 if path.exists() and path.read_text(encoding="utf-8") == text else 1)
    path.write_text(text, encoding="utf-8")
    print(f"wrote {path}")
