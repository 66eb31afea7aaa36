"""Encoded ratings and what the scorers read from them, against brute-force numpy."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from job.data.interactions import (
    LIKE_RATING,
    EncodedRatings,
    Interactions,
    SeenPairs,
    is_train,
    liked_matrix,
    popularity_order,
    recency_matrix,
)
from job.data.movielens import HALF_STARS
from job.data.split import TEST, TRAIN, VAL


def rated(seed: int = 0, n_users: int = 7, n_movies: int = 9) -> EncodedRatings:
    rng = np.random.default_rng(seed)
    cells = rng.choice(n_users * n_movies, size=30, replace=False)
    pairs = np.stack([cells // n_movies, cells % n_movies], axis=1)
    return EncodedRatings(pairs, rng.choice(HALF_STARS.values, len(pairs)), n_users, n_movies)


@pytest.mark.parametrize("like_rating", [LIKE_RATING, -np.inf, 5.0])
def test_liked_is_the_dense_reference(like_rating: float) -> None:
    r = rated()
    dense = np.zeros((r.n_users, r.n_movies), np.float32)
    for (user, movie), stars in zip(r.pairs, r.ratings, strict=True):
        if stars >= like_rating:
            dense[user, movie] = 1.0
    np.testing.assert_array_equal(r.liked(like_rating).toarray(), dense)
    np.testing.assert_array_equal(
        r.liked(like_rating).toarray(),
        liked_matrix(r.users, r.movies, r.ratings, r.n_users, r.n_movies, like_rating).toarray(),
    )


def test_where_keeps_the_catalogue_and_the_rows_it_selects() -> None:
    r = rated(1)
    mask = r.ratings >= 3.0
    part = r.where(mask)
    assert (part.n_users, part.n_movies) == (r.n_users, r.n_movies)
    np.testing.assert_array_equal(part.users, r.users[mask])
    np.testing.assert_array_equal(part.movies, r.movies[mask])
    np.testing.assert_array_equal(part.ratings, r.ratings[mask])


def test_split_column_as_codes_or_names() -> None:
    codes = pd.Series([TRAIN, VAL, TEST, TRAIN])
    names = pd.Series(["train", "validation", "test", "train"])
    np.testing.assert_array_equal(is_train(codes), [True, False, False, True])
    np.testing.assert_array_equal(is_train(names), is_train(codes))


def test_popularity_order_most_rated_first_ties_by_index() -> None:
    movies = np.array([3, 1, 3, 1, 0, 2])
    assert popularity_order(movies, 5).tolist() == [1, 3, 0, 2, 4]


def test_interactions_see_every_rating_and_like_the_good_ones() -> None:
    r = rated(2)
    inputs = Interactions.from_ratings(r, np.ones(len(r.ratings), bool), HALF_STARS)
    assert (inputs.n_users, inputs.n_movies) == (r.n_users, r.n_movies)
    seen = inputs.seen.mask(np.arange(r.n_users))
    np.testing.assert_array_equal(seen, r.liked(-np.inf).toarray() > 0)
    np.testing.assert_array_equal(inputs.liked.toarray(), r.liked().toarray())


def test_the_user_movie_matrices_are_made_only_when_first_read() -> None:
    """A preset ranked by predicted rating scores without them (on millions of ratings the
    recency matrix alone is a three-key sort)."""
    r = rated(3)
    stamps = np.random.default_rng(3).integers(0, 10**9, len(r.ratings))
    inputs = Interactions.from_ratings(r, np.ones(len(r.ratings), bool), HALF_STARS, stamps)
    made = ("watched", "liked", "recency")
    assert not any(name in vars(inputs) for name in made)
    assert inputs.recency is not None
    expected = recency_matrix(r.users, r.movies, stamps, r.n_users, r.n_movies)
    np.testing.assert_array_equal(inputs.recency.toarray(), expected.toarray())
    np.testing.assert_array_equal(inputs.watched.toarray(), r.liked(-np.inf).toarray())
    np.testing.assert_array_equal(inputs.liked.toarray(), r.liked().toarray())
    assert all(name in vars(inputs) for name in made)  # and kept for the next block


@pytest.mark.parametrize("shuffled", [False, True], ids=["stored by user", "any order"])
def test_seen_pairs_are_each_users_movies_sorted(shuffled: bool) -> None:
    rng = np.random.default_rng(5)
    dense = rng.random((9, 14)) < 0.3
    dense[4] = False  # a user with no ratings
    users, movies = np.nonzero(dense)  # by user, then movie
    if shuffled:
        order = rng.permutation(len(users))
        users, movies = users[order], movies[order]
    seen = SeenPairs.from_pairs(users, movies, 9, 14)
    np.testing.assert_array_equal(seen.counts, dense.sum(axis=1))
    for user in range(9):
        got = seen.movies[seen.indptr[user] : seen.indptr[user + 1]]
        np.testing.assert_array_equal(got, np.flatnonzero(dense[user]))
    np.testing.assert_array_equal(seen.mask(np.arange(9)), dense)
