"""Public CTR datasets for mtl_final: the four BARS "x1" splits and raw Criteo conversion.

The BARS "x1" datasets are the AFN (AAAI'20) train/valid/test splits as re-released
by the reczoo project (https://github.com/reczoo/Datasets, Hugging Face datasets
``reczoo/<Name>``). Each is a zip holding ``train.csv``, ``valid.csv`` and ``test.csv``.

Library use::

    from bars_datasets import fetch, verify, convert_criteo_raw   # data_tools/ on sys.path
    fetch("Frappe_x1", "data/Frappe_x1")          # download, check, write SOURCE.json
    verify("Frappe_x1", "data/Frappe_x1")         # check only (md5, header, row counts)
    convert_criteo_raw("dac/train.txt", "data/criteo_raw")

Command line::

    python data_tools/bars_datasets.py list
    python data_tools/bars_datasets.py fetch Frappe_x1 --out data/Frappe_x1
    python data_tools/bars_datasets.py verify Frappe_x1 --dir data/Frappe_x1
    python data_tools/bars_datasets.py convert-criteo dac/train.txt --out data/criteo_raw

Exit status: 0 success, 1 a file is wrong (verification or conversion error),
2 the dataset could not be downloaded (the message says where to put the files by hand).

Only the standard library and numpy are used, so the tool runs without torch.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import http.client
import json
import os
import shutil
import socket
import sys
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

__all__ = [
    "Artifact",
    "DatasetInfo",
    "REGISTRY",
    "DatasetUnavailable",
    "VerificationError",
    "CriteoFormatError",
    "get_dataset",
    "fetch",
    "verify",
    "convert_criteo_raw",
    "CRITEO_HEADER",
    "main",
]

SPLITS = ("train", "valid", "test")
SOURCE_FILE = "SOURCE.json"
_BLOCK = 8 << 20  # bytes per read when hashing / counting
_TOOL = "data_tools/bars_datasets.py"


# --------------------------------------------------------------------------- errors
class DatasetUnavailable(RuntimeError):
    """The dataset could not be downloaded (no network, DNS failure, timeout, HTTP error).

    The message explains where to put the files by hand. Attributes: ``dataset``,
    ``target_dir`` (Path), ``files`` (list of expected Paths), ``attempts``
    (list of ``(url, reason)``).
    """

    def __init__(self, message: str, *, dataset: str, target_dir: Path,
                 files: list[Path], attempts: list[tuple[str, str]]) -> None:
        super().__init__(message)
        self.dataset = dataset
        self.target_dir = target_dir
        self.files = files
        self.attempts = attempts


class VerificationError(ValueError):
    """A dataset file (or downloaded archive) is missing or wrong.

    ``problems`` lists one line per problem, each starting with the file name;
    ``bad_files`` maps each wrong file name to its problem kinds
    ("missing", "header", "md5", "rows").
    """

    def __init__(self, message: str, problems: list[str] | None = None,
                 bad_files: Mapping[str, set[str]] | None = None) -> None:
        super().__init__(message)
        self.problems = list(problems or [message])
        self.bad_files = {k: set(v) for k, v in (bad_files or {}).items()}


class CriteoFormatError(ValueError):
    """A line of a raw Criteo file does not have the expected layout (file and line number in the message)."""

    def __init__(self, path: Path, line: int, problem: str) -> None:
        super().__init__(f"{path}:{line}: {problem}")
        self.path = path
        self.line = line
        self.problem = problem


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class Artifact:
    """One downloadable file.

    url: where to get it; mirrors: further URLs tried in order when ``url`` fails.
    filename: name it is saved under (for a plain CSV, one of the dataset's files).
    md5: expected md5 of the download itself, None when unknown.
    extract: "zip" to unpack the dataset's CSV files from it, None for a plain file.
    """

    url: str
    filename: str
    md5: str | None = None
    extract: str | None = None
    mirrors: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.extract not in (None, "zip"):
            raise ValueError(f"artifact {self.filename!r}: extract must be None or 'zip', got {self.extract!r}")

    @property
    def urls(self) -> tuple[str, ...]:
        return (self.url, *self.mirrors)


@dataclass(frozen=True)
class DatasetInfo:
    """What a BARS dataset looks like once installed in a folder.

    files: split -> file name. rows: split -> data rows (header excluded).
    md5: file name -> md5 of the file as published (None when unknown: only the
    header and row count are checked). header: the CSV header, in order.
    """

    name: str
    homepage: str
    artifacts: tuple[Artifact, ...]
    files: Mapping[str, str]
    rows: Mapping[str, int]
    header: tuple[str, ...]
    md5: Mapping[str, str | None]
    schema: str  # configs/datasets/<schema>
    notes: str = ""


_HF = "https://huggingface.co/datasets/reczoo/{0}/resolve/main/{0}.zip"
# Older BARS location (the "Solution#2" links of the BARS dataset README); kept as a
# fallback mirror. It may have been retired; the reczoo Hugging Face hub is the primary.
_ZENODO = "https://zenodo.org/record/5700987/files/{0}.zip"
_FILES = {"train": "train.csv", "valid": "valid.csv", "test": "test.csv"}

CRITEO_INT = tuple(f"I{i}" for i in range(1, 14))
CRITEO_CAT = tuple(f"C{i}" for i in range(1, 27))
CRITEO_HEADER = ("label",) + CRITEO_INT + CRITEO_CAT


def _zip(name: str, *mirrors: str) -> tuple[Artifact, ...]:
    # md5 of the zips themselves is not published; the extracted CSVs are checked instead.
    return (Artifact(url=_HF.format(name), filename=f"{name}.zip", md5=None, extract="zip",
                     mirrors=tuple(mirrors)),)


REGISTRY: dict[str, DatasetInfo] = {
    info.name: info
    for info in (
        DatasetInfo(
            name="Frappe_x1",
            homepage="https://huggingface.co/datasets/reczoo/Frappe_x1",
            artifacts=_zip("Frappe_x1", _ZENODO.format("Frappe_x1")),
            files=_FILES,
            rows={"train": 202_027, "valid": 57_722, "test": 28_860},
            header=("label", "user", "item", "daytime", "weekday", "isweekend", "homework",
                    "cost", "weather", "country", "city"),
            # md5s from the BARS / reczoo dataset README (identical on the Hugging Face card).
            md5={"train.csv": "ba7306e6c4fc19dd2cd84f2f0596d158",
                 "valid.csv": "88d51bf2173505436d3a8f78f2a59da8",
                 "test.csv": "3470f6d32713dc5f7715f198ca7c612a"},
            schema="frappe_x1.yaml",
            notes="AFN split 7:2:1; all 10 fields categorical (already index-encoded).",
        ),
        DatasetInfo(
            name="MovielensLatest_x1",
            homepage="https://huggingface.co/datasets/reczoo/MovielensLatest_x1",
            # BARS README linked https://zenodo.org/record/6324454/files/Movielenslatest_x1.zip
            # (note the lower-case "l"); kept as a fallback mirror.
            artifacts=_zip("MovielensLatest_x1",
                           "https://zenodo.org/record/6324454/files/Movielenslatest_x1.zip?download=1"),
            files=_FILES,
            # The BARS README table says 401,373 validation rows, but its own total
            # (2,006,859) and every FuxiCTR training log say 401,372; 401,372 is used here.
            rows={"train": 1_404_801, "valid": 401_372, "test": 200_686},
            header=("label", "user_id", "item_id", "tag_id"),
            md5={"train.csv": "efc8bceeaa0e895d566470fc99f3f271",
                 "valid.csv": "e1930223a5026e910ed5a48687de8af1",
                 "test.csv": "54e8c6baff2e059fe067fb9b69e692d0"},
            schema="movielenslatest_x1.yaml",
            notes="AFN split 7:2:1; user/item/tag ids, all categorical.",
        ),
        DatasetInfo(
            name="Criteo_x1",
            homepage="https://huggingface.co/datasets/reczoo/Criteo_x1",
            artifacts=_zip("Criteo_x1", _ZENODO.format("Criteo_x1")),
            files=_FILES,
            rows={"train": 33_003_326, "valid": 8_250_124, "test": 4_587_167},
            header=CRITEO_HEADER,
            # md5s from the BARS README and the reczoo/Criteo_x1 Hugging Face card.
            md5={"train.csv": "30b89c1c7213013b92df52ec44f52dc5",
                 "valid.csv": "f73c71fb3c4f66b6ebdfa032646bea72",
                 "test.csv": "2c48b26e84c04a69b948082edae46f8c"},
            schema="criteo_x1.yaml",
            notes="AFN split 7:2:1 (not 8:1:1 as the AFN paper says); I1..I13 are the AFN-preprocessed "
                  "float values, C1..C26 index-encoded. Not the same as convert-criteo output.",
        ),
        DatasetInfo(
            name="Avazu_x1",
            homepage="https://huggingface.co/datasets/reczoo/Avazu_x1",
            artifacts=_zip("Avazu_x1", _ZENODO.format("Avazu_x1")),
            files=_FILES,
            rows={"train": 28_300_276, "valid": 4_042_897, "test": 8_085_794},
            # Column names come from the BARS convert_avazu_x1.py (AFN libsvm -> csv): the AFN
            # release does not keep Avazu's original column names, so they are feat_1..feat_22.
            header=("label",) + tuple(f"feat_{i}" for i in range(1, 23)),
            # md5s from the BARS README / convert_avazu_x1.py.
            md5={"train.csv": "f1114a07aea9e996842c71648e0f6395",
                 "valid.csv": "d9568f246357d156c4b8030fadb8b623",
                 "test.csv": "9e2fe9c48705c9315ae7a0953eb57acf"},
            schema="avazu_x1.yaml",
            notes="AFN split 7:1:2; 22 anonymised categorical fields (index-encoded).",
        ),
    )
}


def get_dataset(name: str) -> DatasetInfo:
    """Registry entry by name, case-insensitive ("Frappe_x1", "frappe_x1")."""
    if name in REGISTRY:
        return REGISTRY[name]
    by_lower = {k.lower(): v for k, v in REGISTRY.items()}
    try:
        return by_lower[name.lower()]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {', '.join(REGISTRY)}") from None


# --------------------------------------------------------------------------- file checks
def _scan(path: Path, with_md5: bool = True) -> tuple[str, int, int]:
    """md5 hex digest ("" without `with_md5`), number of lines and size of a file, in one pass.
    A last line without a newline counts (same as iterating the file in binary)."""
    h = hashlib.md5() if with_md5 else None
    newlines = 0
    size = 0
    last = b""
    with open(path, "rb") as f:
        while True:
            block = f.read(_BLOCK)
            if not block:
                break
            if h is not None:
                h.update(block)
            newlines += block.count(b"\n")
            size += len(block)
            last = block[-1:]
    lines = newlines + (1 if size and last != b"\n" else 0)
    return (h.hexdigest() if h is not None else ""), lines, size


def _md5(path: Path) -> str:
    return _scan(path)[0]


def _read_header(path: Path) -> list[str]:
    with open(path, "r", encoding="utf-8-sig", errors="replace", newline="") as f:
        first = f.readline()
    if not first:
        return []
    return next(csv.reader([first.rstrip("\r\n")]), [])


def _describe_header_diff(expected: Sequence[str], found: Sequence[str]) -> str:
    exp, got = list(expected), list(found)
    if not got:
        return "the file is empty (no header line)"
    parts = []
    missing = [c for c in exp if c not in got]
    extra = [c for c in got if c not in exp]
    if missing:
        parts.append(f"missing columns {missing}")
    if extra:
        parts.append(f"unexpected columns {extra}")
    if len(exp) != len(got):
        parts.append(f"{len(got)} columns instead of {len(exp)}")
    if not parts:  # same names, other order
        moved = [f"position {i + 1}: expected {e!r}, found {g!r}"
                 for i, (e, g) in enumerate(zip(exp, got)) if e != g]
        parts.append("columns in a different order (" + "; ".join(moved[:5])
                     + ("; ..." if len(moved) > 5 else "") + ")")
    return ", ".join(parts)


def verify(name: str, data_dir: str | os.PathLike, *, check_md5: bool = True,
           check_rows: bool = True) -> dict[str, Any]:
    """Check that ``data_dir`` holds the dataset ``name`` exactly as published.

    For each of train/valid/test: the file exists, its header is the expected one,
    its md5 matches (where the registry knows it) and it has the expected number of
    data rows. A row-count difference on a file whose md5 matches is reported as a
    warning (the registry count would be wrong, not the file).

    Returns a report ``{"dataset", "dir", "files": {fname: {...}}, "warnings": [...]}``.
    Raises VerificationError naming every wrong file (md5 mismatch: both hashes;
    wrong header: the differing columns; missing file: its expected path).
    """
    info = get_dataset(name)
    data_dir = Path(data_dir)
    problems: list[str] = []
    bad: dict[str, set[str]] = {}
    warnings: list[str] = []
    files: dict[str, Any] = {}
    for split in SPLITS:
        fname = info.files[split]
        path = data_dir / fname
        if not path.is_file():
            problems.append(f"{fname}: missing (expected at {path})")
            bad.setdefault(fname, set()).add("missing")
            continue
        header = _read_header(path)
        header_ok = header == list(info.header)
        if not header_ok:
            bad.setdefault(fname, set()).add("header")
            problems.append(f"{fname}: wrong header: {_describe_header_diff(info.header, header)} "
                            f"(expected: {','.join(info.header)})")
        digest, lines, size = _scan(path)
        rows = max(lines - 1, 0)
        expected_md5 = info.md5.get(fname)
        md5_ok: bool | None = None
        if check_md5 and expected_md5:
            md5_ok = digest == expected_md5
            if not md5_ok:
                bad.setdefault(fname, set()).add("md5")
                problems.append(f"{fname}: md5 mismatch: expected {expected_md5}, got {digest}")
        expected_rows = info.rows[split]
        if check_rows and rows != expected_rows:
            msg = f"{fname}: expected {expected_rows:,} data rows, found {rows:,}"
            if md5_ok:
                warnings.append(msg + " (md5 matches the published file, so the registry count is off)")
            else:
                bad.setdefault(fname, set()).add("rows")
                problems.append(msg)
        st = path.stat()
        files[fname] = {"split": split, "md5": digest, "md5_expected": expected_md5, "md5_ok": md5_ok,
                        "rows": rows, "rows_expected": expected_rows, "header_ok": header_ok,
                        "bytes": size, "mtime_ns": st.st_mtime_ns}
    if problems:
        raise VerificationError(
            f"{info.name} in {data_dir} failed verification:\n  " + "\n  ".join(problems), problems, bad)
    return {"dataset": info.name, "dir": str(data_dir), "files": files, "warnings": warnings}


# --------------------------------------------------------------------------- download
_NETWORK_ERRORS: tuple[type[BaseException], ...] = (
    urllib.error.URLError,  # includes HTTPError, DNS failures, refused connections, missing file://
    TimeoutError,           # socket.timeout is an alias
    ConnectionError,
    socket.gaierror,
    http.client.HTTPException,  # IncompleteRead, RemoteDisconnected, ...
)


class _ShortDownload(http.client.HTTPException):
    pass


def _reason(exc: BaseException) -> str:
    if isinstance(exc, urllib.error.HTTPError):
        return f"HTTP {exc.code} {exc.reason}"
    if isinstance(exc, urllib.error.URLError):
        return f"{exc.reason}"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _download(url: str, dest: Path, timeout: float,
              progress: Callable[[int, int | None], None] | None = None) -> int:
    """Download ``url`` to ``dest`` through ``dest.part`` (resumed over HTTP when a part exists).

    Returns the number of bytes of ``dest``. Network problems raise one of _NETWORK_ERRORS
    and leave the .part file for the next attempt.
    """
    part = dest.with_name(dest.name + ".part")
    scheme = urllib.parse.urlparse(url).scheme.lower()
    headers = {"User-Agent": "mtl_final-bars-datasets/1.0"}
    offset = part.stat().st_size if part.exists() else 0
    if offset and scheme in ("http", "https"):
        headers["Range"] = f"bytes={offset}-"
    else:
        offset = 0
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and offset:  # stale .part larger than the file: start over
            part.unlink()
            return _download(url, dest, timeout, progress)
        raise
    with resp:
        status = getattr(resp, "status", None) or resp.getcode()
        if offset and status != 206:  # server ignored the Range header
            offset = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) + offset if length and length.isdigit() else None
        done = offset
        with open(part, "ab" if offset else "wb") as out:
            while True:
                block = resp.read(1 << 20)
                if not block:
                    break
                out.write(block)
                done += len(block)
                if progress is not None:
                    progress(done, expected)
    if expected is not None and done != expected:
        raise _ShortDownload(f"connection closed after {done:,} of {expected:,} bytes (rerun to resume)")
    os.replace(part, dest)
    return done


def _extract(archive: Path, out_dir: Path, wanted: Iterable[str]) -> list[str]:
    """Unpack the files named ``wanted`` (matched by base name, at any depth) into ``out_dir``."""
    wanted = set(wanted)
    try:
        zf = zipfile.ZipFile(archive)
    except zipfile.BadZipFile:
        bad = archive.with_name(archive.name + ".bad")
        os.replace(archive, bad)
        raise VerificationError(f"{archive.name}: not a valid zip archive (an HTML error page or a "
                                f"damaged download?); kept as {bad} for inspection") from None
    with zf:
        members: dict[str, zipfile.ZipInfo] = {}
        for info in zf.infolist():
            if info.is_dir() or info.filename.startswith("__MACOSX/"):
                continue
            base = PurePosixPath(info.filename.replace("\\", "/")).name
            if base in wanted:
                if base in members:
                    raise VerificationError(f"{archive.name}: holds {base} twice "
                                            f"({members[base].filename}, {info.filename})")
                members[base] = info
        missing = sorted(wanted - members.keys())
        if missing:
            names = [i.filename for i in zf.infolist()][:20]
            raise VerificationError(f"{archive.name}: does not contain {missing} (it holds {names})")
        for base, info in sorted(members.items()):
            tmp = out_dir / (base + ".extracting")
            with zf.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            os.replace(tmp, out_dir / base)
    return sorted(members)


def _artifacts_from_urls(info: DatasetInfo, urls: Any) -> tuple[Artifact, ...]:
    """Turn the ``urls`` override of fetch() into artifacts.

    Accepts a string, a list of strings, Artifacts or dicts (Artifact fields), or a
    mapping file name -> url. A URL ending in .zip is unpacked; any other URL must
    end in one of the dataset's file names (train.csv, ...).
    """
    if isinstance(urls, (str, Artifact)):
        urls = [urls]
    if isinstance(urls, Mapping):
        urls = [{"filename": k, "url": v} for k, v in urls.items()]
    out = []
    for u in urls:
        if isinstance(u, Artifact):
            out.append(u)
            continue
        if isinstance(u, Mapping):
            d = dict(u)
            url = d["url"]
            fname = d.get("filename") or _url_basename(url)
            extract = d.get("extract", "zip" if fname.lower().endswith(".zip") else None)
            out.append(Artifact(url=url, filename=fname, md5=d.get("md5"), extract=extract,
                                mirrors=tuple(d.get("mirrors", ()))))
            continue
        url = str(u)
        fname = _url_basename(url)
        if fname.lower().endswith(".zip"):
            out.append(Artifact(url=url, filename=fname, extract="zip"))
        elif fname in info.files.values():
            out.append(Artifact(url=url, filename=fname))
        else:
            raise ValueError(f"cannot tell what {url!r} holds: give a .zip or a URL ending in one of "
                             f"{sorted(info.files.values())}, or pass {{'url': ..., 'filename': ...}}")
    return tuple(out)


def _url_basename(url: str) -> str:
    path = urllib.parse.urlparse(url).path
    return PurePosixPath(urllib.parse.unquote(path)).name or "download"


def _manual_instructions(info: DatasetInfo, out_dir: Path) -> str:
    art = info.artifacts[0]
    lines = [f"To install it by hand, download {art.url}",
             f"(dataset page: {info.homepage}) on a machine with internet access,",
             "unzip it and place these files:" if art.extract == "zip" else "and place these files:"]
    paths = {s: str(out_dir / info.files[s]) for s in SPLITS}
    width = max(len(p) for p in paths.values())
    for split in SPLITS:
        md5 = info.md5.get(info.files[split])
        lines.append(f"  {paths[split]:<{width}}  {info.rows[split]:>12,} data rows  "
                     f"md5 {md5 if md5 else '(not published: only header and rows are checked)'}")
    lines.append("Each file must start with this header line:")
    lines.append(f"  {','.join(info.header)}")
    lines.append("Then check them with:")
    lines.append(f"  python {_TOOL} verify {info.name} --dir {out_dir}")
    return "\n".join(lines)


def _record_matches(out_dir: Path, info: DatasetInfo) -> bool:
    """True when SOURCE.json records every file with its current size and mtime (quick re-check)."""
    try:
        record = json.loads((out_dir / SOURCE_FILE).read_text(encoding="utf-8"))
        if record.get("dataset") != info.name or not record.get("verified"):
            return False
        for fname in info.files.values():
            rec = record["files"][fname]
            st = (out_dir / fname).stat()
            if rec["bytes"] != st.st_size or rec["mtime_ns"] != st.st_mtime_ns:
                return False
        return True
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _write_source(out_dir: Path, info: DatasetInfo, report: dict[str, Any],
                  artifacts: list[dict[str, Any]], origin: str) -> dict[str, Any]:
    record = {
        "dataset": info.name,
        "homepage": info.homepage,
        "origin": origin,
        "artifacts": artifacts,
        "files": report["files"],
        "header": list(info.header),
        "verified": True,
        "warnings": report["warnings"],
        "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "tool": _TOOL,
        "notes": info.notes,
    }
    tmp = out_dir / (SOURCE_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out_dir / SOURCE_FILE)
    return record


def fetch(name: str, out_dir: str | os.PathLike, urls: Any = None, timeout: float = 30, *,
          check_md5: bool = True, force: bool = False, keep_archives: bool = False,
          progress: Callable[[str, int, int | None], None] | None = None) -> dict[str, Any]:
    """Download dataset ``name`` into ``out_dir``, check it and record its provenance.

    Idempotent: when ``out_dir`` already holds the dataset and it verifies (or
    SOURCE.json records the files with their current sizes and mtimes), nothing is
    downloaded or written and ``{"status": "present", ...}`` is returned.

    urls: override the registry's download locations (see _artifacts_from_urls), e.g.
        ``["file:///mirror/Frappe_x1.zip"]`` or ``{"train.csv": url, ...}``.
    timeout: seconds for connecting and for each read.
    check_md5: compare against the published md5s (header and row counts are always checked).
    force: download again even when files are present (also when they are wrong;
        without it, wrong existing files raise VerificationError instead of being overwritten).
    keep_archives: keep the downloaded zip next to the data.
    progress: called as progress(filename, bytes_done, bytes_total_or_None).

    Raises DatasetUnavailable when nothing could be downloaded (the message names the
    target folder, the files to put there, their md5s and header), VerificationError
    when a download or the resulting files are wrong.
    """
    info = get_dataset(name)
    out_dir = Path(out_dir).absolute()
    wanted = [info.files[s] for s in SPLITS]

    if not force:
        present = [f for f in wanted if (out_dir / f).is_file()]
        if present:
            if len(present) == len(wanted) and _record_matches(out_dir, info):
                return {"status": "present", "dataset": info.name, "dir": str(out_dir),
                        "checked": "SOURCE.json (sizes and mtimes)"}
            try:
                report = verify(info.name, out_dir, check_md5=check_md5)
            except VerificationError as e:
                if any(kinds != {"missing"} for kinds in e.bad_files.values()):
                    # a present file is wrong: do not overwrite it silently
                    raise VerificationError(
                        str(e) + f"\nFix or delete the wrong files, or pass force=True "
                        f"(CLI: --force) to download {info.name} again.", e.problems, e.bad_files) from None
                # only some files are missing: download them below
            else:
                if not (out_dir / SOURCE_FILE).exists():
                    _write_source(out_dir, info, report, [], origin="found in place (not downloaded by this tool)")
                return {"status": "present", "dataset": info.name, "dir": str(out_dir),
                        "checked": "full verification", "warnings": report["warnings"]}

    artifacts = _artifacts_from_urls(info, urls) if urls is not None else info.artifacts
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / ".download"
    staging.mkdir(exist_ok=True)
    fetched: list[dict[str, Any]] = []
    attempts: list[tuple[str, str]] = []
    try:
        _fetch_artifacts(info, artifacts, out_dir, staging, timeout, check_md5, keep_archives,
                         progress, fetched, attempts)
    finally:
        if staging.is_dir() and not any(staging.iterdir()):
            staging.rmdir()

    report = verify(info.name, out_dir, check_md5=check_md5)
    source = _write_source(out_dir, info, report, fetched, origin="downloaded")
    return {"status": "downloaded", "dataset": info.name, "dir": str(out_dir),
            "artifacts": fetched, "files": source["files"], "warnings": report["warnings"]}


def _fetch_artifacts(info: DatasetInfo, artifacts: Sequence[Artifact], out_dir: Path, staging: Path,
                     timeout: float, check_md5: bool, keep_archives: bool,
                     progress: Callable[[str, int, int | None], None] | None,
                     fetched: list[dict[str, Any]], attempts: list[tuple[str, str]]) -> None:
    """Download (and unpack) each artifact, appending its provenance to ``fetched``."""
    wanted = [info.files[s] for s in SPLITS]
    for art in artifacts:
        dest = (staging if art.extract else out_dir) / art.filename
        got_from = None
        for url in art.urls:
            def _progress(done: int, total: int | None, _f: str = art.filename) -> None:
                if progress is not None:
                    progress(_f, done, total)
            try:
                size = _download(url, dest, timeout, _progress)
            except _NETWORK_ERRORS as e:
                attempts.append((url, _reason(e)))
                continue
            got_from = url
            break
        if got_from is None:
            raise DatasetUnavailable(
                f"Could not download {info.name} ({art.filename}); the network or the server is "
                f"unreachable from here:\n"
                + "\n".join(f"  tried {u}: {r}" for u, r in attempts)
                + "\n" + _manual_instructions(info, out_dir),
                dataset=info.name, target_dir=out_dir, files=[out_dir / f for f in wanted], attempts=attempts)
        digest = _md5(dest)
        if check_md5 and art.md5 and digest != art.md5:
            bad = dest.with_name(dest.name + ".bad")
            os.replace(dest, bad)
            raise VerificationError(f"{art.filename}: md5 mismatch: expected {art.md5}, got {digest} "
                                    f"(downloaded from {got_from}; kept as {bad})")
        entry = {"url": got_from, "filename": art.filename, "md5": digest, "md5_expected": art.md5,
                 "bytes": size, "extract": art.extract}
        if art.extract == "zip":
            entry["extracted"] = _extract(dest, out_dir, wanted)
            if not keep_archives:
                dest.unlink()
        fetched.append(entry)


# --------------------------------------------------------------------------- raw Criteo
def _count_lines(path: Path) -> int:
    """Lines of a file, counting a last line without a newline (same as iterating it in binary)."""
    return _scan(path, with_md5=False)[1]


def _split_sizes(n: int, splits: Sequence[float]) -> list[int]:
    bounds = [int(round(c * n)) for c in np.cumsum(splits)]
    bounds[-1] = n
    sizes, prev = [], 0
    for b in bounds:
        b = min(max(b, prev), n)
        sizes.append(b - prev)
        prev = b
    return sizes


def _csv_field(value: bytes) -> bytes:
    if b"," in value or b'"' in value or b"\r" in value:
        return b'"' + value.replace(b'"', b'""') + b'"'
    return value


def convert_criteo_raw(raw_path: str | os.PathLike, out_dir: str | os.PathLike,
                       splits: Sequence[float] = (0.7, 0.2, 0.1), seed: int = 2018,
                       chunk_rows: int = 500_000, *, on_bad_lines: str = "error") -> dict[str, Any]:
    """Convert the raw Criteo Display Advertising Challenge ``train.txt`` into train/valid/test CSVs.

    Input: tab-separated, no header, 40 columns per line: label (0/1), I1..I13
    (integers), C1..C26 (hex strings); an empty cell is a missing value.
    Output (in ``out_dir``): train.csv, valid.csv, test.csv with header
    ``label,I1..I13,C1..C26``, values copied verbatim (missing cells stay empty),
    rows kept in file order within each split, plus SOURCE.json with the report.

    The split is random but deterministic: a first pass counts the N lines, then line
    i goes to the split given by entry i of a seeded shuffle (numpy default_rng(seed))
    of exactly round(0.7N) / round(0.2N) / rest labels; it does not depend on
    ``chunk_rows``. The file is streamed (never loaded whole); ``chunk_rows`` rows
    are buffered between writes. Memory: one byte per line for the split labels.

    on_bad_lines: "error" raises CriteoFormatError naming the file and the 1-based
    line number of the first line without 40 columns (or with a label other than
    0/1); "skip" drops such lines and counts them in the report. Empty lines are
    ignored and counted as ``blank_lines``. A skipped or blank line still uses its
    slot in the shuffle, so the other lines' splits do not change.

    Note: this is NOT the BARS Criteo_x1 split (that one is the AFN release with
    preprocessed features); results on it are not comparable to BARS numbers.

    Returns {"source", "out_dir", "seed", "splits", "lines_read", "rows_written":
    {split: n}, "rows_written_total", "skipped", "skipped_lines" (first 20),
    "blank_lines", "files"}.
    """
    raw_path = Path(raw_path)
    out_dir = Path(out_dir)
    splits = _check_convert_args(raw_path, splits, on_bad_lines, chunk_rows)
    out_dir.mkdir(parents=True, exist_ok=True)
    n_lines = _count_lines(raw_path)
    assignment = _split_assignment(n_lines, splits, seed)
    parts = [out_dir / f"{s}.csv.part" for s in SPLITS]
    tally = _write_parts(raw_path, parts, assignment, chunk_rows, on_bad_lines)
    files = _publish_parts(parts, out_dir)
    report = {
        "source": str(raw_path),
        "out_dir": str(out_dir),
        "seed": seed,
        "splits": dict(zip(SPLITS, splits)),
        "lines_read": n_lines,
        "rows_written": dict(zip(SPLITS, tally.written)),
        "rows_written_total": sum(tally.written),
        "skipped": tally.skipped,
        "skipped_lines": tally.skipped_lines,
        "blank_lines": tally.blank,
        "files": files,
    }
    _write_criteo_source(out_dir, report)
    return report


def _check_convert_args(raw_path: Path, splits: Sequence[float], on_bad_lines: str,
                        chunk_rows: int) -> tuple[float, ...]:
    """The split fractions as floats, after checking every argument of `convert_criteo_raw`."""
    splits = tuple(float(s) for s in splits)
    if len(splits) != 3 or any(s < 0 for s in splits) or abs(sum(splits) - 1.0) > 1e-6:
        raise ValueError(f"splits must be 3 non-negative fractions (train, valid, test) summing to 1, got {splits}")
    if on_bad_lines not in ("error", "skip"):
        raise ValueError(f"on_bad_lines must be 'error' or 'skip', got {on_bad_lines!r}")
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be >= 1, got {chunk_rows}")
    if not raw_path.is_file():
        raise FileNotFoundError(f"raw Criteo file not found: {raw_path}")
    return splits


def _split_assignment(n_lines: int, splits: Sequence[float], seed: int) -> np.ndarray:
    """[n_lines] uint8: the split (0 train, 1 valid, 2 test) of each line, a seeded shuffle of exact sizes."""
    assignment = np.repeat(np.arange(3, dtype=np.uint8), _split_sizes(n_lines, splits))
    np.random.default_rng(seed).shuffle(assignment)
    return assignment


@dataclass
class _Tally:
    """What a conversion did with the lines it read."""

    written: list[int] = field(default_factory=lambda: [0, 0, 0])  # rows per split
    skipped: int = 0
    skipped_lines: list[int] = field(default_factory=list)  # the first 20 skipped line numbers
    blank: int = 0

    def skip(self, lineno: int) -> None:
        self.skipped += 1
        if len(self.skipped_lines) < 20:
            self.skipped_lines.append(lineno)


class _RowBuffers:
    """CSV rows waiting for the three split files, written out once `chunk_rows` are held."""

    def __init__(self, outs: Sequence[Any], chunk_rows: int) -> None:
        self.outs, self.chunk_rows = outs, chunk_rows
        self.rows: list[list[bytes]] = [[], [], []]
        self.held = 0

    def add(self, k: int, row: bytes) -> None:
        self.rows[k].append(row)
        self.held += 1
        if self.held >= self.chunk_rows:
            self.flush()

    def flush(self) -> None:
        for out, rows in zip(self.outs, self.rows):
            if rows:
                out.write(b"".join(rows))
                rows.clear()
        self.held = 0


def _write_parts(raw_path: Path, parts: Sequence[Path], assignment: np.ndarray, chunk_rows: int,
                 on_bad_lines: str) -> _Tally:
    """Write each line of `raw_path` as a CSV row into the part file of its split (header first);
    on any error the part files are removed again."""
    outs = [open(p, "wb") for p in parts]
    ok = False
    try:
        header = (",".join(CRITEO_HEADER) + "\n").encode()
        for out in outs:
            out.write(header)
        buffers = _RowBuffers(outs, chunk_rows)
        tally = _copy_lines(raw_path, assignment, buffers, on_bad_lines)
        buffers.flush()
        ok = True
    finally:
        for out in outs:
            out.close()
        if not ok:
            for p in parts:
                p.unlink(missing_ok=True)
    return tally


def _copy_lines(raw_path: Path, assignment: np.ndarray, buffers: _RowBuffers, on_bad_lines: str) -> _Tally:
    """Stream `raw_path`: line i (1-based) goes, as a CSV row, to split assignment[i - 1]; blank and
    (under on_bad_lines="skip") bad lines are counted instead, a bad one otherwise raises."""
    tally = _Tally()
    n_lines = len(assignment)
    with open(raw_path, "rb") as f:
        for lineno, line in enumerate(f, start=1):
            if lineno > n_lines:  # the file grew while we read it
                raise RuntimeError(f"{raw_path} changed during conversion (more than {n_lines} lines)")
            body = line.rstrip(b"\r\n")
            if not body.strip():
                tally.blank += 1
                continue
            row, problem = _criteo_csv_row(body)
            if problem is not None:
                if on_bad_lines == "error":
                    raise CriteoFormatError(raw_path, lineno, problem)
                tally.skip(lineno)
                continue
            k = assignment[lineno - 1]
            buffers.add(k, row)
            tally.written[k] += 1
    return tally


def _criteo_csv_row(body: bytes) -> tuple[bytes, str | None]:
    """(the CSV row of one raw line without its line end, None), or (b"", the problem) for a bad line."""
    parts = body.split(b"\t")
    n_cols = len(CRITEO_HEADER)
    if len(parts) != n_cols:
        return b"", f"expected {n_cols} tab-separated columns (label, I1..I13, C1..C26), found {len(parts)}"
    if parts[0] not in (b"0", b"1"):
        return b"", f"label must be 0 or 1, found {parts[0][:20]!r}"
    if b"," in body or b'"' in body:
        return b",".join(_csv_field(p) for p in parts) + b"\n", None
    return b",".join(parts) + b"\n", None


def _publish_parts(parts: Sequence[Path], out_dir: Path) -> dict[str, str]:
    """Rename the finished part files to ``<split>.csv``; returns split -> path."""
    files = {}
    for s, p in zip(SPLITS, parts):
        final = out_dir / f"{s}.csv"
        os.replace(p, final)
        files[s] = str(final)
    return files


def _write_criteo_source(out_dir: Path, report: dict[str, Any]) -> None:
    """SOURCE.json of a conversion: where the files came from, the header and the report."""
    record = {"origin": "converted from raw Criteo Display Advertising Challenge data",
              "note": "not the BARS Criteo_x1 split; not comparable to BARS results",
              "header": list(CRITEO_HEADER), "tool": _TOOL,
              "recorded_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), **report}
    (out_dir / SOURCE_FILE).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- CLI
def _print_progress(fname: str, done: int, total: int | None) -> None:
    if total:
        print(f"\r{fname}: {done / 2**20:,.1f} / {total / 2**20:,.1f} MiB", end="", file=sys.stderr, flush=True)
    else:
        print(f"\r{fname}: {done / 2**20:,.1f} MiB", end="", file=sys.stderr, flush=True)


def _build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bars_datasets.py", description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("list", help="list the known datasets")

    f = sub.add_parser("fetch", help="download, verify and record a BARS dataset")
    f.add_argument("name", help=f"one of {', '.join(REGISTRY)}")
    f.add_argument("--out", required=True, help="folder to put train.csv, valid.csv, test.csv in")
    f.add_argument("--url", action="append", dest="urls",
                   help="download from this URL instead (a .zip, or a URL ending in train.csv etc.); repeatable")
    f.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds (default 30)")
    f.add_argument("--force", action="store_true", help="download again even if files are present")
    f.add_argument("--no-md5", action="store_true", help="do not compare md5s (header and rows still checked)")
    f.add_argument("--keep-archive", action="store_true", help="keep the downloaded zip")
    f.add_argument("--quiet", action="store_true", help="no progress output")

    v = sub.add_parser("verify", help="check an installed BARS dataset (md5, header, row counts)")
    v.add_argument("name")
    v.add_argument("--dir", required=True)
    v.add_argument("--no-md5", action="store_true")

    c = sub.add_parser("convert-criteo", help="convert raw Criteo train.txt to train/valid/test CSVs")
    c.add_argument("raw", help="raw train.txt (tab-separated, no header)")
    c.add_argument("--out", required=True)
    c.add_argument("--splits", type=float, nargs=3, default=(0.7, 0.2, 0.1), metavar=("TRAIN", "VALID", "TEST"))
    c.add_argument("--seed", type=int, default=2018)
    c.add_argument("--chunk-rows", type=int, default=500_000)
    c.add_argument("--on-bad-lines", choices=("error", "skip"), default="error")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _build_parser().parse_args(argv)
    try:
        if args.cmd == "list":
            for info in REGISTRY.values():
                rows = "/".join(f"{info.rows[s]:,}" for s in SPLITS)
                print(f"{info.name:20s} {rows:>40s}  {info.homepage}")
            return 0
        if args.cmd == "fetch":
            result = fetch(args.name, args.out, urls=args.urls, timeout=args.timeout,
                           check_md5=not args.no_md5, force=args.force, keep_archives=args.keep_archive,
                           progress=None if args.quiet else _print_progress)
            if not args.quiet and result["status"] == "downloaded":
                print(file=sys.stderr)
            print(json.dumps(result, indent=2))
            return 0
        if args.cmd == "verify":
            print(json.dumps(verify(args.name, args.dir, check_md5=not args.no_md5), indent=2))
            return 0
        if args.cmd == "convert-criteo":
            print(json.dumps(convert_criteo_raw(args.raw, args.out, splits=args.splits, seed=args.seed,
                                                chunk_rows=args.chunk_rows, on_bad_lines=args.on_bad_lines),
                             indent=2))
            return 0
    except DatasetUnavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (VerificationError, CriteoFormatError, FileNotFoundError, KeyError, ValueError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"error: {msg}", file=sys.stderr)
        return 1
    return 1  # unreachable: argparse requires a command


if __name__ == "__main__":
    sys.exit(main())
