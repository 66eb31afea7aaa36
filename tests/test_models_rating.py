"""The rating models: factorised fast path, the classifier's head, DLRM side features, presets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd
import pytest

from job.core.config import PRESETS, ModelConfig, model_config
from job.core.errors import ConfigError
from job.data.features import (
    IdEncoding,
    SideFeatures,
    side_features,
    tag_matrix,
    tag_vocabulary,
    year_matrix,
)
from job.data.interactions import EncodedRatings, Interactions
from job.data.movielens import HALF_STARS, WHOLE_STARS, RatingScale
from job.models.rank import BlockScorer
from job.models.rating import (
    DLRMModel,
    RatingModel,
    WarmupHalving,
    build_model,
    predict_classes,
    predict_ratings,
    training_targets,
)
from job.stages.train import train

N_USERS, N_MOVIES = 11, 23


def scorer(
    model: keras.Model,
    block_users: int | None = None,
    n_users: int = N_USERS,
    n_movies: int = N_MOVIES,
) -> BlockScorer:
    """The production scorer over a catalogue no user has rated."""
    none = np.zeros(0, "int32")
    inputs = Interactions.from_ratings(
        none, none, np.zeros(0), np.zeros(0, bool), n_users, n_movies, HALF_STARS
    )
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


# ---------------------------------------------------------------------------------------
# The classifier


@pytest.mark.parametrize("scale", [HALF_STARS, WHOLE_STARS], ids=["half", "whole"])
@pytest.mark.parametrize("variant", ["mlp-classes", "dlrm-classes"])
def test_expected_rating_stays_within_the_scale(variant: str, scale: RatingScale) -> None:
    model = build_model(
        model_config("seed", **VARIANTS[variant]),
        N_USERS,
        N_MOVIES,
        3.5,
        seed=1,
        scale=scale,
        side=random_side(),
    )
    randomised(model, seed=1, scale=5.0)  # huge logits: the expectation must still stay inside
    assert model.units == len(scale.values)  # 10 classes for half stars, 5 for whole stars
    predicted = scorer(model).model_ratings(np.arange(N_USERS, dtype="int32"))
    assert predicted.min() >= scale.low - 1e-5 and predicted.max() <= scale.high + 1e-5
    assert predicted.max() - predicted.min() > 1.0  # not trivially the middle of the scale


def test_classifier_targets_are_class_indexes() -> None:
    model = make("mlp-classes")
    targets = training_targets(model, np.array([0.5, 3.5, 5.0]))
    np.testing.assert_allclose(targets, [[-3.0, 0], [0.0, 6], [1.5, 9]])
    whole = build_model(
        model_config("seed", output="classes"), 3, 3, 3.0, seed=0, scale=WHOLE_STARS
    )
    np.testing.assert_allclose(training_targets(whole, np.array([1.0, 5.0]))[:, 1], [0, 4])
    regression = make("seed")
    assert training_targets(regression, np.array([4.5])).shape == (1,)


def test_classifier_trains_with_mae_and_accuracy() -> None:
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, N_USERS, 300), rng.integers(0, N_MOVIES, 300)], axis=1)
    ratings = rng.choice(HALF_STARS.values, 300)
    config = model_config("seed", output="classes", epochs=2)
    rated = EncodedRatings(pairs, ratings, N_USERS, N_MOVIES)
    result = train(
        config,
        rated.where(np.arange(300) < 250),
        rated.where(np.arange(300) >= 250),
        seed=0,
        verbose=0,
        scale=HALF_STARS,
    )
    assert {"loss", "mae", "accuracy", "val_mae", "val_accuracy"} <= set(result.history.columns)
    assert result.history["val_accuracy"].between(0, 1).all()


def test_builder_refuses_what_it_cannot_build() -> None:
    with pytest.raises(ValueError, match="rating scale"):
        build_model(model_config("seed", output="classes"), 3, 3, 3.0, seed=0)
    with pytest.raises(ValueError, match="side features"):
        build_model(model_config("seed", architecture="dlrm"), 3, 3, 3.0, seed=0)
    with pytest.raises(ValueError, match="movies"):
        build_model(
            model_config("seed", architecture="dlrm"), 3, 4, 3.0, seed=0, side=SideFeatures.empty(3)
        )


# ---------------------------------------------------------------------------------------
# The seed preset is the article's network, exactly


def test_seed_preset_is_the_article() -> None:
    assert PRESETS["seed"] == ModelConfig()
    seed = PRESETS["seed"]
    assert (seed.user_dim, seed.movie_dim, seed.hidden, seed.batch_size, seed.epochs) == (
        8,
        8,
        (32, 4),
        500,
        20,
    )
    assert (seed.patience, seed.restore_best_weights, seed.biases, seed.l2, seed.dropout) == (
        0,
        False,
        False,
        0.0,
        0.0,
    )
    model = build_model(seed, 610, 9742, 3.5, seed=42)
    assert isinstance(model, RatingModel)
    assert [(w.path.split("/", 1)[1], tuple(w.shape)) for w in model.weights] == [
        ("user_embedding/embeddings", (610, 8)),
        ("movie_embedding/embeddings", (9742, 8)),
        ("hidden_0/kernel", (16, 32)),
        ("hidden_0/bias", (32,)),
        ("hidden_1/kernel", (32, 4)),
        ("hidden_1/bias", (4,)),
        ("prediction/kernel", (4, 1)),
        ("prediction/bias", (1,)),
    ]
    assert model.loss == "mse" and isinstance(model.optimizer, keras.optimizers.Adam)
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(1e-3)


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds(name: str) -> None:
    model = build_model(PRESETS[name], 5, 7, 3.5, seed=0, scale=HALF_STARS, side=random_side(7))
    ratings = scorer(model, n_users=5, n_movies=7).model_ratings(np.arange(5, dtype="int32"))
    assert ratings.shape == (5, 7) and np.isfinite(ratings).all()


def test_config_refuses_bad_layer_sizes() -> None:
    with pytest.raises(ConfigError, match="top"):
        ModelConfig(top=(0,))
    with pytest.raises(ConfigError, match="hidden"):
        ModelConfig(hidden=())
    with pytest.raises(ConfigError, match="warmup_steps"):
        ModelConfig(warmup_steps=-1)


# ---------------------------------------------------------------------------------------
# The learning-rate schedule used at scale


def test_warmup_halving_rises_linearly_then_halves_every_period() -> None:
    peak, warmup, period = 0.004, 10, 40
    steps = np.arange(200)
    expected = peak * np.minimum(1.0, (steps + 1) / warmup) * 0.5 ** (steps / period)
    schedule = WarmupHalving(peak, warmup, period)
    got = keras.ops.convert_to_numpy(schedule(keras.ops.convert_to_tensor(steps)))
    np.testing.assert_allclose(got, expected, rtol=1e-5)
    assert got[warmup - 1] == pytest.approx(peak * 0.5 ** ((warmup - 1) / period))
    assert got[2 * period] == pytest.approx(peak / 4)
    constant = WarmupHalving(peak, 0, 0)  # no warm-up, no decay: the peak throughout
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(constant(keras.ops.convert_to_tensor(steps))), peak, rtol=1e-6
    )


def test_a_scheduled_model_trains_on_its_schedule_and_saves_it(tmp_path: Path) -> None:
    config = model_config("seed", learning_rate=0.01, warmup_steps=4, halve_every=8)
    model = build_model(config, N_USERS, N_MOVIES, 3.5, seed=0)
    rng = np.random.default_rng(0)
    pairs = np.stack([rng.integers(0, N_USERS, 64), rng.integers(0, N_MOVIES, 64)], axis=1)
    model.fit(pairs, rng.normal(0, 1, 64).astype("float32"), batch_size=8, epochs=2, verbose=0)
    assert int(model.optimizer.iterations) == 16
    # The rate the optimizer uses now: past the warm-up, 16 steps halving every 8.
    assert float(model.optimizer.learning_rate) == pytest.approx(0.01 / 4, rel=1e-5)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras").optimizer
    assert reloaded.get_config()["learning_rate"]["config"] == {
        "peak": 0.01,
        "warmup_steps": 4,
        "halve_every": 8,
    }


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
            seed=0,
            verbose=0,
            side=side,
        )
        predicted = np.clip(
            predict_ratings(result.model, pairs[test_i, 0], pairs[test_i, 1]), 0.5, 5.0
        )
        errors[name] = float(np.sqrt(np.mean((predicted - ratings[test_i]) ** 2)))
    assert errors["dlrm"] < 0.6 < errors["id-only"], errors


# ---------------------------------------------------------------------------------------
# Side-feature tables


def test_tag_vocabulary_counts_distinct_uses_and_normalises() -> None:
    tags = pd.DataFrame(
        {
            "user_id": [1, 1, 1, 2, 3, 3, 2],
            "movie_id": [10, 10, 20, 10, 30, 30, 20],
            "tag": ["Funny", "funny ", "dark  comedy", "FUNNY", "Dark Comedy", "zany", "zany"],
        }
    )
    # funny: (1,10) twice counts once, (2,10) -> 2; dark comedy: 2; zany: 2. Ties alphabetical.
    assert tag_vocabulary(tags, 10) == ["dark comedy", "funny", "zany"]
    assert tag_vocabulary(tags, 1) == ["dark comedy"]
    assert tag_vocabulary(tags.iloc[:0], 5) == []


def test_tag_matrix_rows_are_term_frequencies() -> None:
    encoding = IdEncoding(np.array([1, 2]), np.array([10, 20, 30, 40]))
    tags = pd.DataFrame(
        {
            "user_id": [1, 2, 1, 1, 2],
            "movie_id": [10, 10, 10, 20, 99],
            "tag": ["a", "a", "b", "c", "a"],
        }
    )
    matrix = tag_matrix(tags, encoding, ["a", "b"])
    expected = np.array([[2 / 3, 1 / 3], [0, 0], [0, 0], [0, 0]])  # 99 is unknown: ignored
    np.testing.assert_allclose(matrix, expected)


def test_year_matrix_standardises_and_flags_missing() -> None:
    movies = pd.DataFrame(
        {
            "movie_id": [3, 1, 2],
            "title": ["C (2000)", "A (1990)", "No year"],
            "genres": ["", "", ""],
        }
    )
    encoding = IdEncoding(np.array([1]), np.array([1, 2, 3]))
    matrix = year_matrix(movies, encoding)
    np.testing.assert_allclose(matrix, [[-1, 0], [0, 1], [1, 0]])


def test_side_features_never_have_an_empty_dimension() -> None:
    movies = pd.DataFrame(
        {
            "movie_id": [1, 2],
            "title": ["A (1990)", "B (1991)"],
            "genres": ["(no genres listed)", "Drama"],
        }
    )
    encoding = IdEncoding(np.array([1]), np.array([1, 2]))
    side = side_features(
        movies, pd.DataFrame({"user_id": [], "movie_id": [], "tag": []}), encoding, n_tags=5
    )
    assert (
        side.genres.shape == (2, 1) and side.tags.shape == (2, 1) and side.genre_names == ("Drama",)
    )


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
