"""job.data.synthetic: MovieLens-shaped synthetic data, seeded, for the benchmarks and the tests."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from job.core.errors import ConfigError
from job.data.movielens import load_folder
from job.data.synthetic import SHAPES, resolve_shape, synthetic_ratings, write_movielens


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


def digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_seeded_folder_is_reproducible_and_reads_as_movielens(tmp_path: Path) -> None:
    first = write_movielens(tmp_path / "a", n_users=30, n_movies=50, per_user=12, seed=7)
    again = write_movielens(tmp_path / "b", n_users=30, n_movies=50, per_user=12, seed=7)
    other = write_movielens(tmp_path / "c", n_users=30, n_movies=50, per_user=12, seed=8)
    assert digests(first) == digests(again)  # same seed, same bytes
    assert digests(first)["ratings.csv"] != digests(other)["ratings.csv"]
    assert {"ratings.csv", "movies.csv", "tags.csv", "links.csv"} <= set(digests(first))

    dataset = load_folder(first, "synthetic")  # the job's own reader, with its validation
    ratings = dataset.ratings
    assert len(ratings) == 30 * 12
    assert ratings.groupby("user_id").size().eq(12).all()  # per_user each, no activity tail
    assert set(ratings["movie_id"]) <= set(dataset.movies["movie_id"])
    assert len(dataset.movies) == 50
    assert set(ratings["rating"]) <= {0.5 * i for i in range(1, 11)}


def _bias_fit(users: np.ndarray, movies: np.ndarray, ratings: np.ndarray, damping: float = 5.0):
    """User+movie bias by alternating damped means (a brute-force version of the baseline)."""
    mean = float(ratings.mean())
    b_user = np.zeros(users.max() + 1)
    b_movie = np.zeros(movies.max() + 1)
    for _ in range(10):
        r = ratings - mean - b_user[users]
        b_movie = np.bincount(movies, weights=r, minlength=len(b_movie)) / (
            np.bincount(movies, minlength=len(b_movie)) + damping
        )
        r = ratings - mean - b_movie[movies]
        b_user = np.bincount(users, weights=r, minlength=len(b_user)) / (
            np.bincount(users, minlength=len(b_user)) + damping
        )
    return mean, b_user, b_movie


def _als(users: np.ndarray, movies: np.ndarray, centred: np.ndarray, shape, k: int = 8):
    """Regularised alternating least squares, one small solve per user and movie."""
    rng = np.random.default_rng(0)
    u = rng.normal(0, 0.1, (shape.users, k))
    v = rng.normal(0, 0.1, (shape.movies, k))
    for _ in range(8):
        for rows, cols, fixed, solved in ((users, movies, v, u), (movies, users, u, v)):
            for i in range(len(solved)):
                mine = rows == i
                a = fixed[cols[mine]]
                solved[i] = np.linalg.solve(a.T @ a + 5.0 * np.eye(k), a.T @ centred[mine])
    return u @ v.T


@pytest.mark.parametrize("signal", ["genre", "latent"])
def test_latent_signal_has_no_bias_to_learn_and_genre_signal_has(signal: str) -> None:
    """With signal="latent" the global mean is the best rating baseline (user and movie
    biases fitted on one half only add noise on the other); the interaction u . v is there:
    a user's ratings of two movies correlate with the movies' co-ratings. With "genre" the
    bias baseline is clearly better than the global mean."""
    shape = resolve_shape(None, 400, 600, 40_000)
    data = synthetic_ratings(shape, seed=4, signal=signal)
    assert 3.0 < float(data.ratings.mean()) < 4.0 and 0.7 < float(data.ratings.std()) < 1.3
    half = np.random.default_rng(0).random(len(data)) < 0.5
    fit, held = half, ~half
    mean, b_user, b_movie = _bias_fit(data.users[fit], data.movies[fit], data.ratings[fit])
    truth = data.ratings[held]
    rmse_global = float(np.sqrt(np.mean((truth - mean) ** 2)))
    bias_pred = mean + b_user[data.users[held]] + b_movie[data.movies[held]]
    rmse_bias = float(np.sqrt(np.mean((truth - bias_pred) ** 2)))
    if signal == "latent":
        assert rmse_bias > rmse_global - 0.005
        # The interaction: rank-8 factors fitted by alternating least squares on the fit
        # half predict the held half far better than the global mean.
        pred = (
            mean
            + _als(data.users[fit], data.movies[fit], data.ratings[fit] - mean, shape)[
                data.users[held], data.movies[held]
            ]
        )
        rmse_svd = float(np.sqrt(np.mean((truth - np.clip(pred, 0.5, 5)) ** 2)))
        assert rmse_svd < rmse_global - 0.1
    else:
        assert rmse_bias < rmse_global - 0.1


def test_an_unknown_signal_is_one_line_naming_the_choices(tmp_path: Path) -> None:
    from job.core.errors import ConfigError
    from job.data.synthetic import write_movielens_folder

    with pytest.raises(
        ConfigError, match="unknown synthetic signal 'bias': use one of genre, latent"
    ):
        write_movielens_folder(tmp_path / "x", resolve_shape(None, 10, 20, 200), signal="bias")
    assert not (tmp_path / "x").exists()
