"""Baselines and test metrics: is the model better than predicting an average?

Two kinds of metric, for the model and every baseline alike:

- rating error on held-out ratings: RMSE and MAE (and the classifier's accuracy);
- ranking among each user's unwatched movies: precision@10, recall@10 and nDCG@10, with the
  held-out ratings of 4 stars or more as the relevant movies, and the catalogue coverage of
  the top-10 lists.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import keras
import numpy as np
from scipy import sparse

from job.core.baselines import BASELINE_NAMES, EASE, POPULARITY
from job.core.config import EASE_BASELINE_L2, RANK_SAMPLE_USERS, ModelConfig
from job.data.interactions import EncodedRatings, Interactions, popularity_order
from job.data.movielens import RatingScale
from job.models.itemitem import MIN_WATCHES, Ease, WatchAndLike, fit_ease, fit_watch_and_like
from job.models.rank import BlockScorer
from job.models.rating import predict_classes, predict_ratings
from job.stages.metrics import (
    RANK_K,
    RankingMetrics,
    ScoreFunction,
    constant_scorer,
    ranking_metrics,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Metrics:
    """One row of ``run.json``'s metrics (and the DuckDB ``metrics`` table).

    ``accuracy`` is the classifier's (most likely class == the rating), None for other
    models; ranking columns are None where there was nothing to rank.
    """

    model: str
    rmse: float | None  # None for a ranking baseline, which predicts no rating
    mae: float | None
    n: int
    accuracy: float | None = None
    precision_at_10: float | None = None
    recall_at_10: float | None = None
    ndcg_at_10: float | None = None
    coverage_at_10: float | None = None
    ranked_users: int | None = None  # users the ranking columns average over
    training_seconds: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_ranking(self, ranking: RankingMetrics | None) -> Metrics:
        if ranking is None:
            return self
        return replace(
            self,
            precision_at_10=ranking.precision,
            recall_at_10=ranking.recall,
            ndcg_at_10=ranking.ndcg,
            coverage_at_10=ranking.coverage,
            ranked_users=ranking.n_users,
        )


def error_metrics(name: str, predicted: np.ndarray, actual: np.ndarray) -> Metrics:
    error = np.asarray(predicted, "float64") - np.asarray(actual, "float64")
    if error.size == 0:
        return Metrics(name, float("nan"), float("nan"), 0)
    return Metrics(
        name, float(np.sqrt(np.mean(error**2))), float(np.mean(np.abs(error))), int(error.size)
    )


def clip(ratings: np.ndarray, scale: RatingScale) -> np.ndarray:
    return np.clip(ratings, scale.low, scale.high)


def global_mean_baseline(train_ratings: np.ndarray, n_movies: int) -> np.ndarray:
    """Per-movie predictions that are all the training mean (the article's first baseline)."""
    return np.full(n_movies, float(np.mean(train_ratings)))


def movie_mean_baseline(
    train_movies: np.ndarray, train_ratings: np.ndarray, n_movies: int
) -> np.ndarray:
    """Each movie's mean training rating; the global mean for movies with none (the article's
    second, and best, baseline)."""
    sums = np.bincount(train_movies, weights=train_ratings, minlength=n_movies)
    counts = np.bincount(train_movies, minlength=n_movies)
    fallback = float(np.mean(train_ratings))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), fallback)


# The bias baseline's regularisation (the values Surprise's BaselineOnly uses) and its passes.
BIAS_REG_USER, BIAS_REG_MOVIE, BIAS_ITERATIONS = 15.0, 10.0, 10


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
) -> BiasModel:
    """The user+movie bias baseline. The regularisation shrinks the biases of users and
    movies with few ratings towards zero."""
    reg_user, reg_movie, iterations = BIAS_REG_USER, BIAS_REG_MOVIE, BIAS_ITERATIONS
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


