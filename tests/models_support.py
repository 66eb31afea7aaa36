"""Model variants on tiny seeded data, shared by the tests of the rating models."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

from job.core.config import model_config
from job.data.features import (
    SideFeatures,
)
from job.data.interactions import EncodedRatings, Interactions
from job.data.movielens import HALF_STARS, RatingScale
from job.models.rank import BlockScorer
from job.models.rating import (
    build_model,
)

N_USERS, N_MOVIES = 11, 23


def scorer(
    model: keras.Model,
    block_users: int | None = None,
    n_users: int = N_USERS,
    n_movies: int = N_MOVIES,
) -> BlockScorer:
    """The production scorer over a catalogue no user has rated."""
    none = np.zeros(0, "int32")
    nothing = EncodedRatings(np.stack([none, none], axis=1), np.zeros(0), n_users, n_movies)
    inputs = Interactions.from_ratings(nothing, np.zeros(0, bool), HALF_STARS)
    return BlockScorer(model, inputs, k=1, block_users=block_users)


def random_side(n_movies: int = N_MOVIES, seed: int = 0) -> SideFeatures:
    rng = np.random.default_rng(seed)
    genres = (rng.random((n_movies, 5)) < 0.4).astype("float32")
    years = np.stack([rng.normal(size=n_movies), rng.random(n_movies) < 0.1], axis=1).astype(
        "float32"
    )
    tags = rng.random((n_movies, 4)).astype("float32") * (rng.random((n_movies, 1)) < 0.5)
    tags /= np.maximum(tags.sum(axis=1, keepdims=True), 1e-9)
    return SideFeatures(genres, years, tags)


def randomised(model: keras.Model, seed: int = 0, scale: float = 0.5) -> keras.Model:
    """Random trainable weights everywhere (fresh biases are zero, which would hide bugs)."""
    rng = np.random.default_rng(seed)
    for weight in model.trainable_weights:
        weight.assign(rng.normal(0, scale, weight.shape).astype("float32"))
    return model


def all_pairs(n_users: int, n_movies: int) -> tuple[np.ndarray, np.ndarray]:
    users, movies = np.meshgrid(np.arange(n_users), np.arange(n_movies), indexing="ij")
    return users.ravel(), movies.ravel()


VARIANTS: dict[str, dict[str, Any]] = {
    "seed": {},
    "mlp-biases": {"biases": True, "dropout": 0.2},
    "mlp-classes": {"output": "classes", "biases": True},
    # RatingModel.block_scores: the narrow layer after the first as a fused multiply-and-sum
    # (the prediction itself, or a hidden layer with more after it), and a wide one as a product
    "mlp-one-layer": {"hidden": (8,), "biases": True},
    "mlp-deep": {"hidden": (16, 4, 3)},
    "mlp-wide": {"hidden": (16, 8)},
    "dlrm": {"architecture": "dlrm", "biases": True, "dropout": 0.3},
    "dlrm-classes": {"architecture": "dlrm", "output": "classes", "biases": True},
    "dlrm-no-top": {"architecture": "dlrm", "top": (), "bottom": ()},
}


def make(variant: str, scale: RatingScale = HALF_STARS, seed: int = 0) -> keras.Model:
    config = model_config("seed", **VARIANTS[variant])
    model = build_model(config, N_USERS, N_MOVIES, 3.5, seed=seed, scale=scale, side=random_side())
    return randomised(model, seed)
