"""The train stage: load, split, fit a rating model with Keras' own loop, progress bar and
early stopping, evaluate it against the baselines, and write the run folder's train outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.core.config import N_SIMILAR, SIMILAR_MIN_RATINGS, Config, ModelConfig
from job.core.errors import JobError
from job.core.files import (
    atomic_path,
    remove_dead_temporaries,
    remove_path,
    retire,
    write_json,
)
from job.core.layout import (
    ALSO_LIKED_FILE,
    DATASET_DIR,
    DOWNSTREAM_OUTPUTS,
    ENCODING_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PARTS_DIR,
    RANKER_FILE,
    RUN_JSON,
    SIMILAR_FILE,
)
from job.core.signals import SignalsDeferred
from job.data.features import IdEncoding, SideFeatures, side_features
from job.data.interactions import EncodedRatings
from job.data.movielens import Dataset, RatingScale, load_dataset
from job.data.split import TEST, TRAIN, VAL, split_ratings
from job.models.itemitem import WatchAndLike, also_liked_table, fit_watch_and_like
from job.models.rank import similar_movies_table
from job.models.rating import (
    FactorisedModel,
    build_model,
    movie_vectors,
    predict_ratings,
    trainable_parameters,
    training_targets,
)
from job.runfolder.manifest import DatasetInfo, Manifest, ModelInfo, write_manifest
from job.runfolder.preflight import require_new_run
from job.stages.evaluate import Evaluation, HeldOut, clip, error_metrics, evaluate
from job.stages.warmstart import (
    PreviousRun,
    carry_over,
    check_scale,
    check_shape,
    describe,
    load_previous_run,
)

log = logging.getLogger(__name__)


# Training at scale. On ml-10m-shaped data a step of the default preset costs ~25 ms of
# fixed work (the whole-table L2 makes every step update every user and movie row with Adam)
# plus ~7 us per example, so batch 500 ran ~12,000 ratings/s there and batch 8192 ~45,000
# (README, "Scale"). From LARGE_TRAINING training ratings on, the batch grows to about
# n_train / STEPS_PER_EPOCH (a power of two, at most MAX_BATCH), the learning rate by the
# square root of the batch's growth (Adam's usual rule: the gradient's noise falls with
# sqrt(batch)), patience drops to 1 (an epoch is millions of ratings: a worse one is a real
# signal), an epoch must improve validation MAE by LARGE_MIN_DELTA to count (on ml-10m's
# shape, ~60-100 s an epoch on 2 cores, epochs 2-10 gained 0.0071, 0.0016, 0.0044, 0.0034,
# 0.0023, 0.0008, 0.0008, ...: the rule stops after epoch 7 and keeps epoch 6, 0.0016 MAE
# from the best of 10) and epochs are at most LARGE_EPOCHS. Below it (ml-latest-small, ml-100k, ml-1m)
# nothing changes: their accuracy was tuned at batch 500.
LARGE_TRAINING = 2_000_000
STEPS_PER_EPOCH = 1_000
MAX_BATCH = 16_384
LARGE_PATIENCE = 1
LARGE_EPOCHS = 10
LARGE_MIN_DELTA = 0.001
# The large-batch rate is warmed up over half an epoch and halved every epoch from the first
# step (the schedule in ModelConfig). Chosen on validation at 3.1M synthetic ratings, batch
# 2,048 (README, "Large-batch settings"): RMSE 0.6293 against 0.6576 with a constant rate on
# latent-factor data (ALS 0.6252), and 0.6184 against 0.6301 with the genre signal.
LARGE_WARMUP_EPOCHS = 0.5
# Training steps per call into the compiled train function (Keras' steps_per_execution): the
# same batches in the same order, so the same weights and history (checked on
# ml-latest-small: identical losses), without a Python round trip per step. An epoch of the
# default preset there took 0.9-1.5 s instead of 2.3-2.7 s (2 busy cores).
STEPS_PER_EXECUTION = 16
# A warm start (job.stages.warmstart) begins near the previous optimum and overfits from its second
# epoch on: on ml-latest-small split at the 90th percentile of time (`bench-warm-start`), the
# previous default's warm run was best at epoch 2 of 5 under patience 3 (val MAE 0.6407,
# 0.6387, then 0.6415, 0.6493, 0.6635); the current default's at epoch 1 (0.6401, then
# 0.6405). Patience 1 keeps the same weights and stops two epochs sooner.
WARM_PATIENCE = 1


class EpochClock(keras.callbacks.Callback):
    """Seconds from the start of ``fit`` to the end of each epoch (run.json's
    ``training.epoch_seconds``: when a warm start reached a given validation error)."""

    def __init__(self) -> None:
        super().__init__()
        self.started = 0.0
        self.ends: list[float] = []

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.ends.append(round(time.perf_counter() - self.started, 3))


def training_settings(config: ModelConfig, n_train: int) -> ModelConfig:
    """``config`` as trained on ``n_train`` ratings: unchanged below ``LARGE_TRAINING``."""
    if n_train < LARGE_TRAINING:
        return config
    batch = min(MAX_BATCH, 2 ** round(math.log2(n_train / STEPS_PER_EPOCH)))
    if batch <= config.batch_size:
        return config
    steps_per_epoch = math.ceil(n_train / batch)
    return dataclasses.replace(
        config,
        batch_size=batch,
        learning_rate=config.learning_rate * math.sqrt(batch / config.batch_size),
        warmup_steps=round(steps_per_epoch * LARGE_WARMUP_EPOCHS),
        halve_every=steps_per_epoch,
        patience=min(config.patience, LARGE_PATIENCE),
        epochs=min(config.epochs, LARGE_EPOCHS),
    )


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    history: pd.DataFrame  # epoch, loss, mae, val_loss, val_mae (+ accuracy, val_accuracy)
    seconds: float
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)  # batch, lr, ... used

    @property
    def epochs_run(self) -> int:
        return len(self.history)


@dataclass(frozen=True)
class SplitData:
    """A dataset encoded and split once: what training, evaluation and tuning share."""

    encoding: IdEncoding
    pairs: np.ndarray  # (n, 2) encoded (user, movie), one row per rating
    ratings: np.ndarray  # (n,) float64
    labels: np.ndarray  # (n,) TRAIN / VAL / TEST
    side: SideFeatures | None  # built only for models that read it
    timestamps: np.ndarray | None = None  # (n,) int64 seconds, when each rating was given

    def mask(self, part: int) -> np.ndarray:
        return self.labels == part

    @property
    def rated(self) -> EncodedRatings:
        return EncodedRatings(
            self.pairs, self.ratings, self.encoding.n_users, self.encoding.n_movies
        )


def split_data(dataset: Dataset, config: Config) -> SplitData:
    """Encode ids, split ratings with the config's seed, build side features if the model needs them."""
    encoding = IdEncoding.fit(dataset.ratings, dataset.movies)
    users = encoding.encode_users(dataset.ratings["user_id"])
    movies = encoding.encode_movies(dataset.ratings["movie_id"])
    labels = split_ratings(
        dataset.ratings, config.split, config.test_fraction, config.val_fraction, config.seed
    )
    if not (labels == TRAIN).any() or not (labels == VAL).any():
        raise JobError(
            f"{dataset.name}: too few ratings ({len(labels)}) to split into train and validation sets"
        )
    side = (
        side_features(dataset.movies, dataset.tags, encoding, config.model.n_tags)
        if config.model.architecture == "dlrm"
        else None
    )
    return SplitData(
        encoding=encoding,
        pairs=np.stack([users, movies], axis=1),
        ratings=dataset.ratings["rating"].to_numpy("float64"),
        labels=labels,
        side=side,
        timestamps=dataset.ratings["timestamp"].to_numpy("int64"),
    )


