"""The factorised protocol every rating model keeps: the fast path equals ``call``, the saved
model is self-contained, and the batch L2 penalty."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest
from models_support import N_MOVIES, N_USERS, VARIANTS, all_pairs, make, random_side, scorer

from job.core.config import model_config
from job.data.features import (
    SideFeatures,
)
from job.data.movielens import HALF_STARS
from job.models.dlrm import DLRMModel
from job.models.rating import (
    build_model,
    predict_classes,
    predict_ratings,
)

# ---------------------------------------------------------------------------------------
# The factorised protocol: the fast path equals call() for every model


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_fast_path_matches_reference(variant: str) -> None:
    model = make(variant)
    users, movies = all_pairs(N_USERS, N_MOVIES)
    reference = predict_ratings(model, users, movies).reshape(N_USERS, N_MOVIES)
    for block in (1, 4, N_USERS):  # blocks smaller than, not dividing, and equal to the users
        fast = scorer(model, block).model_ratings(np.arange(N_USERS, dtype="int32"))
        np.testing.assert_allclose(fast, reference, atol=1e-4)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_protocol_shapes(variant: str) -> None:
    model = make(variant)
    users, movies = np.arange(3, dtype="int32"), np.arange(5, dtype="int32")
    user_parts, movie_parts = model.user_parts(users), model.movie_parts(movies)
    assert len(user_parts.shape) == 2 and user_parts.shape[0] == 3
    assert len(movie_parts.shape) == 2 and movie_parts.shape[0] == 5
    scores = model.pair_scores(user_parts[:, None, :], movie_parts[None, :, :], training=False)
    assert tuple(scores.shape) == (3, 5)
    pairs = np.array([[0, 0], [2, 4]], dtype="int32")
    out = keras.ops.convert_to_numpy(model(pairs))
    width = 1 + (len(HALF_STARS.values) if "classes" in variant else 0)
    assert out.shape == (2, width)
    np.testing.assert_allclose(
        out[:, 0], keras.ops.convert_to_numpy(scores)[[0, 2], [0, 4]], atol=1e-5
    )


@pytest.mark.parametrize("variant", ["dlrm", "dlrm-classes", "mlp-classes"])
def test_saved_model_is_self_contained(variant: str, tmp_path: Path) -> None:
    """model.keras carries the side-feature tables and the classes: no data needed to reload."""
    model = make(variant)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    assert type(loaded) is type(model)
    assert loaded.rating_mean == model.rating_mean and loaded.rating_values == model.rating_values
    users, movies = all_pairs(N_USERS, N_MOVIES)
    np.testing.assert_allclose(
        predict_ratings(loaded, users, movies), predict_ratings(model, users, movies), atol=1e-6
    )
    if isinstance(model, DLRMModel):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(loaded.genre_table), random_side().genres
        )
    if model.classes:
        classes = predict_classes(loaded, users, movies)
        assert set(np.unique(classes)) <= set(HALF_STARS.values.tolist())


@pytest.mark.parametrize("architecture", ["mlp", "dlrm"])
def test_batch_l2_penalises_the_rows_a_batch_looks_up(architecture: str) -> None:
    """l2_scope="batch": l2 x the batch mean of each rating's squared row norms (embeddings
    and biases), against a numpy loop; "tables" adds no such loss (a regularizer does)."""
    config = model_config("seed", architecture=architecture, biases=True, l2=0.05, l2_scope="batch")
    side = SideFeatures.empty(6) if architecture == "dlrm" else None
    model = build_model(config, 5, 6, 3.0, seed=1, side=side)
    for name in ("user_bias", "movie_bias"):  # zeros at first: give them something to sum
        layer = getattr(model, name)
        layer.set_weights([np.random.default_rng(2).normal(size=layer.get_weights()[0].shape)])
    pairs = np.array([[0, 1], [0, 5], [4, 2]], dtype="int32")
    model(pairs, training=True)
    tables = {
        name: getattr(model, name).get_weights()[0]
        for name in ("user_embedding", "user_bias", "movie_embedding", "movie_bias")
    }
    expected = 0.0
    for name, column in (
        ("user_embedding", 0),
        ("user_bias", 0),
        ("movie_embedding", 1),
        ("movie_bias", 1),
    ):
        expected += np.mean([np.sum(tables[name][row] ** 2) for row in pairs[:, column]])
    (loss,) = model.losses
    np.testing.assert_allclose(float(loss), 0.05 * expected, rtol=1e-5)

    model(pairs, training=False)  # predicting adds no penalty
    tables_scope = build_model(
        model_config("seed", architecture=architecture, l2=0.05), 5, 6, 3.0, seed=1, side=side
    )
    assert tables_scope.user_embedding.embeddings_regularizer is not None
    assert model.user_embedding.embeddings_regularizer is None
