"""Scoring throughput on a synthetic MovieLens-shaped catalogue: the fast path against the
article's approach (one ``model.predict`` per user over that user's unwatched movies).

The model is a preset's architecture (the default preset's unless ``--preset`` says
otherwise: the DLRM rating model, ranked by the WatchAndLike EASE ranker) with random,
untrained weights: throughput depends on the shapes, not on the values of the weights. The
EASE ranker is fit on the synthetic ratings, as the train stage fits it. The data comes from
``job.synthetic``: long-tailed like MovieLens (every user has at least 20 ratings, activity
is log-normal and movie popularity Zipf-like), so most pairs are unwatched and a few users
have rated thousands of movies.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from dataclasses import dataclass
from importlib import metadata

import keras
import numpy as np

from job.config import DEFAULT_PRESET, ModelConfig, ScoreOptions, model_config
from job.data import HALF_STARS
from job.errors import ConfigError
from job.features import IdEncoding, SideFeatures, side_features
from job.interactions import ColdStart, Interactions, SeenPairs, liked_matrix
from job.itemitem import WatchAndLike, fit_watch_and_like
from job.memory import peak_rss, reset_peak_rss
from job.model import FactorisedModel, build_model, predict_ratings
from job.rank import BlockScorer, score_blocks
from job.synthetic import (
    Shape,
    movie_ids,
    movies_frame,
    resolve_shape,
    synthetic_ratings,
    tags_frame,
)

log = logging.getLogger(__name__)

BenchShape = Shape  # the name this module's callers know


@dataclass(frozen=True)
class PathTiming:
    label: str
    users: int
    pairs: int
    seconds: float
    cpu_seconds: float  # this process' CPU time: on a shared machine, what the path cost
    peak_rss_bytes: int | None = None
    rss_before_bytes: int | None = None

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / max(self.seconds, 1e-9)

    @property
    def pairs_per_cpu_second(self) -> float:
        return self.pairs / max(self.cpu_seconds, 1e-9)


@dataclass(frozen=True)
class BenchResult:
    shape: BenchShape
    n_ratings: int
    top_k: int
    block_users: int
    generate_seconds: float
    compile_seconds: float
    fast: PathTiming
    article: PathTiming
    batched: PathTiming
    max_difference: float  # fast vs reference top-K scores (and ratings) of the sampled users
    process_peak_rss_bytes: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    preset: str = "seed"
    model_name: str = "RatingModel"
    ranker: str = "rating"  # what the top-K is ranked by: "rating" or "ease"
    ranker_fit_seconds: float = 0.0

    @property
    def speedup(self) -> float:
        return self.fast.pairs_per_second / max(self.article.pairs_per_second, 1e-9)

    @property
    def speedup_batched(self) -> float:
        return self.fast.pairs_per_second / max(self.batched.pairs_per_second, 1e-9)


@dataclass(frozen=True)
class BenchOptions:
    """``python -m job bench``: the synthetic data (a shape; users, movies and ratings
    override it) and how it is scored. Validated when made."""

    shape: str | None = None
    users: int | None = None
    movies: int | None = None
    ratings: int | None = None
    top_k: int = 10
    block_users: int | None = None
    reference_users: int = 5  # users timed on the article's path
    seed: int = 0  # of the synthetic data and the random weights
    preset: str = DEFAULT_PRESET

    def __post_init__(self) -> None:
        if self.reference_users < 1:
            raise ConfigError(f"--reference-users must be at least 1 (got {self.reference_users})")
        ScoreOptions(top_k=self.top_k, block_users=self.block_users)  # the scoring flags' rules
        model_config(self.preset)  # a known preset


@dataclass(frozen=True)
class _Synthetic:
    inputs: Interactions
    side: SideFeatures | None
    n_ratings: int
    rating_mean: float
    seconds: float


def _synthetic_inputs(size: Shape, seed: int, config: ModelConfig) -> _Synthetic:
    """The shape's synthetic ratings as the scorers' inputs (and side features for DLRM)."""
    log.info(
        "generating %s users x %s movies, %s ratings",
        f"{size.users:,}",
        f"{size.movies:,}",
        f"{size.ratings:,}",
    )
    started = time.perf_counter()
    data = synthetic_ratings(size, seed)
    user_index, movie_index, stars = data.users, data.movies, data.ratings
    inputs = Interactions(
        seen=SeenPairs.from_pairs(user_index, movie_index, size.users, size.movies),
        cold=ColdStart.fit(
            user_index, movie_index, stars, np.ones(len(stars), bool), size.users, size.movies
        ),
        scale=HALF_STARS,
        watched=liked_matrix(user_index, movie_index, stars, size.users, size.movies, -np.inf),
        liked=liked_matrix(user_index, movie_index, stars, size.users, size.movies),
    )
    n_ratings = len(stars)
    rating_mean = float(stars.mean())
    side = None
    if config.architecture == "dlrm":
        side = side_features(
            movies_frame(data.catalogue).rename(
                columns={"movieId": "movie_id", "title": "title", "genres": "genres"}
            ),
            tags_frame(data, np.random.default_rng([seed, 1])).rename(
                columns={"userId": "user_id", "movieId": "movie_id"}
            ),
            IdEncoding(np.arange(1, size.users + 1, dtype="int64"), movie_ids(size.movies)),
            config.n_tags,
        )
    del user_index, movie_index, stars, data
    generate_seconds = time.perf_counter() - started

    return _Synthetic(inputs, side, n_ratings, rating_mean, generate_seconds)


def _fit_ranker(inputs: Interactions, config: ModelConfig) -> tuple[WatchAndLike | None, float]:
    """The preset's ranker on the synthetic ratings (none for "rating"), and its seconds."""
    if config.ranker != "ease":
        return None, 0.0
    started = time.perf_counter()
    ranker = fit_watch_and_like(inputs.watched, inputs.liked, config).ranker
    return ranker, time.perf_counter() - started


