"""The train stage's parts: settings at scale, the item-item fit in raw ids, the typed result."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from job.core.config import build_config
from job.core.layout import RANKER_FILE
from job.data.features import IdEncoding
from job.data.split import TRAIN
from job.runfolder.manifest import read_manifest
from job.stages.train import TrainOutputs, train_stage


@pytest.mark.parametrize(("ranker", "ease_fits"), [("ease", 4), ("rating", 1)])
def test_one_run_fits_each_model_once(
    ranker: str, ease_fits: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A whole run (train, score, merge, render) counts its fits: one Keras fit, and one
    EASE fit per EASE model judged: the baseline over what users watched (the "ease" ranker's
    watched part too, same data and L2) and, for the "ease" ranker, its liked part; and
    the served ranker's two parts, refit on every rating."""
    from synth import write_movielens

    import job.models.itemitem
    from job.pipeline import run_all

    ease_fits_seen: list[tuple[int, float]] = []
    keras_fits: list[int] = []
    fit_ease_model = job.models.itemitem.Ease.fit  # bound to Ease
    fit_keras_model = keras.Model.fit

    def counted_ease(
        cls: type, g: np.ndarray, items: np.ndarray, n_movies: int, l2: float
    ) -> job.models.itemitem.Ease:
        ease_fits_seen.append((len(items), l2))
        return fit_ease_model(g, items, n_movies, l2)

    def counted_keras(model: keras.Model, *args: object, **kwargs: object) -> object:
        keras_fits.append(1)
        return fit_keras_model(model, *args, **kwargs)

    monkeypatch.setattr(job.models.itemitem.Ease, "fit", classmethod(counted_ease))
    monkeypatch.setattr(keras.Model, "fit", counted_keras)
    data = write_movielens(tmp_path / "data", n_users=30, n_movies=40, per_user=12, seed=2)
    config = build_config(
        data=str(data), out=tmp_path / "out", preset="seed", epochs=2, ranker=ranker
    )
    run_all(config, verbose=0)
    assert len(keras_fits) == 1
    assert len(ease_fits_seen) == ease_fits, ease_fits_seen
    assert (tmp_path / "out" / RANKER_FILE).exists() == (ranker == "ease")


def test_train_stage_returns_its_typed_outputs(tmp_path: Path) -> None:
    from synth import write_movielens

    data = write_movielens(tmp_path / "data", n_users=20, n_movies=30, per_user=10, seed=1)
    out = tmp_path / "out"
    made = train_stage(build_config(data=str(data), out=out, preset="seed", epochs=1), verbose=0)
    assert isinstance(made, TrainOutputs) and made.out == out
    on_disk = read_manifest(out)
    assert (made.manifest.run_id, made.manifest.metrics) == (on_disk.run_id, on_disk.metrics)
    assert set(made.manifest.timings) == {"load", "train", "evaluate", "item_item"}


def test_served_ranker_saw_the_held_out_ratings_and_evaluation_did_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Evaluation fits its EASE models on the train split alone; the ranker the run saves
    (what score serves) is fit on every rating, validation and test included."""
    from synth import write_movielens

    import job.models.itemitem
    from job.models.itemitem import MIN_WATCHES, WatchAndLike, fit_ease

    seen: list[np.ndarray] = []
    fit_ease_model = job.models.itemitem.Ease.fit

    def recorded(
        cls: type, g: np.ndarray, items: np.ndarray, n_movies: int, l2: float
    ) -> job.models.itemitem.Ease:
        seen.append(np.diag(g).copy())  # each covered movie's count in the fit's data
        return fit_ease_model(g, items, n_movies, l2)

    monkeypatch.setattr(job.models.itemitem.Ease, "fit", classmethod(recorded))
    data = write_movielens(tmp_path / "data", n_users=30, n_movies=40, per_user=12, seed=2)
    out = tmp_path / "out"
    config = build_config(data=str(data), out=out, preset="seed", epochs=1, ranker="ease")
    train_stage(config, verbose=0)
    ratings = pd.read_parquet(out / "dataset" / "ratings.parquet")
    encoding = IdEncoding.load(out / "encoding.json")
    users = encoding.encode_users(ratings["user_id"])
    movies = encoding.encode_movies(ratings["movie_id"])
    every = ratings["split"].to_numpy() >= 0
    train = ratings["split"].to_numpy() == TRAIN
    assert 0 < train.sum() < len(ratings)

    def watched(mask: np.ndarray) -> np.ndarray:
        return np.bincount(movies[mask], minlength=encoding.n_movies).astype(float)

    # Evaluation's watched EASE (the first fit) counts the train split only; the served
    # watched part (the fit after evaluation's two) counts every rating.
    train_counts, all_counts = watched(train), watched(every)
    assert len(seen) == 4
    evaluation_watch, served_watch = seen[0], seen[3]
    covered = train_counts >= MIN_WATCHES
    np.testing.assert_array_equal(evaluation_watch, train_counts[covered])
    np.testing.assert_array_equal(served_watch, all_counts[all_counts >= MIN_WATCHES])
    assert served_watch.sum() > evaluation_watch.sum()
    # The saved ranker is that fit: EASE over every rating, to the last weight.
    served = WatchAndLike.load(out / RANKER_FILE)
    from job.data.interactions import liked_matrix

    everything = liked_matrix(
        users, movies, ratings["rating"].to_numpy(), encoding.n_users, encoding.n_movies, -np.inf
    )
    expected = fit_ease(everything, config.model.ease_watch_l2, MIN_WATCHES)[0]
    np.testing.assert_array_equal(served.watch.items, expected.items)
    np.testing.assert_allclose(served.watch.weights, expected.weights, rtol=1e-5, atol=1e-6)
    manifest = read_manifest(out)
    assert manifest.extra["served"]["ranker"]["fit_on"] == "all"
    assert manifest.extra["served"]["ranker"]["judged_fit_on"] == "train"
