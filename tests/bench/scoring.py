"""Scoring throughput on a synthetic MovieLens-shaped catalogue: the fast path against the
article's approach (one ``model.predict`` per user over that user's unwatched movies).

The model is a preset's architecture (the default preset's unless ``--preset`` says
otherwise: the DLRM rating model, ranked by the WatchAndLike EASE ranker) with random,
untrained weights: throughput depends on the shapes, not on the values of the weights. The
EASE ranker is fit on the synthetic ratings, as the train stage fits it. The data comes from
``job.data.synthetic``: long-tailed like MovieLens (every user has at least 20 ratings, activity
is log-normal and movie popularity Zipf-like), so most pairs are unwatched and a few users
have rated thousands of movies.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import keras
import numpy as np
import pandas as pd

from job.core.config import DEFAULT_PRESET, ModelConfig, ScoreOptions, build_config, model_config
from job.core.errors import ConfigError
from job.core.layout import PARTS_DIR, summary_path
from job.core.memory import peak_rss, reset_peak_rss, usable_cores
from job.data.features import IdEncoding, SideFeatures, side_features
from job.data.interactions import EncodedRatings, Interactions
from job.data.movielens import HALF_STARS, Dataset
from job.data.synthetic import (
    Ratings,
    Shape,
    movie_ids,
    movies_frame,
    resolve_shape,
    synthetic_ratings,
    tags_frame,
)
from job.models.itemitem import WatchAndLike, fit_watch_and_like
from job.models.rank import BlockScorer, score_blocks
from job.models.rating import FactorisedModel, build_model, predict_ratings

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
    # From getrusage: the kernel's share (page faults, memory mapping) shows as system time.
    system_seconds: float | None = None
    minor_faults: int | None = None

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
    # `python -m job score --keep-top K` as a user runs it, imports and files included
    whole: PathTiming | None = None
    # A process doing only the imports `score` does before its stage, timed on its own
    imports: PathTiming | None = None

    @property
    def speedup(self) -> float:
        return self.fast.pairs_per_second / max(self.article.pairs_per_second, 1e-9)

    @property
    def speedup_batched(self) -> float:
        return self.fast.pairs_per_second / max(self.batched.pairs_per_second, 1e-9)


@dataclass(frozen=True)
class BenchOptions:
    """``python -m bench scoring``: the synthetic data (a shape; users, movies and ratings
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
    whole_process: bool = True  # also time `python -m job score` as its own process

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
    data: Ratings  # what the whole-process run folder is written from


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
    rated = EncodedRatings(
        np.stack([user_index, movie_index], axis=1), stars, size.users, size.movies
    )
    inputs = Interactions.from_ratings(rated, np.ones(len(stars), bool), HALF_STARS)
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
    del user_index, movie_index, stars
    generate_seconds = time.perf_counter() - started

    return _Synthetic(inputs, side, n_ratings, rating_mean, generate_seconds, data)


def _fit_ranker(inputs: Interactions, config: ModelConfig) -> tuple[WatchAndLike | None, float]:
    """The preset's ranker on the synthetic ratings (none for "rating"), and its seconds."""
    if config.ranker != "ease":
        return None, 0.0
    started = time.perf_counter()
    ranker = fit_watch_and_like(inputs.watched, inputs.liked, config)
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
    usage = resource.getrusage(resource.RUSAGE_SELF)
    started, cpu_started = time.perf_counter(), time.process_time()
    for block in score_blocks(scorer, everyone):
        for row in np.flatnonzero(np.isin(block.users, sample)):
            sampled[int(block.users[row])] = (
                block.top_scores[row],
                block.top_movies[row],
                block.top_ratings[row],
            )
    fast_seconds, fast_cpu = time.perf_counter() - started, time.process_time() - cpu_started
    after = resource.getrusage(resource.RUSAGE_SELF)
    unwatched = int(size.users * size.movies - inputs.seen.counts.sum())
    fast = PathTiming(
        f"fast: XLA, blocks of {scorer.block_users} users, top-{scorer.k}",
        size.users,
        unwatched,
        fast_seconds,
        fast_cpu,
        peak_rss(),
        rss_before,
        after.ru_stime - usage.ru_stime,
        after.ru_minflt - usage.ru_minflt,
    )

    article, batched, difference = time_reference(model, inputs, sample, sampled, scorer)
    whole = (
        time_whole_process(synthetic, size, model, ranker, options)
        if options.whole_process
        else None
    )
    imports = time_imports() if options.whole_process else None
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
        whole=whole,
        imports=imports,
    )


