"""The ranking metrics against a one-user-at-a-time brute-force reference."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from job.data.interactions import popularity_order
from job.data.movielens import HALF_STARS
from job.stages.metrics import constant_scorer, ranking_metrics, top_k_stable


def brute_force(
    scores: np.ndarray,
    seen: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    order: np.ndarray,
    k: int,
    relevant_rating: float = 4.0,
) -> tuple[float, float, float, float, int]:
    """One user at a time, with Python sorting: the definition the vectorised code must match."""
    n_movies = scores.shape[1]
    rank_of = {movie: i for i, movie in enumerate(order)}
    seen_set = set(zip(*seen, strict=True))
    precisions: list[float] = []
    recalls: list[float] = []
    ndcgs: list[float] = []
    shown: set[int] = set()
    for user in sorted(set(held_out[0].tolist())):
        candidates = [m for m in range(n_movies) if (user, m) not in seen_set]
        candidates.sort(key=lambda m: (-scores[user, m], rank_of[m]))
        top = candidates[:k]
        shown.update(top)
        relevant = {
            m for u, m, r in zip(*held_out, strict=True) if u == user and r >= relevant_rating
        }
        if not relevant:
            continue
        hits = [m in relevant for m in top]
        precisions.append(sum(hits) / k)
        recalls.append(sum(hits) / len(relevant))
        dcg = sum(1 / math.log2(i + 2) for i, hit in enumerate(hits) if hit)
        ideal = sum(1 / math.log2(i + 2) for i in range(min(k, len(relevant))))
        ndcgs.append(dcg / ideal)
    return (
        float(np.mean(precisions)),
        float(np.mean(recalls)),
        float(np.mean(ndcgs)),
        len(shown) / n_movies,
        len(precisions),
    )


def random_case(seed: int, n_users: int = 9, n_movies: int = 14, ties: bool = False) -> Any:
    rng = np.random.default_rng(seed)
    scores = (
        rng.integers(0, 3, (n_users, n_movies)).astype("float64")
        if ties
        else rng.normal(size=(n_users, n_movies))
    )
    rated = rng.random((n_users, n_movies)) < 0.5
    held = rated & (rng.random((n_users, n_movies)) < 0.4)
    seen_mask = rated & ~held
    held_users, held_movies = np.nonzero(held)
    held_ratings = rng.choice(HALF_STARS.values, len(held_users))
    seen = tuple(np.nonzero(seen_mask))
    order = popularity_order(seen[1], n_movies)
    return scores, seen, (held_users, held_movies, held_ratings), order


@pytest.mark.parametrize("ties", [False, True], ids=["distinct", "ties"])
@pytest.mark.parametrize(
    "k", [1, 3, 10]
)  # 10 is close to the catalogue: users with fewer candidates than k
@pytest.mark.parametrize("block", [1, 4, 100])
def test_ranking_metrics_match_brute_force(k: int, block: int, ties: bool) -> None:
    scores, seen, held_out, order = random_case(seed=k + block, ties=ties)
    got = ranking_metrics(
        lambda users: scores[users], scores.shape[1], seen, held_out, order, k=k, block=block
    )
    assert got is not None
    expected = brute_force(scores, seen, held_out, order, k)
    assert (got.precision, got.recall, got.ndcg, got.coverage, got.n_users) == pytest.approx(
        expected
    )


@pytest.mark.parametrize("seed", range(6))
def test_top_k_stable_is_the_stable_full_sort(seed: int) -> None:
    rng = np.random.default_rng(seed)
    b, n = 7, 300
    # Few distinct values (many ties), some -inf (seen), a constant row, short rows.
    scores = rng.integers(0, 3 if seed % 2 else 1000, (b, n)).astype(float)
    scores[rng.random((b, n)) < 0.3] = -np.inf
    scores[0] = 1.0
    for k in (1, 10, 299, 300, 400):
        expected = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        np.testing.assert_array_equal(top_k_stable(scores, k), expected)


def test_a_constant_score_ranks_by_popularity() -> None:
    """The global-mean baseline's ties are broken by training popularity, then by index."""
    seen = (np.array([0, 1, 1, 2, 2, 2]), np.array([3, 3, 1, 3, 1, 0]))  # popularity: 3 > 1 > 0
    np.testing.assert_array_equal(popularity_order(seen[1], 5), [3, 1, 0, 2, 4])
    # user 3 has seen nothing: its top 2 are the two most popular movies, one of them relevant
    held_out = (np.array([3, 3]), np.array([1, 4]), np.array([4.0, 2.0]))
    got = ranking_metrics(
        constant_scorer(np.full(5, 3.5)), 5, seen, held_out, popularity_order(seen[1], 5), k=2
    )
    assert got is not None
    assert got.precision == 0.5 and got.recall == 1.0 and got.coverage == 2 / 5
    assert got.ndcg == pytest.approx((1 / math.log2(3)) / 1.0)


def test_no_relevant_movie_means_no_ranking_metrics() -> None:
    held_out = (np.array([0]), np.array([1]), np.array([2.5]))
    got = ranking_metrics(
        constant_scorer(np.zeros(3)), 3, (np.array([0]), np.array([0])), held_out, np.arange(3)
    )
    assert got is None