def accuracy(predicted_ratings: np.ndarray, actual: np.ndarray) -> float:
    """Share of exact hits: the predicted class's rating equals the actual rating."""
    if len(actual) == 0:
        return float("nan")
    return float(np.mean(np.isclose(predicted_ratings, actual)))


# ---------------------------------------------------------------------------------------
# Ranking: precision@k, recall@k, nDCG@k and coverage among each user's unwatched movies


@dataclass(frozen=True)
class HeldOut:
    """What evaluation reads: every rating, which of them trained the model (and fit the
    baselines), and which are held out to judge them."""

    rated: EncodedRatings
    train: np.ndarray  # bool mask over rated
    held_out: np.ndarray  # bool mask over rated
    scale: RatingScale
    timestamps: np.ndarray | None = None  # (n,) when each rating was given, if known

    @property
    def validation(self) -> np.ndarray:
        """bool mask over rated: neither trained on nor held out."""
        return ~self.train & ~self.held_out

    def history(self, mask: np.ndarray) -> Interactions:
        """The scorers' input: the ratings ``mask`` selects, as a user's history."""
        rated = self.rated
        return Interactions.from_ratings(
            rated.where(mask),
            self.train[mask],
            self.scale,
            None if self.timestamps is None else self.timestamps[mask],
        )


@dataclass(frozen=True)
class Baselines:
    """The baselines fit on the training ratings, and each fit's seconds."""

    global_mean: np.ndarray  # per movie
    movie_mean: np.ndarray
    biases: BiasModel
    counts: np.ndarray  # training ratings per movie (popularity)
    watched: sparse.csr_matrix  # training users x movies they rated
    ease_watched: Ease  # EASE over every training rating
    seconds: dict[str, float]


def fit_baselines(trained: EncodedRatings) -> Baselines:
    fitting: dict[str, float] = {}

    def timed(baseline: str, fit: Callable[[], Any]) -> Any:
        started = time.perf_counter()
        fitted = fit()
        fitting[baseline] = round(time.perf_counter() - started, 3)
        return fitted

    users, movies, ratings = trained.users, trained.movies, trained.ratings
    n_users, n_movies = trained.n_users, trained.n_movies
    global_mean = timed(BASELINE_NAMES[0], lambda: global_mean_baseline(ratings, n_movies))
    movie_mean = timed(BASELINE_NAMES[1], lambda: movie_mean_baseline(movies, ratings, n_movies))
    biases = timed(BASELINE_NAMES[2], lambda: fit_biases(users, movies, ratings, n_users, n_movies))
    counts = timed(POPULARITY, lambda: np.bincount(movies, minlength=n_movies).astype(float))
    watched = trained.liked(-np.inf)
    ease_watched, _ = timed(EASE, lambda: fit_ease(watched, EASE_BASELINE_L2, MIN_WATCHES))
    return Baselines(global_mean, movie_mean, biases, counts, watched, ease_watched, fitting)


@dataclass(frozen=True)
class Evaluation:
    """evaluate's metrics rows, and the models it fit that a run ships (fit once)."""

    rows: list[Metrics]
    ranker: WatchAndLike | None  # the preset's EASE ranker (None: it ranks by rating)
    # The ranker settings tried on the validation split, with their nDCG@10 there
    tried: list[dict[str, Any]] = field(default_factory=list)


