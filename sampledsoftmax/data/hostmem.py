"""The host memory available to this process: what the data layer's planted corpus and the trainers' memory check
(``training/memory.py``) compare their estimates with, before they allocate.

/proc/meminfo's MemAvailable (else the free physical pages, ``os.sysconf``), lowered to the cgroup's limit minus its
usage when the process runs in a container with a memory limit (cgroup v2, then v1), and shared by the processes of
a torchrun job on this machine (``LOCAL_WORLD_SIZE``: each holds its own copy of the data and, on the CPU, of the
model).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

__all__ = ["host_available_bytes", "describe_bytes"]

_CGROUPS = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
            ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))


def describe_bytes(n: float) -> str:
    """'1.6 TB', '2.4 GB', '74 MB': decimal units, 3 significant digits."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n >= scale or unit == "MB":
            x = n / scale
            return f"{x:.3g} {unit}" if x < 1000 else f"{x:,.0f} {unit}"
    raise AssertionError("unreachable")


def _read_int(path: str) -> Optional[int]:
    try:
        text = Path(path).read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _machine_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")


def host_available_bytes() -> tuple[int, str]:
    """(bytes of host memory available to this process, a description for messages, e.g. "this machine has 22.4 GB
    available")."""
    avail = _machine_available()
    for limit_path, usage_path in _CGROUPS:
        limit, usage = _read_int(limit_path), _read_int(usage_path)
        if limit is not None and usage is not None and limit < 1 << 60:  # "max" (no limit) is not a number
            avail = min(avail, max(0, limit - usage))
            break
    local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1") or 1))
    if local > 1:
        share = avail // local
        return share, (f"this machine has {describe_bytes(avail)} available for {local} processes "
                       f"({describe_bytes(share)} each)")
    return avail, f"this machine has {describe_bytes(avail)} available"
