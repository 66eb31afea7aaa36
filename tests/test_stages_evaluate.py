"""Rating errors, the baselines, and evaluate's rows (the ranking metrics themselves:
test_stages_metrics.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from job.core.baselines import BASELINE_NAMES
from job.core.config import model_config
from job.data.features import SideFeatures
from job.data.interactions import EncodedRatings
from job.data.movielens import HALF_STARS
from job.models.rating import build_model
from job.stages.evaluate import HeldOut, Metrics, accuracy, evaluate, sample
from job.stages.metrics import RANK_K


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
