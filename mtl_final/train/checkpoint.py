"""Checkpoint files: written atomically (a temporary sibling renamed over the target), read back
with one error naming the file when it is truncated, corrupt or does not fit the model."""
from __future__ import annotations

import contextlib
import itertools
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Iterator, Mapping

import torch
from torch import nn

_NEW_RUN = "start a new run (another --out)"


class CheckpointError(ValueError):
    """A checkpoint file that cannot be read, or whose weights do not fit the model."""


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_file(path: str | Path) -> Iterator[IO[bytes]]:
    """A binary file that replaces `path` when the block ends without an error: written to a temporary
    sibling, flushed and synced, then renamed over `path`; on any error the temporary file is removed
    and `path` keeps its old contents. The file gets the permissions a plain open() would give it
    (0666 less the umask; mkstemp's own are 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save_atomic(obj: Any, path: str | Path) -> None:
    """torch.save to `path` so that a crash leaves either the old file or the new one, never half."""
    with atomic_file(path) as f:
        torch.save(obj, f)


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> dict[str, Any]:
    """What `save_atomic` wrote to `path`, its tensors on `device`. A missing file raises
    FileNotFoundError; one that cannot be read (cut short, corrupt, no torch file) CheckpointError."""
    try:
        return torch.load(path, map_location=device, weights_only=False)
    except (FileNotFoundError, IsADirectoryError, PermissionError):
        raise
    except Exception as err:  # torch: RuntimeError (zip), OSError EINVAL naming no file, EOFError; pickle's own
        first = (str(err).strip() or type(err).__name__).splitlines()[0].split(". ")[0]
        raise CheckpointError(f"{path} cannot be read: the file is truncated or corrupt ({type(err).__name__}: "
                              f"{first}); restore an intact copy of it, or {_NEW_RUN}") from err


def check_weights_fit(model: nn.Module, state: Any, path: str | Path) -> None:
    """Raise CheckpointError unless the weights of checkpoint `state` ({"model": state dict, ...}, read
    from `path` in a run directory) fit `model`, built from that directory's config.yaml: it names the
    model's first weight missing from the file or of another shape there, else the file's first extra one."""
    path = Path(path)
    fix = f"resume the run that wrote this file, or {_NEW_RUN}"
    weights = state.get("model") if isinstance(state, Mapping) else None
    if not isinstance(weights, Mapping):
        what = "a dict without model weights" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise CheckpointError(f"{path} holds {what}, not the checkpoint of a training run; {fix}")
    own = model.state_dict()
    misfits = (f"{name} of the model is not in the file" if name not in weights else
               f"{name} has shape {_shape(weights[name])} in the file and {_shape(tensor)} in the model"
               for name, tensor in own.items() if name not in weights or _shape(weights[name]) != _shape(tensor))
    extras = (f"the file holds {name}, which the model does not have" for name in weights if name not in own)
    problem = next(itertools.chain(misfits, extras), None)
    if problem:
        raise CheckpointError(f"{path}: its weights do not fit the model in {path.with_name('config.yaml')}: "
                              f"{problem}; {fix}")


def _shape(value: Any) -> list[int] | str:
    return list(value.shape) if isinstance(value, torch.Tensor) else f"(a {type(value).__name__}, not a tensor)"
