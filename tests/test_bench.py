"""The benchmark at a tiny size: it runs and reports; no timing is asserted (speed lives in
`python -m job bench`, not in unit tests)."""

from __future__ import annotations

import numpy as np
import pytest

from job.bench import BenchOptions, format_report, run_bench
from job.cli import main
from job.errors import ConfigError
from job.synthetic import SHAPES, resolve_shape, synthetic_ratings


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
    data = synthetic_ratings(shape, seed=1)
    users, movies, ratings = data.users, data.movies, data.ratings
    keys = users.astype(np.int64) * shape.movies + movies
    assert len(np.unique(keys)) == len(keys) > 0.97 * shape.ratings
    per_user = np.bincount(users, minlength=shape.users)
    assert per_user.min() >= 20 and per_user.max() > 5 * np.median(per_user)
    per_movie = np.sort(np.bincount(movies, minlength=shape.movies))[::-1]
    assert per_movie[:50].sum() > 3 * per_movie[-50:].sum()  # a popular head, a long tail
    assert set(np.unique(ratings)) <= {0.5 * i for i in range(1, 11)}


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
        )
    )
    assert result.fast.users == 30 and result.article.users == 2
    assert result.fast.pairs == 30 * 60 - result.n_ratings
    assert result.max_difference < 1e-4  # the fast path agrees with model.predict
    report = format_report(result)
    for text in ("random (untrained) weights", "speed-up", "pairs/s", "peak RSS", "agree"):
        assert text in report
    assert (result.ranker, result.model_name) == (
        ("ease", "DLRMModel") if preset == "tuned" else ("rating", "RatingModel")
    )


def test_bench_cli(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["-q", "bench", "--users", "12", "--movies", "40", "--reference-users", "1"]
    args += ["--preset", "seed"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "synthetic custom-size catalogue: 12 users x 40 movies" in out
    assert main(["-q", "bench", "--reference-users", "0"]) == 2


def test_synthetic_ratings_carry_a_learnable_signal() -> None:
    """Ratings depend on user taste x movie genre: beyond the user's own mean, how a user rated
    half of their movies of a genre predicts how they rated the other half."""
    shape = resolve_shape(None, 300, 2_000, 60_000)
    data = synthetic_ratings(shape, seed=2)
    assert 3.0 < float(data.ratings.mean()) < 4.0 and 0.7 < float(data.ratings.std()) < 1.3
    centred = (
        data.ratings
        - (np.bincount(data.users, weights=data.ratings) / np.bincount(data.users))[data.users]
    )
    cell = data.users.astype(np.int64) * 32 + data.catalogue.genre[data.movies]
    half = np.arange(len(cell)) % 2
    sums = [
        np.bincount(cell[half == h], weights=centred[half == h], minlength=300 * 32) for h in (0, 1)
    ]
    counts = [np.bincount(cell[half == h], minlength=300 * 32) for h in (0, 1)]
    both = (counts[0] >= 3) & (counts[1] >= 3)
    means = [sums[h][both] / counts[h][both] for h in (0, 1)]
    assert both.sum() > 500 and np.corrcoef(means[0], means[1])[0, 1] > 0.4
