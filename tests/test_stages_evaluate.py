"""Rating errors, ranking metrics against a brute-force reference, and evaluate's rows."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from job.core.baselines import BASELINE_NAMES
from job.core.config import model_config
from job.data.features import SideFeatures
from job.data.interactions import EncodedRatings, popularity_order
from job.data.movielens import HALF_STARS
from job.models.rating import build_model
from job.stages.evaluate import (
    RANK_K,
    HeldOut,
    Metrics,
    accuracy,
    constant_scorer,
    evaluate,
    ranking_metrics,
    sample,
    top_k_stable,
)


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


def test_accuracy_counts_exact_ratings() -> None:
    assert accuracy(np.array([4.0, 3.5, 1.0]), np.array([4.0, 3.0, 1.0])) == pytest.approx(2 / 3)
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_metrics_rows_keep_the_existing_keys() -> None:
    row = Metrics("seed", 0.9, 0.7, 10).as_dict()
    assert list(row)[:4] == ["model", "rmse", "mae", "n"]
    assert {
        "accuracy",
        "precision_at_10",
        "recall_at_10",
        "ndcg_at_10",
        "coverage_at_10",
        "training_seconds",
    } <= set(row)
    assert RANK_K == 10


@pytest.mark.parametrize(("output", "ranker"), [("regression", "rating"), ("classes", "ease")])
def test_evaluate_reports_every_model_and_baseline(output: str, ranker: str) -> None:
    rng = np.random.default_rng(0)
    n_users, n_movies, n = 12, 20, 150
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, n), rng.integers(0, n_movies, n)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    held_out = rng.random(len(pairs)) < 0.3
    train_mask = ~held_out
    config = model_config(
        "seed", architecture="dlrm", output=output, biases=True, ranker=ranker, ease_l2=1.0
    )
    model = build_model(
        config,
        n_users,
        n_movies,
        float(ratings.mean()),
        seed=0,
        scale=HALF_STARS,
        side=SideFeatures.empty(n_movies),
    )
    rated = EncodedRatings(pairs, ratings, n_users, n_movies)
    rows = evaluate(
        "m",
        model,
        HeldOut(rated, train_mask, held_out, HALF_STARS),
        config,
        training_seconds=1.23456,
    ).rows
    assert [r.model for r in rows] == ["m", *BASELINE_NAMES]
    # The ranking baselines predict no rating.
    assert [r.model for r in rows if r.rmse is None] == ["popularity", "EASE"]
    assert all(r.ranked_users == rows[0].ranked_users for r in rows)
    assert rows[0].training_seconds == 1.235
    assert all(r.training_seconds is not None for r in rows)
    assert (rows[0].accuracy is not None) == (output == "classes")
    assert all(r.accuracy is None for r in rows[1:])
    for r in rows:
        assert r.n == int(held_out.sum())
        if r.rmse is None:
            continue
        assert r.ndcg_at_10 is not None and 0 <= r.ndcg_at_10 <= 1
        assert r.coverage_at_10 is not None and 0 < r.coverage_at_10 <= 1


def test_sampled_ranking_metrics_equal_the_full_ones_when_the_sample_is_everyone() -> None:
    rng = np.random.default_rng(4)
    n_users, n_movies, n = 30, 25, 400
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, n), rng.integers(0, n_movies, n)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    held_out = rng.random(len(pairs)) < 0.3
    config = model_config("seed", ranker="ease", ease_l2=1.0)
    model = build_model(config, n_users, n_movies, float(ratings.mean()), seed=0, scale=HALF_STARS)
    split = HeldOut(
        EncodedRatings(pairs, ratings, n_users, n_movies), ~held_out, held_out, HALF_STARS
    )

    def run(sample_users: int) -> list[Metrics]:
        return evaluate("m", model, split, config, sample_users=sample_users).rows

    def ranking(rows: list[Metrics]) -> list[tuple]:
        return [(r.ndcg_at_10, r.precision_at_10, r.coverage_at_10, r.ranked_users) for r in rows]

    everyone = len(np.unique(pairs[held_out, 0]))
    assert ranking(run(everyone)) == ranking(run(10**6))
    sampled = run(5)
    assert all(r.ranked_users is not None and r.ranked_users <= 5 for r in sampled)
    assert ranking(sampled) != ranking(run(everyone))
    np.testing.assert_array_equal(sample(np.arange(7), 7, seed=1), np.arange(7))
    picked = sample(np.arange(100), 10, seed=1)
    assert len(set(picked)) == 10 and list(picked) == sorted(picked)
    np.testing.assert_array_equal(picked, sample(np.arange(100), 10, seed=1))  # seeded


def test_the_default_asks_both_questions_where_picking_and_liking_are_independent(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On data where which movies a user rates follows popularity alone and how they rate
    follows taste (``signal="independent"``), the ranker's rating weight, chosen on the
    validation split, puts it ahead of popularity and EASE. The rating model here is one
    that has learnt the taste exactly (its predictions are the generator's noise-free
    ratings): what is tested is the ranking's use of it, not Keras' learning."""
    from job.data.interactions import EncodedRatings
    from job.data.split import TEST, TRAIN, VAL
    from job.data.synthetic import Shape, _latent_interaction, synthetic_ratings
    from job.models.rank import BlockScorer

    n_users, n_movies = 150, 60
    data = synthetic_ratings(
        Shape("t", n_users, n_movies, n_users * 30), seed=3, signal="independent"
    )
    truth = 3.5 + _latent_interaction(
        np.repeat(np.arange(n_users), n_movies),
        np.tile(np.arange(n_movies), n_users),
        n_users,
        n_movies,
        3,
    ).reshape(n_users, n_movies)
    labels = np.random.default_rng(0).choice([TRAIN, VAL, TEST], len(data), p=[0.7, 0.15, 0.15])
    pairs = np.stack([data.users, data.movies], axis=1).astype(np.int64)
    ratings = data.ratings.astype(np.float64)
    config = model_config("seed", ranker="ease", ease_l2=10.0, ease_watch_l2=10.0)
    model = build_model(config, n_users, n_movies, 3.5, seed=0, scale=HALF_STARS)
    monkeypatch.setattr(
        BlockScorer,
        "candidate_ratings",
        lambda self, users, rows, movies: truth[np.asarray(users)[rows], movies],
    )
    split = HeldOut(
        EncodedRatings(pairs, ratings, n_users, n_movies),
        labels == TRAIN,
        labels == TEST,
        HALF_STARS,
        data.timestamps,
    )
    evaluation = evaluate("m", model, split, config)
    assert evaluation.ranker is not None and evaluation.ranker.rating_weight > 0
    ndcg = {row.model: row.ndcg_at_10 or 0.0 for row in evaluation.rows}
    assert ndcg["m"] > ndcg["popularity"] and ndcg["m"] > ndcg["EASE"], ndcg
