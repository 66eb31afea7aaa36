"""Fit a rating model with Keras' own loop, progress bar and early stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from job.config import ModelConfig
from job.model import build_model


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    history: pd.DataFrame  # epoch, loss, mae, val_loss, val_mae
    seconds: float

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def train(
    config: ModelConfig,
    n_users: int,
    n_movies: int,
    train_pairs: np.ndarray,
    train_ratings: np.ndarray,
    val_pairs: np.ndarray,
    val_ratings: np.ndarray,
    seed: int,
    verbose: int = 1,
) -> TrainingResult:
    """Train on encoded (user, movie) pairs; validation drives early stopping only.

    The target is the rating minus its training mean (the article's "centred" y), which
    helps the network start from a sensible output.
    """
    rating_mean = float(np.mean(train_ratings))
    model = build_model(config, n_users, n_movies, rating_mean, seed)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_mae",
        min_delta=0,
        patience=config.patience,
        mode="min",
        restore_best_weights=config.restore_best_weights,
    )
    started = time.perf_counter()
    fitted = model.fit(
        x=train_pairs,
        y=(train_ratings - rating_mean).astype("float32"),
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(val_pairs, (val_ratings - rating_mean).astype("float32")),
        callbacks=[stop],
        shuffle=True,
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    history = pd.DataFrame(fitted.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    keep = ["epoch", "loss", "mae", "val_loss", "val_mae"]
    return TrainingResult(model=model, history=history[[c for c in keep if c in history]], seconds=seconds)
