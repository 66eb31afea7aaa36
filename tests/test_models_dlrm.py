"""The DLRM model: side features carry signal the ids alone cannot learn, and its saved
configuration keeps the flat keys of every model.keras."""

from __future__ import annotations

import numpy as np
import pytest

from job.core.config import model_config
from job.data.features import (
    SideFeatures,
)
from job.data.interactions import EncodedRatings
from job.models.dlrm import DLRMModel, SideColumns
from job.models.rating import build_model, predict_ratings
from job.stages.fit import FitOptions, train

# ---------------------------------------------------------------------------------------
# Side features carry signal the ids alone cannot learn


def genre_only_ratings(seed: int = 0) -> tuple[np.ndarray, np.ndarray, SideFeatures]:
    """Ratings that depend only on the user's taste for the movie's genre.

    Many movies with few ratings each: a movie's embedding cannot be learnt from its own
    ratings, its genre (shared with a quarter of the catalogue) can.
    """
    rng = np.random.default_rng(seed)
    n_users, n_movies, n_genres, per_user = 40, 400, 4, 50
    genre_of = rng.integers(0, n_genres, n_movies)
    taste = rng.choice([-1.5, 1.5], size=(n_users, n_genres))
    users = np.repeat(np.arange(n_users), per_user)
    movies = np.concatenate([rng.choice(n_movies, per_user, replace=False) for _ in range(n_users)])
    raw = 3.0 + taste[users, genre_of[movies]] + rng.normal(0, 0.25, len(users))
    ratings = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
    genres = np.eye(n_genres, dtype="float32")[genre_of]
    side = SideFeatures(
        genres, np.zeros((n_movies, 2), "float32"), np.zeros((n_movies, 1), "float32")
    )
    return np.stack([users, movies], axis=1), ratings, side


@pytest.mark.slow  # trains or starts processes: `make test` only
def test_dlrm_beats_id_only_model_when_genre_carries_the_signal() -> None:
    pairs, ratings, side = genre_only_ratings()
    n_users, n_movies = int(pairs[:, 0].max()) + 1, side.n_movies
    order = np.random.default_rng(1).permutation(len(ratings))
    train_i, val_i, test_i = np.split(order, [int(0.8 * len(order)), int(0.9 * len(order))])
    common = {
        "biases": True,
        "epochs": 10,
        "patience": 2,
        "restore_best_weights": True,
        "batch_size": 64,
        "learning_rate": 3e-3,
    }
    errors = {}
    for name, overrides in {"id-only": {}, "dlrm": {"architecture": "dlrm", "side_dim": 8}}.items():
        config = model_config("seed", **common, **overrides)
        rated = EncodedRatings(pairs, ratings, n_users, n_movies)
        result = train(
            config,
            rated.where(train_i),
            rated.where(val_i),
            FitOptions(seed=0, verbose=0, side=side),
        )
        predicted = np.clip(
            predict_ratings(result.model, pairs[test_i, 0], pairs[test_i, 1]), 0.5, 5.0
        )
        errors[name] = float(np.sqrt(np.mean((predicted - ratings[test_i]) ** 2)))
    assert errors["dlrm"] < 0.6 < errors["id-only"], errors


# ---------------------------------------------------------------------------------------
# The side-feature columns: grouped in the model, flat in its saved configuration


def test_side_columns_describe_the_tables() -> None:
    side = SideFeatures(
        np.zeros((3, 2), "float32"),
        np.zeros((3, 2), "float32"),
        np.zeros((3, 4), "float32"),
        genre_names=("Drama", "Comedy"),
        tag_names=("a", "b", "c", "d"),
    )
    assert SideColumns.of(side) == SideColumns(2, 4, ("Drama", "Comedy"), ("a", "b", "c", "d"))
    assert SideColumns.of(SideFeatures.empty(3)) == SideColumns()


def test_saved_configuration_keeps_the_flat_keys_and_reloads() -> None:
    side = SideFeatures(
        np.eye(3, dtype="float32"),
        np.zeros((3, 2), "float32"),
        np.ones((3, 1), "float32"),
        genre_names=("Drama", "Comedy", "Horror"),
        tag_names=("dark",),
    )
    model = build_model(model_config("seed", architecture="dlrm"), 2, 3, 3.5, seed=0, side=side)
    config = model.get_config()
    assert (config["n_genres"], config["n_tag_columns"]) == (3, 1)
    assert (config["genre_names"], config["tag_names"]) == (["Drama", "Comedy", "Horror"], ["dark"])
    again = DLRMModel.from_config(config)
    assert (again.n_genres, again.n_tag_columns) == (3, 1)
    assert again.genre_names == model.genre_names and again.tag_names == model.tag_names
    assert again.get_config() == config
