"""The benchmark at a tiny size: it runs and reports; no timing is asserted (speed lives in
`python -m job bench`, not in unit tests)."""

from __future__ import annotations

import numpy as np
import pytest

from job.bench import SHAPES, format_report, resolve_shape, run_bench, synthetic_ratings
from job.cli import main
from job.errors import ConfigError


def test_shapes_scale_ratings_with_users() -> None:
    full = resolve_shape("ml-32m", None, None, None)
    assert (full.name, full.users, full.movies, full.ratings) == ("ml-32m", *SHAPES["ml-32m"])
    half = resolve_shape("ml-32m", full.users // 2, None, None)
    assert half.name == "ml-32m-like"
    assert half.ratings == pytest.approx(full.ratings / 2, rel=1e-4)
    custom = resolve_shape(None, 10, 20, 50)
    assert (custom.users, custom.movies, custom.ratings) == (10, 20, 50)
    with pytest.raises(ConfigError, match="--shape"):
        resolve_shape("ml-99m", None, None, None)
    with pytest.raises(ConfigError, match="--users"):
        resolve_shape(None, 0, None, None)


def test_synthetic_ratings_are_distinct_and_long_tailed() -> None:
    shape = resolve_shape(None, 200, 500, 20_000)
    users, movies, ratings = synthetic_ratings(shape, seed=1)
    keys = users.astype(np.int64) * shape.movies + movies
    assert len(np.unique(keys)) == len(keys) > 0.97 * shape.ratings
    per_user = np.bincount(users, minlength=shape.users)
    assert per_user.min() >= 20 and per_user.max() > 5 * np.median(per_user)
    per_movie = np.sort(np.bincount(movies, minlength=shape.movies))[::-1]
    assert per_movie[:50].sum() > 3 * per_movie[-50:].sum()  # a popular head, a long tail
    assert set(np.unique(ratings)) <= {0.5 * i for i in range(1, 11)}


def test_tiny_bench_runs_and_reports() -> None:
    result = run_bench(users=30, movies=60, ratings=900, top_k=5, block_users=7, reference_users=2)
    assert result.fast.users == 30 and result.article.users == 2
    assert result.fast.pairs == 30 * 60 - result.n_ratings
    assert result.max_difference < 1e-4  # the fast path agrees with model.predict
    report = format_report(result)
    for text in ("random (untrained) weights", "speed-up", "pairs/s", "peak RSS", "agree"):
        assert text in report


def test_bench_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-q", "bench", "--users", "12", "--movies", "40", "--reference-users", "1"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "synthetic custom-size catalogue: 12 users x 40 movies" in out
    assert main(["-q", "bench", "--reference-users", "0"]) == 2
