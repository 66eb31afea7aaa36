"""job.core.memory: the peak RSS and CPU time that ``bench`` and ``bench-job`` report per phase."""

from __future__ import annotations

import numpy as np

from job.core.memory import cpu_seconds, peak_rss, reset_peak_rss

MB = 1 << 20


def test_peak_rss_sees_an_allocation_and_reset_forgets_it() -> None:
    now = reset_peak_rss()
    assert now is not None and now > 0  # Linux: the RSS right after the reset
    before = peak_rss()
    block = np.ones(64 * MB, dtype=np.uint8)  # every page written, so resident
    during = peak_rss()
    assert during - before >= 48 * MB
    del block
    # A high-water mark: freeing does not lower it (beyond the kernel's lazily summed
    # per-thread counters, a few pages).
    assert peak_rss() - before >= 48 * MB
    reset_peak_rss()
    assert peak_rss() < during - 32 * MB  # the next phase starts from what is resident now


def test_cpu_seconds_grow_with_work() -> None:
    start = cpu_seconds()
    assert start > 0
    total = sum(int(np.arange(1_000_000).sum()) for _ in range(20))  # some ms of CPU
    assert total > 0 and cpu_seconds() > start