def run_bench(options: BenchOptions) -> BenchResult:
    """Generate the data, score every user to top-K on the fast path, time the reference on a
    sample of ``reference_users`` users, and check that both agree on that sample.

    ``preset``'s architecture is built with random weights; where the preset ranks by EASE
    (the default), the WatchAndLike ranker is fit on the synthetic ratings first (not timed),
    and both paths produce the same thing: the predicted rating of every unwatched movie and
    the top K by the ranker's score.
    """
    config = model_config(options.preset)
    seed, top_k, block_users = options.seed, options.top_k, options.block_users
    reference_users, preset = options.reference_users, options.preset
    load_before = os.getloadavg()
    size = resolve_shape(options.shape, options.users, options.movies, options.ratings)
    synthetic = _synthetic_inputs(size, seed, config)
    inputs, side, n_ratings = synthetic.inputs, synthetic.side, synthetic.n_ratings
    rating_mean, generate_seconds = synthetic.rating_mean, synthetic.seconds
    ranker, ranker_seconds = _fit_ranker(inputs, config)
    model = build_model(
        config, size.users, size.movies, rating_mean, seed, scale=HALF_STARS, side=side
    )
    everyone = np.arange(size.users, dtype=np.int32)
    sample = np.sort(
        np.random.default_rng(seed).choice(
            size.users, min(reference_users, size.users), replace=False
        )
    )

    started = time.perf_counter()
    scorer = BlockScorer(model, inputs, top_k, block_users, ranker=ranker)
    scorer(everyone[: scorer.block_users])  # compiles; excluded from the timing
    compile_seconds = time.perf_counter() - started

    rss_before = reset_peak_rss()
    sampled: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    for block in score_blocks(scorer, everyone):
        for row in np.flatnonzero(np.isin(block.users, sample)):
            sampled[int(block.users[row])] = (
                block.top_scores[row],
                block.top_movies[row],
                block.top_ratings[row],
            )
    fast_seconds, fast_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    unwatched = int(size.users * size.movies - inputs.seen.counts.sum())
    fast = PathTiming(
        f"fast: XLA, blocks of {scorer.block_users} users, top-{scorer.k}",
        size.users,
        unwatched,
        fast_seconds,
        fast_cpu,
        peak_rss(),
        rss_before,
    )

    article, batched, difference = time_reference(model, inputs, sample, sampled, scorer)
    return BenchResult(
        shape=size,
        n_ratings=n_ratings,
        top_k=scorer.k,
        block_users=scorer.block_users,
        generate_seconds=generate_seconds,
        compile_seconds=compile_seconds,
        fast=fast,
        article=article,
        batched=batched,
        max_difference=difference,
        process_peak_rss_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        load_before=load_before,
        load_after=os.getloadavg(),
        preset=preset,
        model_name=type(model).__name__,
        ranker=config.ranker,
        ranker_fit_seconds=ranker_seconds,
    )


