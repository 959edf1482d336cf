"""--resume with a last.pt / best.pt that cannot be continued: one error naming the file, what is
wrong with it and the fix, exit code 2, no traceback."""
from __future__ import annotations

import errno
import shutil
from pathlib import Path

import pytest
import torch

from mtl_final.train import checkpoint
from mtl_final.train.__main__ import main as train_main
from mtl_final.train.checkpoint import CheckpointError, load_checkpoint


@pytest.fixture
def run_copy(esmm_run, tmp_path: Path) -> Path:
    """A copy of the tiny ESMM run (finished: resuming it recomputes its metrics)."""
    _, run_dir, _ = esmm_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    return copy


def _resume_error(run_dir: Path, capsys) -> str:
    capsys.readouterr()
    assert train_main(["--resume", str(run_dir)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1
    return err.strip()


@pytest.mark.parametrize("keep", [0, 1, 1000, -100])
def test_truncated_last_pt_names_the_file(run_copy, capsys, keep):
    data = (run_copy / "last.pt").read_bytes()
    (run_copy / "last.pt").write_bytes(data[:keep] if keep >= 0 else data[:keep])
    err = _resume_error(run_copy, capsys)
    assert err.startswith(f"error: {run_copy / 'last.pt'} cannot be read: the file is truncated or corrupt (")
    assert err.endswith("restore an intact copy of it, or start a new run (another --out)")


def test_a_read_failing_with_a_bare_os_error_still_names_the_file(run_copy, capsys, monkeypatch):
    """torch raises OSError(EINVAL) without a file name for some cut points of a zip checkpoint."""
    def einval(*args, **kwargs):
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(checkpoint.torch, "load", einval)
    err = _resume_error(run_copy, capsys)
    assert err.startswith(f"error: {run_copy / 'last.pt'} cannot be read: the file is truncated or corrupt "
                          "(OSError: [Errno 22] Invalid argument)")


def test_a_missing_checkpoint_stays_a_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "none.pt")


def test_last_pt_of_another_model_names_the_first_mismatching_parameter(run_copy, capsys):
    last = torch.load(run_copy / "last.pt", weights_only=False)
    name = next(iter(last["model"]))
    shape = list(last["model"][name].shape)
    last["model"][name] = torch.zeros(shape[0], shape[1] + 3)  # e.g. another run's embedding size
    torch.save(last, run_copy / "last.pt")
    err = _resume_error(run_copy, capsys)
    assert err == (f"error: {run_copy / 'last.pt'}: its weights do not fit the model in {run_copy / 'config.yaml'}: "
                   f"{name} has shape {[shape[0], shape[1] + 3]} in the file and {shape} in the model; "
                   "resume the run that wrote this file, or start a new run (another --out)")


def test_checkpoint_missing_or_extra_weights_are_named(run_copy, capsys):
    best = torch.load(run_copy / "best.pt", weights_only=False)
    name = list(best["model"])[-1]
    del best["model"][name]
    torch.save(best, run_copy / "best.pt")
    err = _resume_error(run_copy, capsys)
    assert err.startswith(f"error: {run_copy / 'best.pt'}: its weights do not fit the model in "
                          f"{run_copy / 'config.yaml'}: {name} of the model is not in the file; ")
    best["model"][name + "_x"] = torch.zeros(1)
    torch.save(best, run_copy / "best.pt")
    assert f"{name} of the model is not in the file" in _resume_error(run_copy, capsys)
    last = torch.load(run_copy / "last.pt", weights_only=False)
    last["model"]["extra.weight"] = torch.zeros(2)
    torch.save(last, run_copy / "last.pt")
    assert _resume_error(run_copy, capsys).startswith(
        f"error: {run_copy / 'last.pt'}: its weights do not fit the model in {run_copy / 'config.yaml'}: "
        "the file holds extra.weight, which the model does not have; ")


def test_checkpoint_that_is_not_a_training_checkpoint(run_copy, capsys):
    torch.save(torch.zeros(3), run_copy / "last.pt")
    assert _resume_error(run_copy, capsys).startswith(
        f"error: {run_copy / 'last.pt'} holds a Tensor, not the checkpoint of a training run; ")


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def test_benchmark_does_not_resume_a_truncated_last_pt(run_copy):
    from mtl_final.config import load_config
    from mtl_final.train.run import can_resume

    cfg = load_config(run_copy / "config.yaml")
    (run_copy / "metrics.json").unlink()  # interrupted
    assert can_resume(run_copy, cfg)
    (run_copy / "last.pt").write_bytes((run_copy / "last.pt").read_bytes()[:500])
    assert not can_resume(run_copy, cfg)  # the cell starts over instead of failing at every rerun
