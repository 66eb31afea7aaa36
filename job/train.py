"""Fit a rating model with Keras' own loop, progress bar and early stopping."""

from __future__ import annotations

import time
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from job.config import Config, ModelConfig
from job.data import Dataset, RatingScale
from job.errors import JobError
from job.features import IdEncoding, SideFeatures, side_features
from job.model import build_model, training_targets
from job.split import TRAIN, VAL, split_ratings


@dataclass(frozen=True)
class TrainingResult:
    model: keras.Model
    history: pd.DataFrame  # epoch, loss, mae, val_loss, val_mae (+ accuracy, val_accuracy)
    seconds: float

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

    def mask(self, part: int) -> np.ndarray:
        return self.labels == part


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
    )


def train_split(
    config: ModelConfig, data: SplitData, scale: RatingScale, seed: int, verbose: int = 1
) -> TrainingResult:
    """``train`` on a ``SplitData``'s training part, stopping early on its validation part."""
    train_part, val_part = data.mask(TRAIN), data.mask(VAL)
    return train(
        config,
        data.encoding.n_users,
        data.encoding.n_movies,
        data.pairs[train_part],
        data.ratings[train_part],
        data.pairs[val_part],
        data.ratings[val_part],
        seed=seed,
        verbose=verbose,
        scale=scale,
        side=data.side,
    )


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
    scale: RatingScale | None = None,
    side: SideFeatures | None = None,
) -> TrainingResult:
    """Train on encoded (user, movie) pairs; validation drives early stopping only.

    The target is the rating minus its training mean (the article's "centred" y), which
    helps the network start from a sensible output; the classifier's target adds the
    rating's class (``model.training_targets``). ``scale`` is needed by the classifier,
    ``side`` by the DLRM model.
    """
    rating_mean = float(np.mean(train_ratings))
    model = build_model(config, n_users, n_movies, rating_mean, seed, scale=scale, side=side)
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
        y=training_targets(model, train_ratings),
        batch_size=config.batch_size,
        epochs=config.epochs,
        validation_data=(val_pairs, training_targets(model, val_ratings)),
        callbacks=[stop],
        shuffle=True,
        verbose=verbose,
    )
    seconds = time.perf_counter() - started
    history = pd.DataFrame(fitted.history)
    history.insert(0, "epoch", np.arange(1, len(history) + 1))
    keep = ["epoch", "loss", "mae", "val_loss", "val_mae", "accuracy", "val_accuracy"]
    return TrainingResult(
        model=model, history=history[[c for c in keep if c in history]], seconds=seconds
    )