def time_reference(
    model: FactorisedModel,
    inputs: Interactions,
    sample: np.ndarray,
    fast_top: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]],
    scorer: BlockScorer,
) -> tuple[PathTiming, PathTiming, float]:
    """The article's approach on ``sample``: per user, ``model.predict`` (Keras' default batch
    of 32) on that user's unwatched movies, plus, where the preset ranks by a ranker, that
    user's ranker scores; then the same with a batch of 65,536. Returns both timings and the
    largest difference between the fast and the reference top-K scores and their ratings."""
    warm = np.zeros((64, 2), dtype="int32")
    model.predict(warm, verbose=0)  # the first call traces the predict function: not timed
    predict_ratings(model, warm[:, 0], warm[:, 1])
    ranker = scorer.ranker
    pairs = 0
    article_seconds = batched_seconds = article_cpu = batched_cpu = 0.0
    difference = 0.0
    for user in sample:
        movies = np.flatnonzero(~inputs.seen.mask(np.array([user]))[0]).astype("int32")
        users = np.full(len(movies), user, dtype="int32")
        started, cpu_started = time.perf_counter(), time.process_time()
        centred = model.predict(np.stack([users, movies], axis=1), verbose=0)[:, 0]
        affinity = _ranker_scores(ranker, inputs, user, movies)
        article_seconds += time.perf_counter() - started
        article_cpu += time.process_time() - cpu_started
        started, cpu_started = time.perf_counter(), time.process_time()
        predict_ratings(model, users, movies)
        _ranker_scores(ranker, inputs, user, movies)
        batched_seconds += time.perf_counter() - started
        batched_cpu += time.process_time() - cpu_started
        pairs += len(movies)

        rating = centred.astype("float64") + model.rating_mean
        cold = inputs.cold.cold_users[user] | inputs.cold.cold_movies[movies]
        rating = np.where(cold, inputs.cold.popularity[movies], rating)
        if ranker is None:
            score = rating
        elif inputs.cold.cold_users[user] or scorer.unknown[user]:
            score = inputs.cold.popularity[movies]
        else:
            score = affinity
        top_scores, top_movies, top_ratings = fast_top[int(user)]
        expected = -np.sort(-score)[: len(top_scores)]
        got = top_scores[np.isfinite(top_scores)]
        if len(got) != len(expected):
            difference = float("inf")
            continue
        if not len(got):
            continue
        position = np.searchsorted(movies, top_movies[: len(got)])
        scale = inputs.scale
        rating_gap = np.abs(
            top_ratings[: len(got)] - np.clip(rating[position], scale.low, scale.high)
        )
        difference = max(difference, float(np.abs(got - expected).max()), float(rating_gap.max()))
    n = len(sample)
    article_label = "article: model.predict per user, batch 32"
    return (
        PathTiming(
            article_label + (" + EASE" if ranker else ""), n, pairs, article_seconds, article_cpu
        ),
        PathTiming(
            "model.predict per user, batch 65,536" + (" + EASE" if ranker else ""),
            n,
            pairs,
            batched_seconds,
            batched_cpu,
        ),
        difference,
    )


def _ranker_scores(
    ranker: WatchAndLike | None, inputs: Interactions, user: int, movies: np.ndarray
) -> np.ndarray:
    """One user's ranker scores for ``movies`` (empty without a ranker)."""
    if ranker is None:
        return np.zeros(0, dtype="float32")
    row = np.array([user])
    return ranker.scores(inputs.watched[row], inputs.liked[row])[0, movies]


# ---------------------------------------------------------------------------------------


def gb(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**30:.2f} GB" if n_bytes else "-"


def format_report(result: BenchResult) -> str:
    """The benchmark as a plain-text table with the speed-up."""
    shape = result.shape
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    lines = [
        f"Scoring benchmark: synthetic {shape.name} catalogue: {shape.users:,} users x "
        f"{shape.movies:,} movies, {result.n_ratings:,} ratings (long-tailed), top-{result.top_k}",
        f"Model: the {result.preset} preset's architecture ({result.model_name}) with random "
        "(untrained) weights; throughput depends on the shapes, not the weights.",
        f"Top-{result.top_k} ranked by "
        + (
            f"the WatchAndLike EASE ranker fit on the synthetic ratings ({result.ranker_fit_seconds:.1f} s); "
            "the fast path then rates the top K with the DLRM model (as `score --keep-top` "
            "stores them), the article's path rates every unwatched movie with model.predict"
            if result.ranker == "ease"
            else "the predicted rating"
        ),
        f"Machine: {cpus} CPUs ({platform.machine()}), load average {result.load_before[0]:.1f} "
        f"before, {result.load_after[0]:.1f} after; Keras {metadata.version('keras')} "
        f"on {keras.backend.backend()}",
        "",
        f"{'path':<51} {'users':>9} {'pairs':>16} {'seconds':>9} {'pairs/s':>13} "
        f"{'CPU s':>9} {'pairs/CPU s':>13} {'peak RSS':>9}",
    ]
    for timing in (result.fast, result.article, result.batched):
        rss = gb(timing.peak_rss_bytes)
        lines.append(
            f"{timing.label:<51} {timing.users:>9,} {timing.pairs:>16,} {timing.seconds:>9.1f} "
            f"{timing.pairs_per_second:>13,.0f} {timing.cpu_seconds:>9.1f} "
            f"{timing.pairs_per_cpu_second:>13,.0f} {rss:>9}"
        )
    agree = "agree" if result.max_difference < 1e-3 else "DISAGREE"
    lines += [
        "",
        f"speed-up (pairs/s, same run): {result.speedup:,.0f}x over the article's approach, "
        f"{result.speedup_batched:,.1f}x over model.predict with batch 65,536",
        f"check: the {result.article.users} sampled users' top-{result.top_k} scores {agree} "
        f"between the fast path and model.predict (max difference {result.max_difference:.1e})",
        f"memory: peak RSS {gb(result.fast.peak_rss_bytes)} while scoring "
        f"({gb(result.fast.rss_before_bytes)} before it: Python, TensorFlow, the data), "
        f"{gb(result.process_peak_rss_bytes)} for the whole process (data generation included)",
        f"not timed: data generation {result.generate_seconds:.1f} s, XLA compilation "
        f"{result.compile_seconds:.1f} s",
    ]
    return "\n".join(lines)
