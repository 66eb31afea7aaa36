"""Scoring throughput on a synthetic MovieLens-shaped catalogue: the fast path against the
article's approach (one ``model.predict`` per user over that user's unwatched movies).

The model is the ``seed`` preset's architecture with random, untrained weights: throughput
depends on the shapes, not on the values of the weights. The data is long-tailed like
MovieLens: every user has at least 20 ratings (as in GroupLens' releases), activity is
log-normal and movie popularity is Zipf-like, so most pairs are unwatched and a few users
have rated thousands of movies.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import resource
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import numpy as np

from job.config import model_config
from job.data import HALF_STARS
from job.errors import ConfigError
from job.interactions import ColdStart, Interactions, SeenPairs, liked_matrix
from job.model import build_model, predict_ratings
from job.rank import BlockScorer, score_blocks

log = logging.getLogger(__name__)

# (users, movies, ratings) of GroupLens' releases, as their README files state them.
SHAPES: dict[str, tuple[int, int, int]] = {
    "ml-latest-small": (610, 9_742, 100_836),
    "ml-1m": (6_040, 3_883, 1_000_209),
    "ml-10m": (69_878, 10_681, 10_000_054),
    "ml-25m": (162_541, 62_423, 25_000_095),
    "ml-32m": (200_948, 87_585, 32_000_204),
}
DEFAULT_USERS, DEFAULT_MOVIES = 2_000, 5_000
RATINGS_PER_USER = 165  # ml-latest-small's and ml-32m's average, about
MIN_RATINGS = 20  # every user in GroupLens' releases has rated at least 20 movies
POPULARITY_EXPONENT = 1.0  # Zipf: the i-th most popular movie is drawn ~ 1 / (i + 10)
ACTIVITY_SIGMA = 1.2  # log-normal spread of ratings per user (a long tail of heavy users)


@dataclass(frozen=True)
class BenchShape:
    name: str
    users: int
    movies: int
    ratings: int


def resolve_shape(
    shape: str | None, users: int | None, movies: int | None, ratings: int | None
) -> BenchShape:
    """A named shape with any of its sizes overridden; ratings scale with the users.

    ``--shape ml-32m --users 50000`` keeps ml-32m's ratings per user, so two user counts
    compare like for like.
    """
    if shape is not None and shape not in SHAPES:
        raise ConfigError(f"unknown --shape {shape!r}: choose one of {', '.join(SHAPES)}")
    base_users, base_movies, base_ratings = (
        SHAPES[shape] if shape else (DEFAULT_USERS, DEFAULT_MOVIES, 0)
    )
    n_users = base_users if users is None else users
    n_movies = base_movies if movies is None else movies
    if ratings is None:
        per_user = base_ratings / base_users if shape else RATINGS_PER_USER
        ratings = round(per_user * n_users)
    for flag, value in (("--users", n_users), ("--movies", n_movies), ("--ratings", ratings)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1 (got {value})")
    ratings = min(ratings, n_users * n_movies)
    name = shape if shape and (n_users, n_movies) == SHAPES[shape][:2] else "custom-size"
    if shape and name == "custom-size":
        name = f"{shape}-like"
    return BenchShape(name, n_users, n_movies, ratings)


def synthetic_ratings(
    shape: BenchShape, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encoded (users, movies, ratings) with distinct pairs, sorted by user then movie.

    About ``shape.ratings`` rows: pairs drawn twice are dropped and drawn again once,
    uniformly, so a few may be missing where a user has rated nearly every movie.
    """
    rng = np.random.default_rng(seed)
    n_users, n_movies = shape.users, shape.movies
    floor = min(MIN_RATINGS, shape.ratings // n_users, n_movies)
    activity = rng.lognormal(0.0, ACTIVITY_SIGMA, n_users)
    wanted = floor + activity / activity.sum() * max(shape.ratings - floor * n_users, 0)
    for _ in range(20):  # no user rates more than every movie: hand the excess to the others
        capped = np.minimum(wanted, n_movies)
        excess = wanted.sum() - capped.sum()
        if excess < 1:
            break
        share = np.where(capped < n_movies, activity, 0.0)
        wanted = capped + excess * share / share.sum()
    counts = np.minimum(np.round(wanted).astype(np.int64), n_movies)
    popularity = 1.0 / (np.arange(n_movies) + 10.0) ** POPULARITY_EXPONENT
    popularity = rng.permutation(popularity / popularity.sum())  # popular ids spread out

    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    movies = rng.choice(n_movies, size=len(users), p=popularity)
    keys = _distinct(users * n_movies + movies)
    del users, movies
    for _ in range(4):  # replace pairs drawn twice by uniform draws, which rarely collide
        short = counts - np.bincount(keys // n_movies, minlength=n_users)
        if not short.any():
            break
        users = np.repeat(np.arange(n_users, dtype=np.int64), short)
        keys = _distinct(
            np.concatenate([keys, users * n_movies + rng.integers(0, n_movies, len(users))])
        )
    stars = HALF_STARS.values
    weights = np.array([1, 3, 2, 7, 4, 20, 13, 26, 8, 16], dtype=np.float64)  # ml-32m's shape
    ratings = rng.choice(stars, size=len(keys), p=weights / weights.sum()).astype(np.float32)
    return (keys // n_movies).astype(np.int32), (keys % n_movies).astype(np.int32), ratings


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` hashes, which is ~5x slower at 32M int64 keys)."""
    keys = np.sort(keys)
    keep = np.empty(len(keys), dtype=bool)
    keep[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


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
    max_difference: float  # fast vs reference top-K scores of the sampled users
    process_peak_rss_bytes: int
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]

    @property
    def speedup(self) -> float:
        return self.fast.pairs_per_second / max(self.article.pairs_per_second, 1e-9)

    @property
    def speedup_batched(self) -> float:
        return self.fast.pairs_per_second / max(self.batched.pairs_per_second, 1e-9)


def run_bench(
    shape: str | None = None,
    users: int | None = None,
    movies: int | None = None,
    ratings: int | None = None,
    top_k: int = 10,
    block_users: int | None = None,
    reference_users: int = 5,
    seed: int = 0,
) -> BenchResult:
    """Generate the data, score every user to top-K on the fast path, time the reference on a
    sample of ``reference_users`` users, and check that both agree on that sample."""
    if reference_users < 1:
        raise ConfigError(f"--reference-users must be at least 1 (got {reference_users})")
    if top_k < 1:
        raise ConfigError(f"--top-k must be at least 1 (got {top_k})")
    load_before = os.getloadavg()
    size = resolve_shape(shape, users, movies, ratings)
    log.info(
        "generating %s users x %s movies, %s ratings",
        f"{size.users:,}",
        f"{size.movies:,}",
        f"{size.ratings:,}",
    )
    started = time.perf_counter()
    user_index, movie_index, stars = synthetic_ratings(size, seed)
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
    del user_index, movie_index, stars
    generate_seconds = time.perf_counter() - started

    model = build_model(model_config("seed"), size.users, size.movies, rating_mean, seed)
    everyone = np.arange(size.users, dtype=np.int32)
    sample = np.sort(
        np.random.default_rng(seed).choice(
            size.users, min(reference_users, size.users), replace=False
        )
    )

    started = time.perf_counter()
    scorer = BlockScorer(model, inputs, top_k, block_users)
    scorer(everyone[: scorer.block_users])  # compiles; excluded from the timing
    compile_seconds = time.perf_counter() - started

    rss_before = reset_peak_rss()
    sampled_top: dict[int, np.ndarray] = {}
    started, cpu_started = time.perf_counter(), time.process_time()
    for block in score_blocks(scorer, everyone):
        for row in np.flatnonzero(np.isin(block.users, sample)):
            sampled_top[int(block.users[row])] = block.top_scores[row]
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

    article, batched, difference = time_reference(model, inputs, sample, sampled_top)
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
    )


def time_reference(
    model: keras.Model,
    inputs: Interactions,
    sample: np.ndarray,
    fast_top: dict[int, np.ndarray],
) -> tuple[PathTiming, PathTiming, float]:
    """The article's approach on ``sample``: per user, ``model.predict`` (Keras' default batch
    of 32) on that user's unwatched movies; then the same with a batch of 65,536. Returns both
    timings and the largest difference between the fast and the reference top-K scores."""
    warm = np.zeros((64, 2), dtype="int32")
    model.predict(warm, verbose=0)  # the first call traces the predict function: not timed
    predict_ratings(model, warm[:, 0], warm[:, 1])
    pairs = 0
    article_seconds = batched_seconds = article_cpu = batched_cpu = 0.0
    difference = 0.0
    for user in sample:
        movies = np.flatnonzero(~inputs.seen.mask(np.array([user]))[0]).astype("int32")
        users = np.full(len(movies), user, dtype="int32")
        started, cpu_started = time.perf_counter(), time.process_time()
        centred = model.predict(np.stack([users, movies], axis=1), verbose=0)[:, 0]
        article_seconds += time.perf_counter() - started
        article_cpu += time.process_time() - cpu_started
        started, cpu_started = time.perf_counter(), time.process_time()
        predict_ratings(model, users, movies)
        batched_seconds += time.perf_counter() - started
        batched_cpu += time.process_time() - cpu_started
        pairs += len(movies)

        score = centred.astype("float64") + model.rating_mean
        cold = inputs.cold.cold_users[user] | inputs.cold.cold_movies[movies]
        score = np.where(cold, inputs.cold.popularity[movies], score)
        top = fast_top[int(user)]
        expected = -np.sort(-score)[: len(top)]
        got = top[np.isfinite(top)]
        if len(got) != len(expected):
            difference = float("inf")
        elif len(got):
            difference = max(difference, float(np.abs(got - expected).max()))
    n = len(sample)
    return (
        PathTiming(
            "article: model.predict per user, batch 32", n, pairs, article_seconds, article_cpu
        ),
        PathTiming("model.predict per user, batch 65,536", n, pairs, batched_seconds, batched_cpu),
        difference,
    )


# ---------------------------------------------------------------------------------------
# Memory: the peak resident set size while scoring, not while generating the data


def reset_peak_rss() -> int | None:
    """Reset Linux's high-water mark of this process' RSS (``VmHWM``); return the RSS now."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return _status_bytes("VmRSS:")


def peak_rss() -> int:
    """Peak RSS in bytes since the last ``reset_peak_rss`` (Linux), else since start."""
    found = _status_bytes("VmHWM:")
    return found if found is not None else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _status_bytes(field: str) -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field):
                return int(line.split()[1]) * 1024
    return None


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
        "Model: the seed preset's architecture with random (untrained) weights; "
        "throughput depends on the shapes, not the weights.",
        f"Machine: {cpus} CPUs ({platform.machine()}), load average {result.load_before[0]:.1f} "
        f"before, {result.load_after[0]:.1f} after; Keras {metadata.version('keras')} "
        f"on {keras.backend.backend()}",
        "",
        f"{'path':<44} {'users':>9} {'pairs':>16} {'seconds':>9} {'pairs/s':>13} "
        f"{'CPU s':>9} {'pairs/CPU s':>13} {'peak RSS':>9}",
    ]
    for timing in (result.fast, result.article, result.batched):
        rss = gb(timing.peak_rss_bytes)
        lines.append(
            f"{timing.label:<44} {timing.users:>9,} {timing.pairs:>16,} {timing.seconds:>9.1f} "
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
