"""The train stage's parts: settings at scale, the item-item fit in raw ids, the typed result."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pandas as pd

from job.config import N_SIMILAR, PRESETS, SIMILAR_MIN_RATINGS, build_config
from job.data import HALF_STARS
from job.features import IdEncoding
from job.itemitem import also_liked, fit_ease
from job.manifest import read_manifest
from job.split import TRAIN
from job.train import (
    LARGE_TRAINING,
    MAX_BATCH,
    SplitData,
    TrainOutputs,
    fit_item_item,
    train_stage,
    training_settings,
)


def test_training_settings_change_nothing_below_the_threshold() -> None:
    config = PRESETS["seed"]
    assert training_settings(config, LARGE_TRAINING - 1) is config


def test_training_settings_at_scale_grow_the_batch_and_the_rate_together() -> None:
    config = PRESETS["seed"]
    scaled = training_settings(config, 100_000_000)
    assert scaled.batch_size == MAX_BATCH
    assert math.isclose(
        scaled.learning_rate,
        config.learning_rate * math.sqrt(MAX_BATCH / config.batch_size),
    )
    assert (
        dataclasses.replace(
            scaled,
            batch_size=config.batch_size,
            learning_rate=config.learning_rate,
            patience=config.patience,
            epochs=config.epochs,
        )
        == config
    )


def test_fit_item_item_gives_neighbours_in_raw_ids() -> None:
    rng = np.random.default_rng(3)
    n_users, n_movies = 40, 12
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_movies, 300)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    encoding = IdEncoding(np.arange(n_users) + 100, np.arange(n_movies) * 10 + 7)
    data = SplitData(encoding, pairs, ratings, np.full(len(pairs), TRAIN), side=None)
    config = dataclasses.replace(PRESETS["seed"], ease_l2=5.0, ease_watch_l2=5.0)
    ranker, neighbours = fit_item_item(data, config)
    # The same neighbours as also_liked on the liked part's co-like counts, decoded.
    liked = data.rated.liked()
    like, g = fit_ease(liked, config.ease_l2)
    expected = also_liked(g, like.items, N_SIMILAR, SIMILAR_MIN_RATINGS)
    assert list(neighbours.columns) == ["movie_id", "rank", "other_movie_id", "score"]
    pd.testing.assert_series_equal(
        neighbours["movie_id"],
        pd.Series(encoding.decode_movies(expected["movie"].to_numpy()), name="movie_id"),
    )
    assert set(neighbours["other_movie_id"]) <= set(encoding.movie_ids.tolist())
    np.testing.assert_array_equal(ranker.like.weights, like.weights)
    assert ranker.watch.l2 == config.ease_watch_l2


def test_train_stage_returns_its_typed_outputs(tmp_path: Path) -> None:
    from synth import write_movielens

    data = write_movielens(tmp_path / "data", n_users=20, n_movies=30, per_user=10, seed=1)
    out = tmp_path / "out"
    made = train_stage(build_config(data=str(data), out=out, preset="seed", epochs=1), verbose=0)
    assert isinstance(made, TrainOutputs) and made.out == out
    on_disk = read_manifest(out)
    assert (made.manifest.run_id, made.manifest.metrics) == (on_disk.run_id, on_disk.metrics)
    assert set(made.manifest.timings) == {"load", "train", "evaluate", "item_item"}
