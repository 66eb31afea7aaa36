"""job.stages.serving: what a run serves, fit on every rating it was given."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from job.core.config import N_SIMILAR, SIMILAR_MIN_RATINGS, build_config
from job.data.features import IdEncoding
from job.data.interactions import SplitData
from job.data.movielens import HALF_STARS
from job.data.split import TRAIN
from job.models.itemitem import also_liked, covered_items, gram
from job.runfolder.manifest import read_manifest
from job.stages.serving import also_liked_neighbours
from job.stages.train import train_stage


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


@pytest.mark.parametrize("simulated_worse", [False, True])
def test_served_rating_model_is_refit_on_every_rating_when_validation_allows(
    simulated_worse: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With ``serve_refit``, a fit from scratch for the kept epochs is judged on validation
    against the early-stopped model; no worse, and the saved model is a refit on every rating
    (its mean is every rating's) for those epochs; worse, and the train-split model is kept.
    run.json says which, with both models' validation figures."""
    from synth import write_movielens

    import job.stages.fit as fit_module
    import job.stages.serving as serving_module
    from job.models.rating import load_model

    real_train = fit_module.train
    fits: list[tuple[int, object]] = []

    def spy(*args: object, **kwargs: object) -> fit_module.TrainingResult:
        result = real_train(*args, **kwargs)  # type: ignore[arg-type]
        options = args[3]
        fits.append((len(args[1].ratings), options.fixed_epochs))  # type: ignore[attr-defined]
        if simulated_worse and options.fixed_epochs and len(fits) == 2:  # type: ignore[attr-defined]
            settings = {**result.settings, "validation_rmse": 99.0}
            return fit_module.TrainingResult(result.model, result.history, result.seconds, settings)
        return result

    monkeypatch.setattr(fit_module, "train", spy)  # the train split's fit
    monkeypatch.setattr(serving_module, "train", spy)  # the simulated and the served refits
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
