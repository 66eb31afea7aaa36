"""bench.publish: the publishing benchmark, at a size a unit test can afford."""

from __future__ import annotations

from pathlib import Path

import pytest
from bench.publish import bench_publish, make_synthetic_out


def test_bench_publish_runs_at_a_small_size(
    aws_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark end to end at a size a unit test can afford; no timing is asserted."""
    assert len([p for p in make_synthetic_out(tmp_path, 25).rglob("*") if p.is_file()]) == 25
    result = bench_publish(30)
    assert (result["objects"], result["first_uploaded"], result["rerun_uploaded"]) == (30, 30, 0)
    # The first sends every object, the run's completion marker, the two entry points and the
    # runs index; the unchanged re-run sends nothing.
    assert (result["first_puts"], result["rerun_puts"]) == (34, 0)
    table = capsys.readouterr().out
    assert "first" in table and "re-run" in table and "objects/s" in table and "PUTs" in table