def time_whole_process(
    synthetic: _Synthetic,
    size: Shape,
    model: FactorisedModel,
    ranker: WatchAndLike | None,
    options: BenchOptions,
) -> PathTiming:
    """``python -m job score --keep-top K`` in its own process, as a user runs it, on a run
    folder written from the same synthetic ratings, model and ranker (not timed): Python's
    and Keras' imports, the input checks, loading the run, scoring and writing the Parquet
    parts are all in its time, which the in-process figure leaves out."""
    k = str(options.top_k)
    with tempfile.TemporaryDirectory(prefix="bench-score-") as tmp:
        out = Path(tmp) / "run"
        _write_run(out, synthetic, size, model, ranker, options)
        command = [sys.executable, "-m", "job", "-q", "score", "--out", str(out)]
        command += ["--top-k", k, "--keep-top", k]
        if options.block_users:
            command += ["--block-users", str(options.block_users)]
        seconds, cpu, usage = _child(command)
        summary = json.loads(summary_path(out / PARTS_DIR, 0, 1).read_text())
    return PathTiming(
        f"whole process: python -m job score --keep-top {k}",
        int(summary["users"]),
        int(summary["pairs"]),
        seconds,
        cpu,
        usage.ru_maxrss * 1024,  # Linux: KiB; the largest child so far
        system_seconds=usage.ru_stime,
        minor_faults=usage.ru_minflt,
    )


# What `python -m job score` imports before its stage starts: the command line, then Keras.
SCORE_IMPORTS = (
    "import job.cli, job.pipeline, job.stages.score; job.cli.import_keras_quietly(); "
    "import job.models.rating, job.models.rank"
)


def time_imports() -> PathTiming:
    """A process that only imports what ``python -m job score`` imports before it scores, so
    the whole-process figure can be read as start-up plus the stage."""
    seconds, cpu, usage = _child([sys.executable, "-c", SCORE_IMPORTS])
    return PathTiming(
        "imports alone (a process of its own)",
        0,
        0,
        seconds,
        cpu,
        usage.ru_maxrss * 1024,
        system_seconds=usage.ru_stime,
        minor_faults=usage.ru_minflt,
    )


@dataclass(frozen=True)
class _Usage:
    ru_stime: float
    ru_minflt: int
    ru_maxrss: int


