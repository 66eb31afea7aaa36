"""Every signal handler of the job (job.core.signals): what each turns SIGINT and SIGTERM into."""

from __future__ import annotations

import signal

import pytest

from job.core.signals import Interrupts, SignalsDeferred, ignore_from_now, ignore_interrupts


@pytest.mark.parametrize(
    ("number", "code", "line"),
    [(signal.SIGINT, 130, "interrupted"), (signal.SIGTERM, 143, "terminated (SIGTERM)")],
)
def test_interrupts_raise_once_and_report(number: int, code: int, line: str) -> None:
    before = signal.getsignal(number)
    with Interrupts() as interrupts, pytest.raises(KeyboardInterrupt):
        signal.raise_signal(number)
    assert (interrupts.received, interrupts.code, interrupts.describe()) == (number, code, line)
    assert signal.getsignal(number) is before, "the previous handler is back"


def test_deferred_signals_arrive_when_the_block_ends() -> None:
    reached_end_of_block = False
    with (
        Interrupts() as interrupts,
        pytest.raises(KeyboardInterrupt),
        SignalsDeferred() as held,
    ):
        held.hold()
        signal.raise_signal(signal.SIGTERM)
        reached_end_of_block = True
    assert reached_end_of_block and interrupts.received == signal.SIGTERM


def test_ignoring_handlers() -> None:
    saved = {n: signal.getsignal(n) for n in (signal.SIGINT, signal.SIGTERM)}
    try:
        ignore_interrupts()
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        ignore_from_now()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        for number, handler in saved.items():
            signal.signal(number, handler)
