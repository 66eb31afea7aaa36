"""Baselines and test metrics: is the model better than predicting an average?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from job.data import RatingScale


@dataclass(frozen=True)
class Metrics:
    model: str
    rmse: float
    mae: float
    n: int

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def error_metrics(name: str, predicted: np.ndarray, actual: np.ndarray) -> Metrics:
    error = np.asarray(predicted, "float64") - np.asarray(actual, "float64")
    if error.size == 0:
        return Metrics(name, float("nan"), float("nan"), 0)
    return Metrics(name, float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error))), int(error.size))


def clip(ratings: np.ndarray, scale: RatingScale) -> np.ndarray:
    return np.clip(ratings, scale.low, scale.high)


def global_mean_baseline(train_ratings: np.ndarray, n_movies: int) -> np.ndarray:
    """Per-movie predictions that are all the training mean (the article's first baseline)."""
    return np.full(n_movies, float(np.mean(train_ratings)))


def movie_mean_baseline(train_movies: np.ndarray, train_ratings: np.ndarray, n_movies: int) -> np.ndarray:
    """Each movie's mean training rating; the global mean for movies with none (the article's
    second, and best, baseline)."""
    sums = np.bincount(train_movies, weights=train_ratings, minlength=n_movies)
    counts = np.bincount(train_movies, minlength=n_movies)
    fallback = float(np.mean(train_ratings))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)


@dataclass(frozen=True)
class BiasModel:
    """rating ≈ mean + b_user + b_movie, fitted by regularised alternating least squares."""

    mean: float
    user_bias: np.ndarray
    movie_bias: np.ndarray

    def predict(self, users: np.ndarray, movies: np.ndarray) -> np.ndarray:
        return self.mean + self.user_bias[users] + self.movie_bias[movies]


def fit_biases(
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_movies: int,
    reg_user: float = 15.0,
    reg_movie: float = 10.0,
    iterations: int = 10,
) -> BiasModel:
    """The user+movie bias baseline. The regularisation (the values Surprise's BaselineOnly
    uses) shrinks the biases of users and movies with few ratings towards zero."""
    mean = float(np.mean(ratings))
    b_user = np.zeros(n_users)
    b_movie = np.zeros(n_movies)
    n_u = np.bincount(users, minlength=n_users)
    n_m = np.bincount(movies, minlength=n_movies)
    for _ in range(iterations):
        residual = ratings - mean - b_user[users]
        b_movie = np.bincount(movies, weights=residual, minlength=n_movies) / (reg_movie + n_m)
        residual = ratings - mean - b_movie[movies]
        b_user = np.bincount(users, weights=residual, minlength=n_users) / (reg_user + n_u)
    return BiasModel(mean, b_user, b_movie)
