"""Load a repository script (benchmarks/, data_tools/) as a module, for tests of its functions."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

REPO_ROOT = Path(__file__).resolve().parents[2]


def load_script(relpath: str, name: str | None = None) -> ModuleType:
    """A fresh module of REPO_ROOT / relpath, registered in sys.modules (dataclasses need that)
    under `name` (default: the file's stem)."""
    name = name or Path(relpath).stem
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relpath)
    assert spec is not None and spec.loader is not None, relpath
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
