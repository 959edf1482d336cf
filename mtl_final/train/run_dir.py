"""The claim on a run directory: one run per folder, and one live process writing it.

A run takes its folder by creating the lock file ``run.lock`` there with O_CREAT | O_EXCL, so that of
two runs started together exactly one gets it; the file holds the pid and host of its process and is
deleted when the run ends, also when it fails. A lock whose pid no longer runs on this host (the run
was killed) is stale and taken over. A new run (not a resume) also refuses a folder that holds the
files of another run; an empty or new folder is fine. Under torchrun only rank 0 writes the run
directory, so only rank 0 claims it."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any, Callable

from mtl_final import reliability
from mtl_final.calibration import CALIBRATION_FILE

LOCK_NAME = "run.lock"
# what a run writes into its folder: these files, and those matching RUN_PATTERNS (TensorBoard events,
# reliability diagrams)
RUN_FILES = ("config.yaml", "schema.yaml", "encoders.json", "best.pt", "last.pt", "metrics.json", CALIBRATION_FILE)
RUN_PATTERNS = ("events.out.tfevents.*", f"{reliability.PREFIX}*.png")


class RunDirError(ValueError):
    """A run directory that holds another run, or that a live run is using."""


class RunDirLock:
    """This process's lock file of a run directory: deleted by `release` or at the end of a with block."""

    def __init__(self, path: Path, token: str) -> None:
        self.path = path
        self._token: str | None = token

    def release(self) -> None:
        """Delete the lock file if it is still this lock's (a second call does nothing)."""
        if self._token is not None and (_holder(self.path) or {}).get("token") == self._token:
            self.path.unlink(missing_ok=True)
        self._token = None

    def __enter__(self) -> RunDirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def run_files(folder: str | Path) -> list[str]:
    """The names of the run files (RUN_FILES, RUN_PATTERNS) in `folder`, sorted."""
    folder = Path(folder)
    found = [name for name in RUN_FILES if (folder / name).exists()]
    return sorted(found + [p.name for pattern in RUN_PATTERNS for p in folder.glob(pattern)])


def claim_run_dir(path: str | Path, resume: bool, log: Callable[[str], None] = print) -> RunDirLock:
    """Take the run directory `path` (made if missing) for a run of this process and return its lock.

    Raises RunDirError when a live run holds its lock, or when `resume` is False and the folder
    holds another run's files. Use it as a context manager: the lock is released at the block's end."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)  # FileExistsError names a file in the way
    lock = _lock(path, log)
    found = [] if resume else run_files(path)
    if found:
        lock.release()
        how = (f", or, if its run was interrupted, continue it with --resume {path}" if "last.pt" in found else
               " (its run stopped before its first checkpoint, last.pt, so it cannot be resumed)")
        raise RunDirError(f"run directory {path} already holds a run ({', '.join(found)}); choose another --out "
                          f"(a new or empty folder) or delete this one{how}")
    return lock


def clear_run_dir(path: str | Path, log: Callable[[str], None] = print) -> None:
    """Delete the run files of an earlier run in `path`, under its lock (so never a live run's), for a
    new run to start there: the benchmark runner reruns a cell in its folder. Other files stay."""
    path = Path(path)
    if not path.is_dir():
        return
    with _lock(path, log):
        found = run_files(path)
        if found:
            log(f"replacing the earlier run in {path}")
        for name in found:
            (path / name).unlink()


def _lock(folder: Path, log: Callable[[str], None]) -> RunDirLock:
    """Create `folder`'s lock file, taking over a stale one; RunDirError while a live run holds it."""
    lock_path = folder / LOCK_NAME
    host = socket.gethostname()
    mine = {"pid": os.getpid(), "host": host, "since": time.strftime("%Y-%m-%d %H:%M:%S"),
            "token": uuid.uuid4().hex}
    for _ in range(3):  # a stale lock removed, or a lock released meanwhile: try again
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            text = _read(lock_path)
            if text is None:
                continue
            holder = _parse(text)
            if holder is None:
                raise RunDirError(f"the lock file {lock_path} of run directory {folder} cannot be read (empty "
                                  "or not a lock file): a run may be starting there; if no run is using it, "
                                  "delete the lock file") from None
            pid, where = holder["pid"], holder["host"]
            if where != host or _alive(pid):
                hint = "" if where == host else "; if no run is using it, delete the lock file"
                raise RunDirError(f"run directory {folder} is in use by the run of pid {pid} on {where} (lock file "
                                  f"{lock_path}, since {holder.get('since', '?')}): wait for that run to end, "
                                  f"or choose another --out{hint}") from None
            if _read(lock_path) != text:  # changed since it was read: another run took it over
                continue
            log(f"run directory {folder}: taking over the stale lock {lock_path} of pid {pid} "
                f"(no longer running on {host})")
            lock_path.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(mine) + "\n")
        return RunDirLock(lock_path, mine["token"])
    raise RunDirError(f"run directory {folder} is in use: its lock file {lock_path} changed hands while this "
                      "run tried to take it; choose another --out")


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _parse(text: str) -> dict[str, Any] | None:
    """The holder {"pid", "host", ...} of a lock file's text; None for a text that is no lock."""
    try:
        holder = json.loads(text)
    except ValueError:
        return None
    if not isinstance(holder, dict) or not isinstance(holder.get("pid"), int) or holder["pid"] <= 0 \
            or not isinstance(holder.get("host"), str):
        return None
    return holder


def _holder(path: Path) -> dict[str, Any] | None:
    text = _read(path)
    return None if text is None else _parse(text)


def _alive(pid: int) -> bool:
    """Whether process `pid` runs on this host (signal 0 checks it and sends nothing)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
