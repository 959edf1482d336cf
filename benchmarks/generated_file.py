"""The command line of the scripts that write generated results files: write them, or --check them."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def write_or_check(files: dict[Path, str], description: str) -> None:
    """Write each text (`files`: path → text) to its path; with --check, exit 1 if any file differs
    from its text instead."""
    parser = argparse.ArgumentParser(description=description)
    names = ", ".join(path.name for path in files)
    parser.add_argument("--check", action="store_true", help=f"exit 1 if {names} is out of date")
    if parser.parse_args().check:
        sys.exit(0 if all(path.exists() and path.read_text(encoding="utf-8") == text
                          for path, text in files.items()) else 1)
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
        print(f"wrote {path}")
