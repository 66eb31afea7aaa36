"""Fitting the Keras rating model: Keras' own loop, progress bar and early stopping, with the
batch and learning rate that the training set's size calls for."""

from __future__ import annotations

import dataclasses
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.core.config import ModelConfig
from job.data.features import SideFeatures
from job.data.interactions import EncodedRatings, SplitData
from job.data.movielens import RatingScale
from job.data.split import TRAIN, VAL
from job.models.rating import (
    FactorisedModel,
    build_model,
    compile_model,
    predict_ratings,
    training_targets,
)
from job.stages.evaluate import clip, error_metrics
from job.stages.warmstart import PreviousRun, carry_over

log = logging.getLogger(__name__)


# Training at scale: a step's fixed cost (the whole-table L2 updates every row with Adam)
# dominates small batches, so from LARGE_TRAINING training ratings on the batch grows to about
# n_train / STEPS_PER_EPOCH (a power of two, at most MAX_BATCH), the learning rate by the
# square root of the batch's growth (Adam's usual rule: the gradient's noise falls with
# sqrt(batch)), patience drops to 1 and an epoch must gain LARGE_MIN_DELTA validation MAE to
# count (an epoch is millions of ratings: a worse one is a real signal), and epochs are at
# most LARGE_EPOCHS. Below it (ml-latest-small, ml-100k, ml-1m) nothing changes: their
# settings were tuned at batch 500. Figures: docs/benchmarks.md, "Large-batch settings".
LARGE_TRAINING = 2_000_000
STEPS_PER_EPOCH = 1_000
MAX_BATCH = 16_384
LARGE_PATIENCE = 1
LARGE_EPOCHS = 10
LARGE_MIN_DELTA = 0.001
# The large-batch rate is warmed up over half an epoch and halved every epoch from the first
# step (the schedule in ModelConfig), chosen on validation over a constant rate.
LARGE_WARMUP_EPOCHS = 0.5
# Training steps per call into the compiled train function (Keras' steps_per_execution): the
# same batches in the same order, so the same weights and history, without a Python round
# trip per step.
STEPS_PER_EXECUTION = 16
# A warm start (job.stages.warmstart) begins near the previous optimum and overfits from its
# second epoch on: patience 1 keeps the same weights as a longer patience and stops sooner.
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
class FitOptions:
    """How one fit runs, besides the model's settings: its seed and Keras' verbosity; what the
    dataset adds (the classifier's rating scale, the DLRM model's side features); a warm
    start's first weights; and, for a refit, a fixed number of epochs with no early stopping
    (validation is then only reported)."""

    seed: int = 0
    verbose: int = 1
    scale: RatingScale | None = None
    side: SideFeatures | None = None
    start_from: Callable[[FactorisedModel], None] | None = None
    fixed_epochs: int | None = None


def train(
    config: ModelConfig,
    train_part: EncodedRatings,
    val_part: EncodedRatings,
    options: FitOptions,
) -> TrainingResult:
    """Train on encoded (user, movie) pairs; validation drives early stopping only.

    The target is the rating minus its training mean (the article's "centred" y), which
    helps the network start from a sensible output; the classifier's target adds the
    rating's class (``model.training_targets``).
    """
    rating_mean = float(np.mean(train_part.ratings))
    fit_config, min_delta = _fit_settings(config, len(train_part.ratings), options)
    model = build_model(
        fit_config,
        train_part.n_users,
        train_part.n_movies,
        rating_mean,
        options.seed,
        scale=options.scale,
        side=options.side,
    )
    compile_model(model, fit_config, STEPS_PER_EXECUTION)
    if options.start_from is not None:
        options.start_from(model)
    clock = EpochClock()
    callbacks: list[keras.callbacks.Callback] = [clock]
    if options.fixed_epochs is None:
        callbacks.append(_early_stopping(fit_config, min_delta))
    started = time.perf_counter()
    fitted = model.fit(
        x=train_part.pairs,
        y=training_targets(model, train_part.ratings),
        batch_size=fit_config.batch_size,
        epochs=fit_config.epochs,
        validation_data=(val_part.pairs, training_targets(model, val_part.ratings)),
        callbacks=callbacks,
        shuffle=True,
        verbose=options.verbose,
    )
    seconds = time.perf_counter() - started
    predicted = predict_ratings(model, val_part.users, val_part.movies)
    if options.scale is not None:
        predicted = clip(predicted, options.scale)
    validation = error_metrics("model", predicted, val_part.ratings)
    history = pd.DataFrame(fitted.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    keep = ["epoch", "loss", "mae", "val_loss", "val_mae", "accuracy", "val_accuracy"]
    n_train = len(train_part.ratings)
    settings = {
        **_reported_settings(fit_config, min_delta),
        "train_ratings": n_train,
        # What the kept weights score on the validation set (what warm starts are judged by).
        "validation_rmse": round(validation.rmse or float("nan"), 6),
        "ratings_per_second": round(n_train * len(history) / max(seconds, 1e-9)),
        "epoch_seconds": clock.ends,
    }
    kept = history[[c for c in keep if c in history]]
    return TrainingResult(model=model, history=kept, seconds=seconds, settings=settings)


def _early_stopping(config: ModelConfig, min_delta: float) -> keras.callbacks.EarlyStopping:
    return keras.callbacks.EarlyStopping(
        monitor="val_mae",
        min_delta=min_delta,
        patience=config.patience,
        mode="min",
        restore_best_weights=config.restore_best_weights,
    )


def _reported_settings(config: ModelConfig, min_delta: float) -> dict[str, Any]:
    """run.json's ``training``: the settings the fit ran with."""
    return {
        "batch_size": config.batch_size,
        "learning_rate": config.learning_rate,
        "warmup_steps": config.warmup_steps,
        "halve_every": config.halve_every,
        "patience": config.patience,
        "max_epochs": config.epochs,
        "min_delta": min_delta,
    }


def _fit_settings(
    config: ModelConfig, n_train: int, options: FitOptions
) -> tuple[ModelConfig, float]:
    """The settings a fit runs with, and early stopping's minimum gain: the preset's, grown
    for large training sets (``training_settings``), with a warm start's patience or a
    refit's fixed epochs."""
    fit_config = training_settings(config, n_train)
    min_delta = 0.0 if fit_config == config else LARGE_MIN_DELTA
    if fit_config != config:
        log.info(
            "%s training ratings: batch %d, learning rate %.2g (warmed up over %d steps, "
            "halved every %d), patience %d, at most %d epochs "
            "(the preset's %d, %.2g, %d, %d are for smaller data)",
            f"{n_train:,}",
            fit_config.batch_size,
            fit_config.learning_rate,
            fit_config.warmup_steps,
            fit_config.halve_every,
            fit_config.patience,
            fit_config.epochs,
            config.batch_size,
            config.learning_rate,
            config.patience,
            config.epochs,
        )
    if options.start_from is not None:
        fit_config = dataclasses.replace(
            fit_config, patience=min(fit_config.patience, WARM_PATIENCE)
        )
    if options.fixed_epochs is not None:
        fit_config = dataclasses.replace(fit_config, epochs=options.fixed_epochs)
    return fit_config, min_delta


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
        FitOptions(
            seed=seed,
            verbose=verbose,
            scale=scale,
            side=data.side,
            start_from=None
            if previous is None
            else partial(carry_over, previous, encoding=data.encoding),
        ),
    )
