"""The train stage's parts: settings at scale, the item-item fit in raw ids, the typed result."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest

from job.core.config import N_SIMILAR, SIMILAR_MIN_RATINGS, build_config
from job.core.layout import RANKER_FILE
from job.data.features import IdEncoding
from job.data.movielens import HALF_STARS
from job.data.split import TRAIN
from job.models.itemitem import also_liked, covered_items, gram
from job.runfolder.manifest import read_manifest
from job.stages.train import (
    SplitData,
    TrainOutputs,
    also_liked_neighbours,
    train_stage,
)


def test_also_liked_neighbours_are_in_raw_ids() -> None:
    rng = np.random.default_rng(3)
    n_users, n_movies = 40, 12
    pairs = np.unique(
        np.stack([rng.integers(0, n_users, 300), rng.integers(0, n_movies, 300)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    encoding = IdEncoding(np.arange(n_users) + 100, np.arange(n_movies) * 10 + 7)
    data = SplitData(encoding, pairs, ratings, np.full(len(pairs), TRAIN), side=None)
    neighbours = also_liked_neighbours(data)
    # The same neighbours as also_liked on the co-like counts of every liked rating, decoded.
    liked = data.rated.liked()
    items = covered_items(liked)
    expected = also_liked(gram(liked, items), items, N_SIMILAR, SIMILAR_MIN_RATINGS)
    assert len(expected) > 0
    assert list(neighbours.columns) == ["movie_id", "rank", "other_movie_id", "score"]
    for column, raw in (("movie", "movie_id"), ("other", "other_movie_id")):
        pd.testing.assert_series_equal(
            neighbours[raw],
            pd.Series(encoding.decode_movies(expected[column].to_numpy()), name=raw),
        )
    np.testing.assert_array_equal(neighbours["score"], expected["score"])


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
    from job.models.itemitem import WatchAndLike, fit_ease

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
    covered = train_counts >= 2
    np.testing.assert_array_equal(evaluation_watch, train_counts[covered])
    np.testing.assert_array_equal(served_watch, all_counts[all_counts >= 2])
    assert served_watch.sum() > evaluation_watch.sum()
    # The saved ranker is that fit: EASE over every rating, to the last weight.
    served = WatchAndLike.load(out / RANKER_FILE)
    from job.data.interactions import liked_matrix

    everything = liked_matrix(
        users, movies, ratings["rating"].to_numpy(), encoding.n_users, encoding.n_movies, -np.inf
    )
    expected = fit_ease(everything, config.model.ease_watch_l2)[0]
    np.testing.assert_array_equal(served.watch.items, expected.items)
    np.testing.assert_allclose(served.watch.weights, expected.weights, rtol=1e-5, atol=1e-6)
    manifest = read_manifest(out)
    assert manifest.extra["served"]["ranker"]["fit_on"] == "all"
    assert manifest.extra["served"]["ranker"]["judged_fit_on"] == "train"


@pytest.mark.parametrize("simulated_worse", [False, True])
def test_served_rating_model_is_refit_on_every_rating_when_validation_allows(
    simulated_worse: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``serve_refit``, a fit from scratch for the kept epochs is judged on validation
    against the early-stopped model; no worse, and the saved model is a refit on every rating
    (its mean is every rating's) for those epochs; worse, and the train-split model is kept.
    run.json says which, with both models' validation figures."""
    from synth import write_movielens

    import job.stages.train as train_module
    from job.models.rating import load_model

    real_train = train_module.train
    fits: list[tuple[int, object]] = []

    def spy(*args: object, **kwargs: object) -> train_module.TrainingResult:
        result = real_train(*args, **kwargs)  # type: ignore[arg-type]
        fits.append((len(args[1].ratings), kwargs.get("fixed_epochs")))  # type: ignore[attr-defined]
        if simulated_worse and kwargs.get("fixed_epochs") and len(fits) == 2:
            settings = {**result.settings, "validation_rmse": 99.0}
            return train_module.TrainingResult(
                result.model, result.history, result.seconds, settings
            )
        return result

    monkeypatch.setattr(train_module, "train", spy)
    data = write_movielens(tmp_path / "data", n_users=30, n_movies=40, per_user=12, seed=2)
    out = tmp_path / "out"
    config = build_config(
        data=str(data), out=out, preset="biased", epochs=3, serve_refit=True, ranker="rating"
    )
    train_stage(config, verbose=0)
    served = read_manifest(out).extra["served"]["rating_model"]
    ratings = pd.read_parquet(out / "dataset" / "ratings.parquet")
    n_train = int((ratings["split"] == TRAIN).sum())
    refit = served["refit"]
    kept = refit["epochs"]
    assert 1 <= kept <= 3
    # the evaluated fit, the simulation on the train split; the refit on all if chosen
    assert fits[:2] == [(n_train, None), (n_train, kept)]
    assert refit["chosen"] == (not simulated_worse)
    assert refit["validation_rmse"] == served["validation_rmse"]
    mean = float(load_model(out).rating_mean)
    if simulated_worse:
        assert len(fits) == 2 and served["fit_on"] == "train"
        assert mean == pytest.approx(ratings["rating"][ratings["split"] == TRAIN].mean())
    else:
        assert fits[2] == (len(ratings), kept) and served["fit_on"] == "all"
        assert served["ratings"] == len(ratings) and served["epochs"] == kept
        assert mean == pytest.approx(ratings["rating"].mean())
