"""EASE and the also-liked neighbours against brute-force numpy on tiny seeded data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from scipy import sparse

from job.data.interactions import liked_matrix
from job.models.itemitem import (
    MIN_ROWS_PER_THREAD,
    WatchAndLike,
    also_liked,
    covered_items,
    fit_ease,
    gram,
    sparse_times_dense,
)

N_USERS, N_MOVIES = 40, 15


def random_liked(seed: int = 0, density: float = 0.3) -> sparse.csr_matrix:
    rng = np.random.default_rng(seed)
    return sparse.csr_matrix((rng.random((N_USERS, N_MOVIES)) < density).astype(np.float32))


def closed_form(x: np.ndarray, l2: float) -> np.ndarray:
    """Steck 2019, eq. 8: B = I - P diagMat(1 / diag(P)), P = (X^T X + l2 I)^-1."""
    p = np.linalg.inv(x.T @ x + l2 * np.eye(x.shape[1]))
    return np.eye(x.shape[1]) - p / np.diag(p)[None, :]


@pytest.mark.parametrize("l2", [0.5, 10.0, 400.0])
def test_ease_matches_its_closed_form(l2: float) -> None:
    liked = random_liked(1)
    ease, _ = fit_ease(liked, l2, min_likes=1)
    x = liked.toarray().astype(np.float64)
    np.testing.assert_array_equal(ease.items, np.flatnonzero(x.sum(axis=0) > 0))
    expected = closed_form(x[:, ease.items], l2)
    np.testing.assert_allclose(ease.weights, expected, atol=1e-5)
    assert np.all(np.diag(ease.weights) == 0)
    scores = np.zeros((N_USERS, N_MOVIES))
    scores[:, ease.items] = x[:, ease.items] @ expected
    np.testing.assert_allclose(ease.scores(liked), scores, atol=1e-4)


@pytest.mark.parametrize("workers", [1, 2, 3, 7])
def test_sparse_times_dense_is_the_product_in_any_number_of_chunks(workers: int) -> None:
    rng = np.random.default_rng(5)
    n_rows = 6 * MIN_ROWS_PER_THREAD + 5  # chunks of unequal size, up to 6 of them
    rows = sparse.random(n_rows, 37, density=0.2, format="csr", dtype=np.float32, rng=rng)
    dense = rng.standard_normal((37, 11)).astype(np.float32)
    got = sparse_times_dense(rows, dense, workers=workers)
    np.testing.assert_allclose(got, rows.toarray().astype(np.float64) @ dense, atol=1e-5)
    # Bit for bit the same whatever the chunking: scores do not depend on the machine's cores.
    np.testing.assert_array_equal(got, sparse_times_dense(rows, dense, workers=1))
    assert sparse_times_dense(rows[:0], dense, workers=workers).shape == (0, 11)


def test_covered_items_drop_rare_movies_and_cap_the_most_liked() -> None:
    counts = np.array([0, 1, 2, 5, 3, 9])
    rows = [u for m, c in enumerate(counts) for u in range(c)]
    cols = [m for m, c in enumerate(counts) for _ in range(c)]
    liked = sparse.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(10, 6))
    np.testing.assert_array_equal(covered_items(liked, min_likes=2), [2, 3, 4, 5])
    np.testing.assert_array_equal(covered_items(liked, min_likes=1, max_items=2), [3, 5])


def test_the_reason_is_the_liked_movie_that_adds_most() -> None:
    # Movie 3 is liked by the same people as movie 0; movie 4 by those of movie 1. A user who
    # liked 0 and 1 gets 3 because of 0 and 4 because of 1; a user with no likes, no reason.
    users, movies = [], []
    for u in range(10):
        users += [u, u]
        movies += [0, 3] if u < 5 else [1, 4]
    users += [10, 10]
    movies += [0, 1]
    liked = liked_matrix(np.array(users), np.array(movies), np.full(len(users), 5.0), 12, 5)
    ease, _ = fit_ease(liked, 1.0, min_likes=1)
    reasons = ease.reasons(liked[[10, 11]], np.array([[3, 4, 2], [3, 4, 2]]))
    np.testing.assert_array_equal(reasons, [[0, 1, -1], [-1, -1, -1]])  # 2 is never liked


def test_the_ranker_round_trips_through_its_file(tmp_path: Path) -> None:
    ranker = WatchAndLike(
        watch=fit_ease(random_liked(2), 5.0, min_likes=1)[0],
        like=fit_ease(random_liked(3, density=0.1), 2.0, min_likes=1)[0],
    )
    ranker.save(tmp_path / "ranker.npz")
    again = WatchAndLike.load(tmp_path / "ranker.npz")
    for mine, theirs in ((again.watch, ranker.watch), (again.like, ranker.like)):
        np.testing.assert_array_equal(mine.items, theirs.items)
        np.testing.assert_array_equal(mine.weights, theirs.weights)
        assert (mine.n_movies, mine.l2) == (theirs.n_movies, theirs.l2)
    watched, liked = random_liked(4), random_liked(5, density=0.1)
    np.testing.assert_allclose(
        again.scores(watched, liked),
        ranker.watch.scores(watched) + ranker.like.scores(liked),
        rtol=1e-6,
    )


@pytest.mark.parametrize("k", [1, 3, 20])
def test_also_liked_is_the_shrunk_cosine_top_k(k: int) -> None:
    liked = random_liked(3, density=0.4)
    items = covered_items(liked, min_likes=1)
    g = gram(liked, items)
    table = also_liked(g, items, k, min_likes=12, shrink=2.0)
    counts = np.diag(g)
    placed = counts >= 12
    for movie_index, movie in enumerate(items):
        got = table[table.movie == movie].sort_values("rank")
        if not placed[movie_index]:
            assert got.empty
            continue
        cosine = g[movie_index] / (np.sqrt(counts[movie_index] * counts) + 2.0)
        cosine[~placed] = -np.inf
        cosine[movie_index] = -np.inf
        best = np.argsort(-cosine, kind="stable")[:k]
        best = best[np.isfinite(cosine[best]) & (cosine[best] > 0)]
        np.testing.assert_allclose(got.score, cosine[best], rtol=1e-5)
        np.testing.assert_array_equal(got["rank"], np.arange(1, len(best) + 1))
        assert set(got.other) == set(items[best]) or np.allclose(
            np.sort(cosine[best]),
            np.sort(
                g[movie_index, np.searchsorted(items, got.other)]
                / (np.sqrt(counts[movie_index] * counts[np.searchsorted(items, got.other)]) + 2.0)
            ),
        )
