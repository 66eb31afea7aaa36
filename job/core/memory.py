"""Peak resident set size and CPU time of this process, per phase, and the cores it may use:
what ``bench`` and ``bench-job`` report.

Linux keeps a high-water mark (``VmHWM``) that ``/proc/self/clear_refs`` resets, so each
phase (scoring, one stage) gets its own peak, not the process' peak so far. Elsewhere the
numbers fall back to ``getrusage``'s peak since start.
"""

from __future__ import annotations

import contextlib
import os
import resource
from pathlib import Path


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def reset_peak_rss() -> int | None:
    """Reset Linux's high-water mark of this process' RSS (``VmHWM``); return the RSS now."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS:")


def peak_rss() -> int:
    """Peak RSS in bytes since the last ``reset_peak_rss`` (Linux), else since start."""
    found = _status_bytes("VmHWM:")
    return found if found is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return None


def cpu_seconds() -> float:
    """CPU seconds of this process and of the child processes it waited for (render's
    workers), user and system."""
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
