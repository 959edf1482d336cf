"""Shared test helpers.

``shared_dataset(name)`` gives the folder of a real dataset under the shared
datasets directory (env MTL_SHARED_DATASETS, default ``<repo>/../shared/datasets``).
When it is absent the test is skipped, unless MTL_REQUIRE_SHARED=1, which makes it fail.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Callable

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:  # the package is not installed in the test venv
    sys.path.insert(0, str(REPO_ROOT))


def shared_datasets_root() -> Path:
    """Root folder of the shared (read-only) datasets."""
    return Path(os.environ.get("MTL_SHARED_DATASETS", REPO_ROOT.parent / "shared" / "datasets"))


def get_shared_dataset(name: str) -> Path:
    """Folder of shared dataset ``name``; pytest.skip (or fail under MTL_REQUIRE_SHARED=1) if absent."""
    path = shared_datasets_root() / name
    if not path.is_dir():
        reason = (f"shared dataset {name!r} not found at {path} "
                  f"(set MTL_SHARED_DATASETS to the folder holding it)")
        if os.environ.get("MTL_REQUIRE_SHARED") == "1":
            pytest.fail(f"{reason}; MTL_REQUIRE_SHARED=1 requires it")
        pytest.skip(reason)
    return path


@pytest.fixture
def shared_dataset() -> Callable[[str], Path]:
    """Fixture form: ``def test_x(shared_dataset): root = shared_dataset("frappe_x1")``."""
    return get_shared_dataset


@pytest.fixture(autouse=True)
def exact_float32_matmuls():
    """Each test starts and ends at torch's default float32 matmul precision (a Trainer with
    train.matmul_precision=medium changes it process-wide)."""
    import torch

    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision("highest")


@pytest.fixture
def native_kernels():
    """The fused CPU kernels, switched back to 'native' after the test; skip where they cannot be built
    (fail under MTL_REQUIRE_NATIVE=1, which .ci/run sets)."""
    from mtl_final import kernels

    if kernels.library() is None:
        reason = "fused CPU kernels could not be built here (no C compiler?)"
        if os.environ.get("MTL_REQUIRE_NATIVE") == "1":
            pytest.fail(f"{reason}; MTL_REQUIRE_NATIVE=1 requires them")
        pytest.skip(reason)
    yield
    kernels.use_kernels("native")


@pytest.fixture(scope="module")
def esmm_run(tmp_path_factory):
    """(data root, run dir, tmp) of a 1-epoch ESMM run (ctr, cvr) on the tiny dataset, trained once per module."""
    from tests.support.tiny_data import train_tiny_esmm

    tmp = tmp_path_factory.mktemp("esmm_run")
    root, out = train_tiny_esmm(tmp)
    return root, out, tmp


@pytest.fixture
def tiny(tmp_path):
    """The benchmark runner's tiny dataset and configs (tests/support/tiny_benchmark.py)."""
    from tests.support.tiny_benchmark import tiny_benchmark

    return tiny_benchmark(tmp_path)