def train_split(
    config: ModelConfig,
    data: SplitData,
    scale: RatingScale,
    seed: int,
    verbose: int = 1,
    previous: PreviousRun | None = None,
) -> TrainingResult:
    """``train`` on a ``SplitData``'s training part, stopping early on its validation part;
    from ``previous``'s weights where given (a warm start)."""
    rated = data.rated
    return train(
        config,
        rated.where(data.mask(TRAIN)),
        rated.where(data.mask(VAL)),
        seed=seed,
        verbose=verbose,
        scale=scale,
        side=data.side,
        start_from=None
        if previous is None
        else partial(carry_over, previous, encoding=data.encoding),
    )


def train(
    config: ModelConfig,
    train_part: EncodedRatings,
    val_part: EncodedRatings,
    seed: int,
    verbose: int = 1,
    scale: RatingScale | None = None,
    side: SideFeatures | None = None,
    start_from: Callable[[FactorisedModel], None] | None = None,
    fixed_epochs: int | None = None,
) -> TrainingResult:
    """Train on encoded (user, movie) pairs; validation drives early stopping only.

    ``fixed_epochs``: train exactly that many epochs, with no early stopping (the served
    refit, ``serving_rating_model``); validation is then only reported.

    The target is the rating minus its training mean (the article's "centred" y), which
    helps the network start from a sensible output; the classifier's target adds the
    rating's class (``model.training_targets``). ``scale`` is needed by the classifier,
    ``side`` by the DLRM model. ``start_from`` sets the built model's first weights (a warm
    start, ``job.stages.warmstart.carry_over``).
    """
    train_pairs, train_ratings = train_part.pairs, train_part.ratings
    val_pairs, val_ratings = val_part.pairs, val_part.ratings
    n_users, n_movies = train_part.n_users, train_part.n_movies
    rating_mean = float(np.mean(train_ratings))
    preset_config, config = config, training_settings(config, len(train_ratings))
    min_delta = 0.0 if config == preset_config else LARGE_MIN_DELTA
    if config != preset_config:
        log.info(
            "%s training ratings: batch %d, learning rate %.2g (warmed up over %d steps, "
            "halved every %d), patience %d, at most %d epochs "
            "(the preset's %d, %.2g, %d, %d are for smaller data)",
            f"{len(train_ratings):,}",
            config.batch_size,
            config.learning_rate,
            config.warmup_steps,
            config.halve_every,
            config.patience,
            config.epochs,
            preset_config.batch_size,
            preset_config.learning_rate,
            preset_config.patience,
            preset_config.epochs,
        )
    if start_from is not None:
        config = dataclasses.replace(config, patience=min(config.patience, WARM_PATIENCE))
    if fixed_epochs is not None:
        config = dataclasses.replace(config, epochs=fixed_epochs)
    model = build_model(
        config,
        n_users,
        n_movies,
        rating_mean,
        seed,
        scale=scale,
        side=side,
        steps_per_execution=STEPS_PER_EXECUTION,
    )
    if start_from is not None:
        start_from(model)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_mae",
        min_delta=min_delta,
        patience=config.patience,
        mode="min",
        restore_best_weights=config.restore_best_weights,
    )
    clock = EpochClock()
    started = time.perf_counter()
    fitted = model.fit(
        x=train_pairs,
        y=training_targets(model, train_ratings),
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(val_pairs, training_targets(model, val_ratings)),
        callbacks=[clock] if fixed_epochs is not None else [stop, clock],
        shuffle=True,
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    predicted = predict_ratings(model, val_part.users, val_part.movies)
    if scale is not None:
        predicted = clip(predicted, scale)
    validation = error_metrics("model", predicted, val_ratings)
    history = pd.DataFrame(fitted.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    keep = ["epoch", "loss", "mae", "val_loss", "val_mae", "accuracy", "val_accuracy"]
    settings = {
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "halve_every": config.halve_every,
        "patience": config.patience,
        "max_epochs": config.epochs,
        "min_delta": min_delta,
        "train_ratings": len(train_ratings),
        # What the kept weights score on the validation set (what warm starts are judged by).
        "validation_rmse": round(validation.rmse or float("nan"), 6),
        "ratings_per_second": round(len(train_ratings) * len(history) / max(seconds, 1e-9)),
        "epoch_seconds": clock.ends,
    }
    return TrainingResult(
        model=model,
        history=history[[c for c in keep if c in history]],
        seconds=seconds,
        settings=settings,
    )


# ---------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class TrainOutputs:
    """What the train stage made: the run's manifest (run.json, written last) and its folder."""

    out: Path
    manifest: Manifest


@dataclass(frozen=True)
class TrainedArtifacts:
    """Everything the train stage writes into the run folder (``write_train_outputs``)."""

    manifest: Manifest
    dataset: Dataset
    data: SplitData
    result: TrainingResult
    ranker: WatchAndLike | None  # None: the preset ranks by predicted rating
    also_liked: pd.DataFrame  # movie_id, rank, other_movie_id, score (raw ids)


def train_stage(config: Config, verbose: int = 1) -> TrainOutputs:
    """Load, split, train, evaluate, fit the ranker; write the run folder's train outputs.

    Nothing is written until the data has been loaded and validated.
    """
    require_new_run(config.out)  # a read-only or misnamed --out fails now, not after training
    timings: dict[str, float] = {}
    previous = None
    if config.warm_start is not None:  # a damaged or mismatched run fails now, in one line
        previous = load_previous_run(config.warm_start)
        check_shape(previous, config.model)
    with _timed(timings, "load"):
        dataset = load_dataset(config.data, config.cache_dir)
    _log_dataset(dataset)
    data = split_data(dataset, config)
    extra: dict[str, Any] = {}
    if previous is not None:
        check_scale(previous, config.model, dataset.scale)
        warm = describe(previous, data.encoding)
        log.info(
            "warm start from run %s: %s of %s users and %s of %s movies known",
            warm.from_run,
            f"{warm.known_users:,}",
            f"{data.encoding.n_users:,}",
            f"{warm.known_movies:,}",
            f"{data.encoding.n_movies:,}",
        )
        extra["warm_start"] = warm.as_dict()
    with _timed(timings, "train"):
        result = train_split(
            config.model, data, dataset.scale, config.seed, verbose=verbose, previous=previous
        )
    with _timed(timings, "evaluate"):
        metrics, evaluated = evaluate_split(config, data, dataset.scale, result)
    served_result, refit = result, None
    if config.model.serve_refit:
        with _timed(timings, "refit"):
            model, refit = serving_rating_model(config, data, dataset.scale, result, verbose)
        served_result = dataclasses.replace(result, model=model)
    # Judged on held-out data, served from all of it. The ranker is fit twice: evaluation's
    # fit (train split) is the one whose metrics are reported, and it cannot serve, because
    # it never saw the validation and test ratings, a user's latest ones on a temporal split.
    # The served one is refit on every rating with the settings chosen on validation. The
    # also-liked table is co-like counts, not a fit: it is counted on every rating.
    with _timed(timings, "item_item"):
        ranker = serving_ranker(data, config.model, evaluated)
        neighbours = also_liked_neighbours(data)
    manifest = build_manifest(
        config, dataset, data.encoding, served_result, data.labels, metrics, timings
    )
    served = served_models(config, data, result, evaluated, metrics, refit)
    manifest = dataclasses.replace(manifest, extra={**manifest.extra, **extra, "served": served})
    write_train_outputs(
        config.out, TrainedArtifacts(manifest, dataset, data, served_result, ranker, neighbours)
    )
    return TrainOutputs(config.out, manifest)


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


def _log_dataset(dataset: Dataset) -> None:
    log.info(
        "%s: %s users rated %s movies (ratings = %s, catalogue = %s movies)",
        dataset.name,
        f"{dataset.ratings['user_id'].nunique():,}",
        f"{dataset.ratings['movie_id'].nunique():,}",
        f"{len(dataset.ratings):,}",
        f"{len(dataset.movies):,}",
    )


def evaluate_split(
    config: Config, data: SplitData, scale: RatingScale, result: TrainingResult
) -> tuple[dict[str, Any], Evaluation]:
    """run.json's metrics: the model and the baselines on the test set (the validation set
    when there is none); and the evaluation, with the preset's EASE ranker fit on the train
    split (None for a preset that ranks by predicted rating) and its settings' choice."""
    test = data.mask(TEST)
    evaluated_on = "test" if test.any() else "validation"
    evaluation = evaluate(
        config.preset,
        result.model,
        HeldOut(
            data.rated,
            data.mask(TRAIN),
            test if test.any() else data.mask(VAL),
            scale,
            data.timestamps,
        ),
        config.model,
        seed=config.seed,
        training_seconds=result.seconds,
    )
    for row in evaluation.rows:
        log.info(
            "%-16s %s RMSE=%s MAE=%s nDCG@10=%s",
            row.model,
            evaluated_on,
            *(("n/a" if x is None else f"{x:.4f}") for x in (row.rmse, row.mae, row.ndcg_at_10)),
        )
    metrics = {"evaluated_on": evaluated_on, "rows": [m.as_dict() for m in evaluation.rows]}
    if evaluation.tried:
        metrics["ranker_validation"] = evaluation.tried
    return metrics, evaluation


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
        seed=config.seed + 1,
        verbose=verbose,
        scale=scale,
        side=data.side,
        fixed_epochs=epochs,
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
        seed=config.seed,
        verbose=verbose,
        scale=scale,
        side=data.side,
        fixed_epochs=epochs,
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


def build_manifest(
    config: Config,
    dataset: Dataset,
    encoding: IdEncoding,
    result: TrainingResult,
    labels: np.ndarray,
    metrics: dict[str, Any],
    timings: dict[str, float],
) -> Manifest:
    created = datetime.now(UTC)
    model, history = result.model, result.history
    fingerprint = hashlib.sha256(
        (dataset.sha256 + json.dumps(config.to_dict(), sort_keys=True)).encode()
    ).hexdigest()[:8]
    return Manifest(
        run_id=f"{created:%Y%m%dT%H%M%SZ}-{fingerprint}",
        created_at=created.isoformat(timespec="seconds"),
        dataset=DatasetInfo(
            name=dataset.name,
            sha256=dataset.sha256,
            n_users=encoding.n_users,
            n_movies=encoding.n_movies,
            n_rated_movies=int(dataset.ratings["movie_id"].nunique()),
            n_ratings=len(dataset.ratings),
            scale=dataset.scale,
            split={
                "train": int((labels == TRAIN).sum()),
                "validation": int((labels == VAL).sum()),
                "test": int((labels == TEST).sum()),
            },
        ),
        config=config.to_dict(),
        model=ModelInfo(
            preset=config.preset,
            parameters=trainable_parameters(model),
            layers=describe_layers(model),
            epochs_run=len(history),
            rating_mean=model.rating_mean,
        ),
        history=[{str(k): v for k, v in row.items()} for row in history.to_dict(orient="records")],
        versions=versions(),
        metrics=metrics,
        training_seconds=round(result.seconds, 3),
        timings={k: round(v, 3) for k, v in timings.items()},
        extra={"training": result.settings} if result.settings else {},
    )


def describe_layers(model: keras.Model) -> list[str]:
    """A line per layer, e.g. "user_embedding: Embedding(610, 8)", for the site and run.json."""
    lines = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.layers.Embedding):
            lines.append(f"{layer.name}: Embedding({layer.input_dim}, {layer.output_dim})")
        elif isinstance(layer, keras.layers.Dense):
            activation = getattr(layer.activation, "__name__", str(layer.activation))
            lines.append(f"{layer.name}: Dense({layer.units}, {activation})")
        elif isinstance(layer, keras.layers.Dropout):
            lines.append(f"{layer.name}: Dropout({layer.rate})")
    return lines


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "movielens-job",
        "keras",
        "tensorflow",
        "tensorflow-cpu",
        "numpy",
        "pandas",
        "duckdb",
        "jax",
        "torch",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    found["keras_backend"] = keras.backend.backend()
    return found


def write_train_outputs(out: Path, made: TrainedArtifacts) -> None:
    """Every file atomically; run.json last, so its presence means the stage finished.

    Every file is written under a temporary name first; only when all are written (a full
    disk fails here, with the previous run whole) are run.json and the later stages' outputs
    of the previous run removed and the new files renamed into place. A run killed during the
    renames leaves a folder without run.json, which every later stage refuses.
    """
    manifest, dataset, model = made.manifest, made.dataset, made.result.model
    encoding, labels = made.data.encoding, made.data.labels
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out)
    remove_dead_temporaries(out / PARTS_DIR)
    n_ratings = np.bincount(
        encoding.encode_movies(dataset.ratings["movie_id"]), minlength=encoding.n_movies
    )
    similar = similar_movies_table(
        encoding.movie_ids, movie_vectors(model), n_ratings, N_SIMILAR, SIMILAR_MIN_RATINGS
    )
    retired: list[Path | None] = []

    def finish(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:  # every file renamed into place: the run is complete
            write_manifest(out, manifest)

    with contextlib.ExitStack() as stack:
        # Left last: Ctrl-C held from critical.hold() on is delivered after run.json.
        critical = stack.enter_context(SignalsDeferred())
        stack.push(finish)
        tmp = stack.enter_context(atomic_path(out / MODEL_FILE))
        model.save(tmp)
        encoding.save(stack.enter_context(atomic_path(out / ENCODING_FILE)))
        made.result.history.to_csv(
            stack.enter_context(atomic_path(out / HISTORY_FILE)), index=False
        )
        write_json(stack.enter_context(atomic_path(out / METRICS_FILE)), manifest.metrics)
        similar.to_parquet(stack.enter_context(atomic_path(out / SIMILAR_FILE)), index=False)
        if made.ranker is not None:
            made.ranker.save(stack.enter_context(atomic_path(out / RANKER_FILE)))
        made.also_liked.to_parquet(
            stack.enter_context(atomic_path(out / ALSO_LIKED_FILE)), index=False
        )
        tmp = stack.enter_context(atomic_path(out / DATASET_DIR))
        tmp.mkdir()
        dataset.ratings.assign(split=labels).to_parquet(tmp / "ratings.parquet", index=False)
        dataset.movies.to_parquet(tmp / "movies.parquet", index=False)
        dataset.tags.to_parquet(tmp / "tags.parquet", index=False)
        dataset.links.to_parquet(tmp / "links.parquet", index=False)
        # Everything is written. Retire the previous run (its run.json first), then the
        # renames on leaving: outputs of later stages belong to another model and must not
        # be merged or published with this one.
        critical.hold()
        (out / RUN_JSON).unlink(missing_ok=True)
        retired += [retire(out / stale) for stale in DOWNSTREAM_OUTPUTS]
        if made.ranker is None:  # a previous run's ranker would be read as this run's
            retired.append(retire(out / RANKER_FILE))
    for path in retired:
        remove_path(path)
