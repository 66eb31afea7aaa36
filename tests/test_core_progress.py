"""job.core.progress: the one progress bar, shown on a terminal and never under -q."""

from __future__ import annotations

import io
import logging

import pytest

from job.core.progress import progress


class Terminal(io.StringIO):
    """stderr as a terminal: tqdm shows its bar only where ``isatty()`` is true."""

    def isatty(self) -> bool:
        return True


def stderr_as(stream: io.StringIO, level: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the test's body, not a fixture: pytest puts its own capture back on sys.stderr
    between a fixture's setup and the test."""
    monkeypatch.setattr("sys.stderr", stream)
    monkeypatch.setattr(logging.getLogger("job"), "level", level)


def test_bar_on_a_terminal_at_info(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr_as(terminal := Terminal(), logging.INFO, monkeypatch)
    with progress(10, "scoring users", unit="user") as bar:
        bar.update(4)
        shown = not bar.disable  # closing the bar disables it
    assert shown
    # The bar as first drawn (later redraws are rate-limited by time, so not asserted).
    assert "scoring users:   0%" in terminal.getvalue() and "0/10" in terminal.getvalue()


def test_nothing_under_quiet_even_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr_as(terminal := Terminal(), logging.WARNING, monkeypatch)  # what -q sets
    with progress(10, "scoring users") as bar:
        bar.update(10)
        shown = not bar.disable
    assert not shown and terminal.getvalue() == ""


def test_nothing_where_stderr_is_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    stderr_as(log := io.StringIO(), logging.INFO, monkeypatch)  # a log file, a batch job's output
    with progress(10, "scoring users") as bar:
        bar.update(10)
    assert log.getvalue() == ""
