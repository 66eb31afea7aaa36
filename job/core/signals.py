"""Every signal handler of the job, in one module.

- ``Interrupts``: while a command runs, SIGINT (Ctrl-C) and SIGTERM (a cancelled Batch job,
  ``docker stop``) become KeyboardInterrupt, so atomic writes remove their temporaries and
  ``job.cli.main`` prints one line and exits 128 + the signal's number.
- ``SignalsDeferred``: holds them for the few renames that make a stage's outputs appear
  together.
- ``ignore_interrupts``: a render worker leaves Ctrl-C to its parent.
- ``ignore_from_now``: once ``python -m job`` has decided and reported its exit code.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from types import FrameType
from typing import Any

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupts:
    """SIGINT and SIGTERM while a stage runs.

    The first one raises KeyboardInterrupt in the main thread: every atomic write in flight
    removes its temporary on the way out, so no output is left half-written, and ``main``
    prints one line and exits 128 + the signal's number (130, 143). Some libraries turn the
    interrupt into their own error (DuckDB's "Query interrupted"); whatever is raised once a
    signal came is reported as the interruption it is. A second signal ends the process at
    once, for a stage stuck where Python cannot reach it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupts:
        for number in STOP_SIGNALS:
            # ValueError: not the main thread (a test calling main() from a thread).
            with contextlib.suppress(ValueError):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            print(f"error: {self.describe()}", file=sys.stderr, flush=True)
            os._exit(128 + number)
        self.received = number
        raise KeyboardInterrupt

    def describe(self) -> str:
        # Short, as shells and CI logs show them; no output was left half-written.
        return "terminated (SIGTERM)" if self.received == signal.SIGTERM else "interrupted"

    @property
    def code(self) -> int:
        return 128 + (self.received or signal.SIGINT)


class SignalsDeferred:
    """Hold SIGINT and SIGTERM from ``hold()`` until the end of the ``with`` block, then
    deliver them: for the few renames that make a stage's outputs appear together.

    Only the main thread can change signal handlers; elsewhere this does nothing.
    """

    def __init__(self) -> None:
        self.pending: list[tuple[int, FrameType | None]] = []
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> SignalsDeferred:
        return self

    def hold(self) -> None:
        for number in STOP_SIGNALS:
            with contextlib.suppress(ValueError):
                self.previous[number] = signal.signal(number, self._note)

    def _note(self, number: int, frame: FrameType | None) -> None:
        self.pending.append((number, frame))

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)
        for number, frame in self.pending:
            handler = self.previous.get(number)
            if callable(handler):
                handler(number, frame)  # Python's or the CLI's handler: KeyboardInterrupt
            elif handler == signal.SIG_DFL:
                os.kill(os.getpid(), number)


def ignore_interrupts() -> None:
    """In a render worker: Ctrl-C reaches every process of the terminal's group; the parent
    handles it (one line, exit 130) and stops the pool, a worker's traceback would only add
    noise."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def ignore_from_now() -> None:
    """The outcome is decided and reported: a signal that arrives while Python shuts down
    must not turn a clean exit (or a reported 130) into a death by signal, which is how an
    uncaught KeyboardInterrupt ends a process."""
    for number in STOP_SIGNALS:
        signal.signal(number, signal.SIG_IGN)
