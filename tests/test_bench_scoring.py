"""The benchmark at a tiny size: it runs and reports; no timing is asserted (speed lives in
`python -m job bench`, not in unit tests)."""

from __future__ import annotations

import pytest
from bench.__main__ import main
from bench.scoring import BenchOptions, format_report, run_bench


@pytest.mark.parametrize("preset", ["seed", "tuned"])
def test_tiny_bench_runs_and_reports(preset: str) -> None:
    result = run_bench(
        BenchOptions(
            users=30,
            movies=60,
            ratings=900,
            top_k=5,
            block_users=7,
            reference_users=2,
            preset=preset,
            whole_process=preset == "tuned",  # a Keras process each: once is enough
        )
    )
    assert result.fast.users == 30 and result.article.users == 2
    assert result.fast.pairs == 30 * 60 - result.n_ratings
    if preset == "tuned":
        # `python -m job score` on a run folder of the same data scored the same pairs.
        assert result.whole is not None
        assert (result.whole.users, result.whole.pairs) == (30, result.fast.pairs)
        assert "whole process" in format_report(result)
        # the kernel's share and the imports are reported apart from the stage
        assert result.whole.minor_faults and result.whole.system_seconds is not None
        assert result.imports is not None and result.imports.minor_faults
        assert "of which imports" in format_report(result)
    else:
        assert result.whole is None and result.imports is None
    assert result.max_difference < 1e-4  # the fast path agrees with model.predict
    report = format_report(result)
    assert result.fast.minor_faults is not None and result.fast.system_seconds is not None
    for text in (
        "random (untrained) weights",
        "speed-up",
        "pairs/s",
        "peak RSS",
        "agree",
        "sys s",
        "minor faults",
    ):
        assert text in report
    assert (result.ranker, result.model_name) == (
        ("ease", "DLRMModel") if preset == "tuned" else ("rating", "RatingModel")
    )


def test_bench_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-q", "scoring", "--users", "12", "--movies", "40", "--reference-users", "1"]
    args += ["--preset", "seed", "--no-whole-process"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "synthetic custom-size catalogue: 12 users x 40 movies" in out
    assert main(["-q", "scoring", "--reference-users", "0"]) == 2
