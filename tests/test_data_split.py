"""Splits: seeded, disjoint, the right sizes; temporal puts each user's latest ratings in test."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from job.data.split import TEST, TRAIN, VAL, split_ratings


@pytest.fixture
def ratings() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 2000
    return pd.DataFrame(
        {
            "user_id": rng.integers(0, 50, n),
            "movie_id": np.arange(n),
            "timestamp": rng.integers(0, 10**9, n),
        }
    )


def test_random_split_sizes_and_seed(ratings: pd.DataFrame) -> None:
    labels = split_ratings(ratings, "random", 0.1, 0.1, seed=1)
    # Each rating draws its label: the counts are binomial (sd ~13 for 200 of 2000).
    counts = np.bincount(labels, minlength=3)
    assert abs(counts[VAL] - 200) < 60 and abs(counts[TEST] - 200) < 60
    assert np.array_equal(labels, split_ratings(ratings, "random", 0.1, 0.1, seed=1))
    assert not np.array_equal(labels, split_ratings(ratings, "random", 0.1, 0.1, seed=2))


def test_random_labels_do_not_move_when_ratings_are_added(ratings: pd.DataFrame) -> None:
    """A warm start trains on an earlier dataset: its training ratings must stay training
    ratings, whatever was added (and in whatever order the file lists them)."""
    rng = np.random.default_rng(7)
    grown = pd.concat(
        [
            ratings,
            pd.DataFrame(
                {
                    "user_id": rng.integers(0, 80, 500),
                    "movie_id": rng.integers(5000, 9000, 500),
                    "timestamp": rng.integers(0, 10**9, 500),
                }
            ),
        ],
        ignore_index=True,
    ).sample(frac=1.0, random_state=3)
    earlier = split_ratings(ratings, "random", 0.1, 0.1, seed=5)
    later = pd.Series(split_ratings(grown, "random", 0.1, 0.1, seed=5), index=grown.index)
    assert np.array_equal(later.sort_index().to_numpy()[: len(ratings)], earlier)


def test_zero_test_fraction_keeps_no_test(ratings: pd.DataFrame) -> None:
    for kind in ("random", "temporal"):
        labels = split_ratings(ratings, kind, 0.0, 0.1, seed=1)
        assert (labels == TEST).sum() == 0
        assert (labels == VAL).sum() > 0


def test_temporal_split_is_per_user_and_in_time_order(ratings: pd.DataFrame) -> None:
    labels = split_ratings(ratings, "temporal", 0.2, 0.1, seed=0)
    frame = ratings.assign(label=labels)
    for _, user in frame.groupby("user_id"):
        if (user.label == TEST).any() and (user.label == TRAIN).any():
            assert (
                user[user.label == TEST].timestamp.min()
                >= user[user.label == TRAIN].timestamp.max()
            )
    assert 0.15 < (labels == TEST).mean() < 0.25