def evaluate(
    name: str,
    model: keras.Model,
    split: HeldOut,
    config: ModelConfig,
    seed: int = 0,
    training_seconds: float | None = None,
    sample_users: int = RANK_SAMPLE_USERS,
) -> Evaluation:
    """Held-out metrics of the model, of the three rating baselines and two ranking ones,
    and the preset's ranker as it was judged.

    Rating error (RMSE, MAE; accuracy for the classifier) on the ``held_out`` ratings, all
    clipped to the scale. Ranking metrics among each held-out user's unwatched movies: every
    movie except those the user rated outside ``held_out`` (train and validation) is a
    candidate, ranked by the preset's recommendation score (``config.ranker``, through the
    scorer the score stage uses, fit on the train split alone), ties by training popularity
    (``interactions.popularity_order``). Ranking is judged on a seeded sample of at most
    ``sample_users`` held-out users (all of them on smaller data), stated in each row's
    ``ranked_users``. The ranking baselines, popularity and EASE over every rating, have no
    rating error. ``training_seconds`` is the model's; the baselines' are their own fits.

    The ranker (``config.ranker == "ease"``) is fit on the train split, like the rating
    model, and its settings (recency, rating weight) are chosen on the validation split
    (``choose_ranking``) before the held-out ratings are read. The run serves a ranker refit
    on every rating with the same settings (``train.train_stage``).
    """
    trained, held = split.rated.where(split.train), split.rated.where(split.held_out)
    fitted = fit_baselines(trained)
    log.info("Average rating in training set is %.2f stars", float(np.mean(trained.ratings)))
    rows = _error_rows(name, model, held, split.scale, fitted, training_seconds)
    ranker = (
        fit_watch_and_like(fitted.watched, trained.liked(), config, reuse=fitted.ease_watched)
        if config.ranker == "ease"
        else None
    )
    tried: list[dict[str, Any]] = []
    if ranker is not None:
        ranker, tried = choose_ranking(model, split, ranker, sample_users, seed)
    scorers = _ranking_scorers(model, split, ranker, fitted)
    order = popularity_order(trained.movies, split.rated.n_movies)
    known = split.rated.where(~split.held_out)
    seen = (known.users, known.movies)
    judged = sample(np.unique(held.users), sample_users, seed)
    in_sample = np.isin(held.users, judged)
    sampled = (held.users[in_sample], held.movies[in_sample], held.ratings[in_sample])
    metrics = [
        row.with_ranking(ranking_metrics(score, split.rated.n_movies, seen, sampled, order))
        for row, score in zip(rows, scorers, strict=True)
    ]
    return Evaluation(metrics, ranker, tried)


# The ranker settings ``choose_ranking`` tries: the recency half-life, as a fraction of a
# user's ratings (None: every rating counts alike), and the weight of the predicted rating.
# Weights of 0.3 and more never won on either split (they bury the item-item signal).
HALF_LIVES: tuple[float | None, ...] = (None, 0.25, 0.1)
RATING_WEIGHTS = (0.0, 0.03, 0.1)
# A setting must beat the simpler one by this much validation nDCG@10: less is noise.
MIN_GAIN = 0.001
# Validation users the choice judges at most: each setting is a ranking pass (the rating
# model runs on each user's re-rank candidates alone), so the choice is bounded at any size.
CHOICE_USERS = 1_000