def _child(command: list[str]) -> tuple[float, float, _Usage]:
    """Run ``command``; its wall seconds, CPU seconds and getrusage figures (a difference of
    RUSAGE_CHILDREN, so only this child's; peak RSS is the largest child's so far)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr}")
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    return (
        seconds,
        cpu,
        _Usage(
            after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt, after.ru_maxrss
        ),
    )


def _write_run(
    out: Path,
    synthetic: _Synthetic,
    size: Shape,
    model: FactorisedModel,
    ranker: WatchAndLike | None,
    options: BenchOptions,
) -> None:
    """A run folder as the train stage writes it (every rating a training one, no metrics),
    through the train stage's own writer, for ``score`` to read."""
    from job.data.interactions import SplitData
    from job.data.split import TRAIN
    from job.stages.fit import TrainingResult
    from job.stages.train import TrainedArtifacts, build_manifest, write_train_outputs

    data = synthetic.data
    encoding = IdEncoding(np.arange(1, size.users + 1, dtype="int64"), movie_ids(size.movies))
    ratings = pd.DataFrame(
        {
            "user_id": encoding.user_ids[data.users],
            "movie_id": encoding.movie_ids[data.movies],
            "rating": data.ratings.astype("float32"),
            "timestamp": data.timestamps,
        }
    )
    tags = tags_frame(data, np.random.default_rng([options.seed, 1]))
    dataset = Dataset(
        name=f"synthetic {size.name}",
        ratings=ratings,
        movies=movies_frame(data.catalogue).rename(columns={"movieId": "movie_id"}),
        tags=tags.rename(columns={"userId": "user_id", "movieId": "movie_id"})[
            ["user_id", "movie_id", "tag"]
        ],
        scale=HALF_STARS,
        sha256="synthetic",
    )
    labels = np.full(len(ratings), TRAIN)
    split = SplitData(
        encoding,
        np.stack([data.users, data.movies], axis=1).astype("int64"),
        data.ratings.astype("float64"),
        labels,
        synthetic.side,
    )
    config = build_config(data=dataset.name, out=out, preset=options.preset, seed=options.seed)
    result = TrainingResult(model, pd.DataFrame({"epoch": [], "loss": [], "mae": []}), 0.0)
    metrics = {"evaluated_on": "none", "rows": []}
    manifest = build_manifest(config, dataset, encoding, result, labels, metrics, {})
    no_neighbours = pd.DataFrame({"movie_id": [], "rank": [], "other_movie_id": [], "score": []})
    write_train_outputs(
        out, TrainedArtifacts(manifest, dataset, split, result, ranker, no_neighbours)
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
    cpus = usable_cores()
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
        f"{'CPU s':>9} {'pairs/CPU s':>13} {'peak RSS':>9} {'sys s':>7} {'minor faults':>13}",
    ]
    timings = [result.fast, result.article, result.batched]
    timings += [t for t in (result.whole, result.imports) if t]
    for timing in timings:
        rss = gb(timing.peak_rss_bytes)
        system = "-" if timing.system_seconds is None else f"{timing.system_seconds:.1f}"
        faults = "-" if timing.minor_faults is None else f"{timing.minor_faults:,}"
        lines.append(
            f"{timing.label:<51} {timing.users:>9,} {timing.pairs:>16,} {timing.seconds:>9.1f} "
            f"{timing.pairs_per_second:>13,.0f} {timing.cpu_seconds:>9.1f} "
            f"{timing.pairs_per_cpu_second:>13,.0f} {rss:>9} {system:>7} {faults:>13}"
        )
    agree = "agree" if result.max_difference < 1e-3 else "DISAGREE"
    lines += [
        "",
        f"speed-up (pairs/s, same run): {result.speedup:,.0f}x over the article's approach, "
        f"{result.speedup_batched:,.1f}x over model.predict with batch 65,536",
    ]
    if result.whole:
        whole = result.whole
        lines.append(
            f"whole process (`python -m job score --keep-top {result.top_k}`: imports, input "
            f"checks, loading, scoring, Parquet): {whole.seconds:.1f} s, "
            f"{whole.pairs_per_second / 1e6:,.1f}M pairs/s, "
            f"{whole.pairs_per_second / max(result.article.pairs_per_second, 1e-9):,.0f}x "
            "the article's approach; its peak RSS is the largest child process's"
        )
    if result.whole and result.imports:
        stage = result.whole.seconds - result.imports.seconds
        lines.append(
            f"of which imports {result.imports.seconds:.1f} s ({result.imports.cpu_seconds:.1f} "
            f"CPU s, timed alone); the rest, {stage:.1f} s, is "
            f"{result.whole.pairs / max(stage, 1e-9) / 1e6:,.1f}M pairs/s"
        )
    lines += [
        f"check: the {result.article.users} sampled users' top-{result.top_k} scores {agree} "
        f"between the fast path and model.predict (max difference {result.max_difference:.1e})",
        f"memory: peak RSS {gb(result.fast.peak_rss_bytes)} while scoring "
        f"({gb(result.fast.rss_before_bytes)} before it: Python, TensorFlow, the data), "
        f"{gb(result.process_peak_rss_bytes)} for the whole process (data generation included)",
        f"not timed: data generation {result.generate_seconds:.1f} s, XLA compilation "
        f"{result.compile_seconds:.1f} s",
    ]
    return "\n".join(lines)
