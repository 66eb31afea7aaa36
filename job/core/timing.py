"""The one timer of the stages: wall and CPU seconds of labelled steps, and a process's
start-up (from its start to its first stage: the imports a command pays before any work)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from job.core.memory import cpu_seconds


class Stopwatch:
    """Seconds of each labelled step, in the order the steps first ran.

    ``seconds``: wall time; ``cpu_seconds``: CPU time of this process and of the child
    processes it waited for. A label timed twice adds up; a step that raises records nothing.
    """

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.cpu_seconds: dict[str, float] = {}

    @contextmanager
    def time(self, label: str) -> Iterator[None]:
        wall, cpu = time.perf_counter(), cpu_seconds()
        yield
        self.seconds[label] = self.seconds.get(label, 0.0) + time.perf_counter() - wall
        self.cpu_seconds[label] = self.cpu_seconds.get(label, 0.0) + cpu_seconds() - cpu

    def total(self) -> float:
        """Wall seconds of every step together."""
        return sum(self.seconds.values())


def process_age(proc: Path = Path("/proc")) -> float | None:
    """Seconds since this process started, from Linux's /proc (its start in clock ticks after
    boot, against the time since boot); None where /proc does not say."""
    try:
        stat = (proc / "self" / "stat").read_text()
        uptime = float((proc / "uptime").read_text().split()[0])
        # Field 22, counted after the command name's closing parenthesis (the name may hold
        # spaces and parentheses of its own).
        started_ticks = int(stat.rsplit(")", 1)[1].split()[19])
        ticks = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None
    return max(0.0, uptime - started_ticks / ticks)


_startup_taken = False


def first_stage_startup() -> float | None:
    """This process's age the first time it is asked (its first stage starts now), None on
    every later call and where the age is unknown: only a process's first stage paid its
    start-up."""
    global _startup_taken
    if _startup_taken:
        return None
    _startup_taken = True
    return process_age()
