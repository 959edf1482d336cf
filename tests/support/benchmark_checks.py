"""Checks shared by the single-task and multi-task benchmark runner tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from mtl_final.benchmark import runner
from mtl_final.benchmark.__main__ import main


def assert_rerun_runs_nothing(monkeypatch: pytest.MonkeyPatch, csv_file: Path, argv: list[str]) -> bytes:
    """Invoke the runner again over a CSV in which every cell is finished: no cell may run and
    the CSV must stay byte-identical. Returns the CSV's bytes."""

    def must_not_run(*args, **kwargs):
        raise AssertionError("run_experiment called on a finished cell")

    before = csv_file.read_bytes()
    monkeypatch.setattr(runner, "run_experiment", must_not_run)
    assert main(argv) == 0
    assert csv_file.read_bytes() == before
    return before
