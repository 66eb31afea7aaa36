"""What makes the job fit large datasets, checked on small ones: the training settings at
scale, and the typed fast path for ratings.csv (same frame as the checked string path)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

import job.data.movielens
from job.core.config import model_config
from job.data.movielens import SHIPPED_DIR, _read_csv_layout
from job.data.synthetic import write_movielens


def _string_path(folder: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    with monkeypatch.context() as patch:
        patch.setattr(job.data.movielens, "_typed_ratings", lambda path: None)
        return _read_csv_layout(folder)[0]


@pytest.mark.parametrize("folder", ["shipped", "synthetic"])
def test_typed_ratings_fast_path_reads_what_the_string_path_reads(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = (
        SHIPPED_DIR / "ml-latest-small"
        if folder == "shipped"
        else write_movielens(tmp_path / "data", n_users=20, n_movies=30, per_user=8)
    )
    assert job.data.movielens._typed_ratings(path / "ratings.csv") is not None  # the fast path ran
    pd.testing.assert_frame_equal(_read_csv_layout(path)[0], _string_path(path, monkeypatch))


@pytest.mark.parametrize(
    "line", ["abc,10,4.0,1000", "1,10,,1000", "1,10,nan,1000", "1,10.5,4.0,1000", "1,10,4.0"]
)
def test_typed_ratings_leave_anything_unusual_to_the_string_path(line: str, tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "data", n_users=5, n_movies=8, per_user=3)
    path = folder / "ratings.csv"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    assert job.data.movielens._typed_ratings(path) is None


@pytest.mark.parametrize("preset", ["seed", "tuned"])
def test_ranked_top_k_alone_equals_the_full_block(preset: str) -> None:
    """With a ranker and no full rating matrix asked for, the scorer runs the rating model on
    the top K picks only: the same picks, scores and ratings as the full block."""
    import numpy as np

    from job.data.features import SideFeatures
    from job.data.interactions import EncodedRatings, Interactions
    from job.data.movielens import HALF_STARS
    from job.models.itemitem import WatchAndLike, fit_ease
    from job.models.rank import BlockScorer
    from job.models.rating import build_model

    rng = np.random.default_rng(3)
    n_users, n_movies = 31, 45
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, 500), rng.integers(0, n_movies, 500)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    is_train = ~np.isin(pairs[:, 0], (2, 9)) & (pairs[:, 1] != 7)  # cold users and a movie
    rated = EncodedRatings(pairs, ratings, n_users, n_movies)
    inputs = Interactions.from_ratings(rated, is_train, HALF_STARS)
    ranker = WatchAndLike(
        watch=fit_ease(inputs.watched, 3.0, min_likes=1)[0],
        like=fit_ease(inputs.liked, 2.0, min_likes=1)[0],
    )
    side = SideFeatures(
        rng.integers(0, 2, (n_movies, 4)).astype("float32"),
        rng.normal(size=(n_movies, 2)).astype("float32"),
        rng.dirichlet(np.ones(3), n_movies).astype("float32"),
    )
    model = build_model(model_config(preset), n_users, n_movies, 3.5, 0, HALF_STARS, side)
    users = np.arange(n_users, dtype="int32")
    full = BlockScorer(model, inputs, 6, 8, with_ratings=True, ranker=ranker)
    picks = BlockScorer(model, inputs, 6, 8, with_ratings=False, ranker=ranker)
    for start in range(0, n_users, 8):
        a, b = full(users[start : start + 8]), picks(users[start : start + 8])
        np.testing.assert_array_equal(a.top_movies, b.top_movies)
        np.testing.assert_allclose(a.top_scores, b.top_scores, rtol=1e-6)
        np.testing.assert_allclose(a.top_ratings, b.top_ratings, rtol=1e-5, atol=1e-5)
