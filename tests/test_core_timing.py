"""The one timer: labelled wall and CPU seconds, and a process's start-up from /proc."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from job.core import timing
from job.core.timing import Stopwatch, first_stage_startup, process_age


def test_stopwatch_records_each_label_in_order_and_adds_repeats() -> None:
    watch = Stopwatch()
    with watch.time("read"):
        sum(range(1000))
    with watch.time("write"):
        pass
    with watch.time("read"):
        pass
    assert list(watch.seconds) == ["read", "write"] == list(watch.cpu_seconds)
    assert all(v >= 0 for v in [*watch.seconds.values(), *watch.cpu_seconds.values()])
    assert watch.total() == pytest.approx(sum(watch.seconds.values()))


def test_a_step_that_raises_records_nothing() -> None:
    watch = Stopwatch()
    with pytest.raises(RuntimeError), watch.time("broken"):
        raise RuntimeError("no")
    assert watch.seconds == {}


def fake_proc(root: Path, stat: str, uptime: str) -> Path:
    (root / "self").mkdir(parents=True)
    (root / "self" / "stat").write_text(stat)
    (root / "uptime").write_text(uptime)
    return root


def test_process_age_reads_the_start_after_the_command_name(tmp_path: Path) -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    # Field 22 is the start in clock ticks after boot; a name with spaces and ")" must not
    # shift the fields.
    fields = ["S", *["0"] * 18, str(100 * ticks)]
    stat = "1234 (a b) c) " + " ".join(fields) + " 0 0\n"
    proc = fake_proc(tmp_path, stat, "104.5 300.0\n")
    assert process_age(proc) == pytest.approx(4.5)


def test_process_age_is_none_where_proc_does_not_say(tmp_path: Path) -> None:
    assert process_age(tmp_path / "nowhere") is None
    assert process_age(fake_proc(tmp_path, "garbage", "1.0 1.0")) is None


def test_this_process_has_an_age() -> None:
    age = process_age()
    assert age is None or age >= 0


def test_only_the_first_stage_of_a_process_gets_the_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(timing, "_startup_taken", False)
    monkeypatch.setattr(timing, "process_age", lambda: 4.2)
    assert first_stage_startup() == 4.2
    assert first_stage_startup() is None
