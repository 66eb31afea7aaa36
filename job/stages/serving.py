"""What a run serves: the models behind ``top_k``, ``predictions`` and the reasons, fit on
every rating the run was given once evaluation has judged their held-out twins."""

from __future__ import annotations

import logging
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.core.config import N_SIMILAR, SIMILAR_MIN_RATINGS, Config, ModelConfig
from job.data.interactions import SplitData
from job.data.movielens import RatingScale
from job.data.split import TRAIN, VAL
from job.models.itemitem import WatchAndLike, also_liked_table, fit_watch_and_like
from job.stages.evaluate import Evaluation
from job.stages.fit import FitOptions, TrainingResult, train

log = logging.getLogger(__name__)


# The all-ratings refit is served only if the fixed-epoch fit it is simulated by is no worse
# on validation than the early-stopped model by more than this RMSE (less is seed noise).
REFIT_TOLERANCE = 0.002


def kept_epoch(result: TrainingResult, config: ModelConfig) -> int:
    """The epoch whose weights the trained model kept: the best validation MAE's where
    early stopping restores it, else the last."""
    val_mae = result.history["val_mae"].to_numpy()
    if config.restore_best_weights and len(val_mae):
        return int(np.argmin(val_mae)) + 1
    return result.epochs_run


def serving_rating_model(
    config: Config, data: SplitData, scale: RatingScale, result: TrainingResult, verbose: int = 1
) -> tuple[keras.Model, dict[str, Any]]:
    """The rating model to serve (``model.serve_refit``), and run.json's record of the choice.

    Either the train-split model, the one evaluation judged, or a refit on every rating for
    the ``E`` epochs early stopping kept. A refit cannot be judged on ratings it was fit on,
    so the choice is made on validation by simulating it on the train split: a fit from
    scratch (the next seed) for exactly ``E`` epochs with no early stopping, against the
    early-stopped model. If the simulation is no worse by ``REFIT_TOLERANCE``, ``E`` epochs
    is a schedule that needs no validation set, and the refit on every rating is served. Two
    more fits (the simulation and the refit) are the price, so it is asked for, not the default.
    """
    model_config = config.model
    epochs = kept_epoch(result, model_config)
    kept = float(result.settings.get("validation_rmse", np.nan))
    record: dict[str, Any] = {"epochs": epochs, "validation_rmse": kept}
    if config.warm_start is not None:  # E epochs from a warm start say nothing about a cold fit
        return result.model, {**record, "chosen": False, "reason": "a warm start"}
    rated = data.rated
    simulated = train(
        model_config,
        rated.where(data.mask(TRAIN)),
        rated.where(data.mask(VAL)),
        FitOptions(config.seed + 1, verbose, scale, data.side, fixed_epochs=epochs),
    )
    simulated_rmse = float(simulated.settings["validation_rmse"])
    record["simulated_validation_rmse"] = simulated_rmse
    if not simulated_rmse <= kept + REFIT_TOLERANCE:
        reason = f"{epochs} epochs from scratch are worse on validation than early stopping"
        return result.model, {**record, "chosen": False, "reason": reason}
    refit = train(
        model_config,
        rated,
        rated.where(data.mask(VAL)),  # reported only: the refit has no held-out ratings left
        FitOptions(config.seed, verbose, scale, data.side, fixed_epochs=epochs),
    )
    reason = f"{epochs} epochs from scratch are no worse on validation than early stopping"
    return refit.model, {**record, "chosen": True, "reason": reason}


def serving_ranker(
    data: SplitData, config: ModelConfig, evaluated: Evaluation
) -> WatchAndLike | None:
    """The ranker the score stage serves: evaluation's settings, refit on every rating.

    Four EASE fits in a run, each needed once: evaluation's two on the train split (the
    watched one shared with the EASE baseline), whose metrics are reported, and these two
    on every rating, which serve. The train-split fits cannot serve: they never saw the
    validation and test ratings, a user's latest ones on a temporal split. The settings
    (recency, rating weight) are evaluation's, chosen on validation, so nothing is re-judged.
    """
    judged = evaluated.ranker
    if judged is None:
        return None
    rated = data.rated
    return fit_watch_and_like(
        rated.liked(-np.inf),
        rated.liked(),
        config,
        half_life=judged.half_life,
        rating_weight=judged.rating_weight,
    )


def served_models(
    config: Config,
    data: SplitData,
    result: TrainingResult,
    evaluated: Evaluation,
    metrics: dict[str, Any],
    refit: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """run.json's ``served``: how each model behind the outputs was fit, and the held-out
    metrics that judge it (those of its train-split fit, for a model refit on more).
    ``refit``: ``serving_rating_model``'s record, None where no refit was asked for."""
    held_out = metrics["evaluated_on"]
    row = metrics["rows"][0]
    n_all, n_train = len(data.ratings), int(data.mask(TRAIN).sum())
    refitted = refit is not None and refit["chosen"]
    served: dict[str, Any] = {
        "rating_model": {
            "fit_on": "all" if refitted else "train",
            "ratings": n_all if refitted else n_train,
            "epochs": refit["epochs"] if refit is not None and refitted else result.epochs_run,
            "judged_on": held_out,
            "judged_fit_on": "train",
            "rmse": row["rmse"],
            "mae": row["mae"],
            "validation_rmse": result.settings.get("validation_rmse"),
            "refit": refit
            or {"chosen": False, "reason": "not asked for (model.serve_refit): two more fits"},
            "note": "predicted_rating and similar_movies come from this fit; its metrics are "
            "the train-split fit's",
        },
        "also_liked": {"fit_on": "all", "ratings": n_all, "note": "co-like counts, no fit"},
    }
    ranker = evaluated.ranker
    if ranker is not None:
        served["ranker"] = {
            "fit_on": "all",
            "ratings": n_all,
            "half_life": ranker.half_life,
            "rating_weight": ranker.rating_weight,
            "judged_on": held_out,
            "judged_fit_on": "train",
            "ndcg_at_10": row["ndcg_at_10"],
            "note": "top_k, predictions' score and the reasons come from this fit; its "
            "settings were chosen on validation, its metrics are the train-split fit's",
        }
    return served


def also_liked_neighbours(data: SplitData) -> pd.DataFrame:
    """Each movie's also-liked neighbours over every rating, in raw ids."""
    neighbours = also_liked_table(data.rated.liked(), N_SIMILAR, SIMILAR_MIN_RATINGS)
    decode = data.encoding.decode_movies
    return neighbours.assign(
        movie=decode(neighbours["movie"].to_numpy()),
        other=decode(neighbours["other"].to_numpy()),
    ).rename(columns={"movie": "movie_id", "other": "other_movie_id"})
