"""What /proc/cpuinfo says of this machine's CPU (the fused kernels' build key, the matmul backend choice,
the speed reports)."""
from __future__ import annotations

from pathlib import Path


def cpu_info(path: Path = Path("/proc/cpuinfo")) -> dict[str, str]:
    """The first processor's fields ("vendor_id", "model name", "flags", ...); {} where the file cannot
    be read (not Linux)."""
    try:
        text = path.read_text()
    except OSError:
        return {}
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if fields:
                break
            continue
        key, sep, value = line.partition(":")
        if sep:
            fields[key.strip()] = value.strip()
    return fields