def choose_ranking(
    model: keras.Model,
    split: HeldOut,
    ranker: WatchAndLike,
    sample_users: int = RANK_SAMPLE_USERS,
    seed: int = 0,
) -> tuple[WatchAndLike, list[dict[str, Any]]]:
    """The ranker's ``half_life`` and ``rating_weight`` with the best validation nDCG@10,
    and every setting tried. History = the train split, judged = the validation split; the
    held-out ratings are not read. One coordinate at a time: the half-life without the
    rating, then the weight at the chosen half-life. A setting replaces the simpler one
    only if it is better by ``MIN_GAIN``. Without a validation split the ranker is returned as is.

    Every setting shares one fit: the half-life re-weights a user's history vector, not the
    EASE weights, and the rating term runs the rating model on each user's item-item
    re-rank candidates alone (``rank.RERANK_CANDIDATES``), so a setting costs one ranking pass.
    """
    validation = split.validation
    if not validation.any():
        return ranker, []
    train = split.train
    scorer = BlockScorer(model, split.history(train), RANK_K, with_ratings=True, ranker=ranker)
    rated = split.rated
    order = popularity_order(rated.movies[train], rated.n_movies)
    seen = (rated.users[train], rated.movies[train])
    held = rated.where(validation)
    judged_users = sample(np.unique(held.users), min(sample_users, CHOICE_USERS), seed)
    in_sample = np.isin(held.users, judged_users)
    judged = (held.users[in_sample], held.movies[in_sample], held.ratings[in_sample])
    tried: list[dict[str, Any]] = []

    def judge(candidate: WatchAndLike) -> float:
        # The same scorer (its compiled rating function) for every candidate: only the
        # ranker's settings differ, and they are read when a block is scored.
        scorer.ranker = candidate
        found = ranking_metrics(scorer.score_matrix, rated.n_movies, seen, judged, order)
        ndcg = -math.inf if found is None else found.ndcg
        tried.append(
            {
                "half_life": candidate.half_life,
                "rating_weight": candidate.rating_weight,
                "validation_ndcg_at_10": None if found is None else round(ndcg, 6),
            }
        )
        return ndcg

    best, best_ndcg = ranker, judge(ranker)
    for changes in (
        *({"half_life": h} for h in HALF_LIVES if h != ranker.half_life),
        None,  # the weights below are tried at the half-life chosen above
        *({"rating_weight": w} for w in RATING_WEIGHTS if w != ranker.rating_weight),
    ):
        if changes is None or ("half_life" in changes and split.timestamps is None):
            continue
        candidate = replace(best, **changes)
        ndcg = judge(candidate)
        if ndcg > best_ndcg + MIN_GAIN:
            best, best_ndcg = candidate, ndcg
    return best, tried


def _error_rows(
    name: str,
    model: keras.Model,
    held: EncodedRatings,
    scale: RatingScale,
    fitted: Baselines,
    training_seconds: float | None,
) -> list[Metrics]:
    """The rows in BASELINE_NAMES' order after the model's, with their rating errors."""
    users, movies, actual = held.users, held.movies, held.ratings
    model_row = error_metrics(name, clip(predict_ratings(model, users, movies), scale), actual)
    if getattr(model, "classes", False):
        model_row = replace(
            model_row, accuracy=accuracy(predict_classes(model, users, movies), actual)
        )
    no_error = Metrics(POPULARITY, None, None, len(actual))
    rows = [
        replace(
            model_row,
            training_seconds=None if training_seconds is None else round(training_seconds, 3),
        ),
        error_metrics(BASELINE_NAMES[0], fitted.global_mean[movies], actual),
        error_metrics(BASELINE_NAMES[1], fitted.movie_mean[movies], actual),
        error_metrics(BASELINE_NAMES[2], clip(fitted.biases.predict(users, movies), scale), actual),
        no_error,
        replace(no_error, model=EASE),
    ]
    rows[1:] = [replace(row, training_seconds=fitted.seconds[row.model]) for row in rows[1:]]
    return rows


def _ranking_scorers(
    model: keras.Model,
    split: HeldOut,
    ranker: WatchAndLike | None,
    fitted: Baselines,
) -> list[ScoreFunction]:
    """The model's ranking, through the production scorer, and each baseline's.

    Everything is fit on the train split; a user's history (the scorer's input, as at
    scoring time) is every rating outside the held-out set, the same ratings that are never
    candidates."""
    history = split.history(~split.held_out)
    scorer = BlockScorer(model, history, RANK_K, with_ratings=True, ranker=ranker)
    ease_watched, biases = fitted.ease_watched, fitted.biases
    # The user's bias shifts every movie alike, so it cannot change a user's ranking.
    return [
        scorer.score_matrix,
        constant_scorer(fitted.global_mean),
        constant_scorer(fitted.movie_mean),
        constant_scorer(biases.mean + biases.movie_bias),
        constant_scorer(fitted.counts),
        lambda users: ease_watched.scores(history.watched[users]),
    ]


def sample(users: np.ndarray, at_most: int, seed: int) -> np.ndarray:
    """``users`` if there are at most ``at_most``, else a seeded sample of that many, sorted."""
    if len(users) <= at_most:
        return users
    return np.sort(np.random.default_rng(seed).choice(users, size=at_most, replace=False))
