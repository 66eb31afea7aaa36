"""The article's network, the classifier's head, the learning-rate schedule, the presets."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from models_support import N_MOVIES, N_USERS, VARIANTS, make, random_side, randomised, scorer

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
from job.data.interactions import EncodedRatings
from job.data.movielens import HALF_STARS, WHOLE_STARS, RatingScale
from job.models.rating import (
    RatingModel,
    WarmupHalving,
    build_model,
    training_targets,
)
from job.stages.fit import FitOptions, train

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
        FitOptions(seed=0, verbose=0, scale=HALF_STARS),
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
