"""Score every user's unwatched movies: the fast path, the reference path, shards, cold start.

The fast path rests only on the three factorised methods every model implements
(``user_parts``, ``movie_parts``, ``pair_scores``) plus ``rating_mean``, so it covers every
model the project has. ``movie_parts`` is computed once for the whole catalogue; then a block
of users x every movie is scored by one compiled (XLA) function that also applies the
cold-start rule, masks the movies each user has rated and takes the top K. Memory is bounded
by the block, not by the number of users.

The reference path (``reference_predictions``) asks the model's own ``predict`` about explicit
(user, movie) pairs. It is slow and obviously correct, and the tests hold the fast path to it.

Ranking uses the unclipped score; the stored ``predicted_rating`` is clipped to the scale, so
two movies that both clip to 5.0 stars keep the model's order.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.data import RatingScale
from job.errors import ConfigError, JobError
from job.features import IdEncoding
from job.files import read_json, write_json
from job.model import predict_ratings
from job.pipeline import load_run, record_stage
from job.split import TRAIN
from job.store import (
    PREDICTIONS_SCHEMA,
    TOP_K_SCHEMA,
    find_parts,
    output_tables,
    parquet_part,
    part_path,
    remove_stale_parts,
    summary_path,
    write_database,
)

log = logging.getLogger(__name__)

# The cold-start rule: a movie's popularity is the Bayesian average of its ratings,
# (C * m + sum of ratings) / (C + n), m the global mean. C = 10 is about the mean number of
# ratings per movie in ml-latest-small: a movie's own mean outweighs the global mean once it
# has more than 10 ratings, and a movie with three 5-star ratings does not top the list.
PRIOR_COUNT = 10.0

# The largest intermediate of a block is (users, movies, width of the first layer) float32.
# 128 MiB keeps it inside a laptop's memory many times over and is large enough that the
# per-call overhead (~0.1 ms) is noise: about 11 users x 87,585 movies for the seed model.
BLOCK_BYTES = 128 << 20

# Default budget of rows in `predictions` (all shards together). Measured on ml-latest-small:
# ~16 bytes per row on disk across the three copies (5.6 in parts/, 4.2 in parquet/, 5.9 in
# recommendations.duckdb), so 5e8 rows is ~8 GB: within a GitHub-hosted runner's free disk
# with room to spare. It covers ml-latest-small, ml-100k and ml-1m (22M rows) in full;
# ml-10m (0.74e9), ml-25m (10e9) and ml-32m (17.6e9) need --keep-top (or a larger budget).
DEFAULT_MAX_ROWS = 500_000_000

PROGRESS_SECONDS = 10.0  # how often progress is logged while scoring


# ---------------------------------------------------------------------------------------
# Shards


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count`` (0-based): users with ``stable_hash(id) % count == index``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ConfigError(
                f"--shard {self.index}/{self.count}: need 0 <= I < N (e.g. 0/4 .. 3/4)"
            )

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


SHARD_PATTERN = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")


def parse_shard(text: str) -> Shard:
    """``"2/8"`` -> ``Shard(2, 8)``; anything else is a ``ConfigError``."""
    match = SHARD_PATTERN.match(text)
    if not match:
        raise ConfigError(f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. --shard 0/4")
    return Shard(int(match.group(1)), int(match.group(2)))


def resolve_shard(flag: str | None, environ: Mapping[str, str]) -> Shard:
    """The shard to score: ``--shard`` if given, else AWS Batch's array index, else all users.

    An AWS Batch array job sets ``AWS_BATCH_JOB_ARRAY_INDEX`` in each child but not the array
    size, so the job definition passes it as ``SHARD_COUNT``.
    """
    if flag is not None:
        return parse_shard(flag)
    index = environ.get("AWS_BATCH_JOB_ARRAY_INDEX")
    if index is None:
        return Shard()
    count = environ.get("SHARD_COUNT")
    if count is None:
        raise ConfigError(
            "AWS_BATCH_JOB_ARRAY_INDEX is set but SHARD_COUNT is not: "
            "set SHARD_COUNT to the array job's size"
        )
    return parse_shard(f"{index}/{count}")


def stable_hash(ids: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser of each int64 id: the same on every machine and every run.

    Python's ``hash()`` is salted per process for strings and is the identity for small ints
    (which would shard by ``id % N``, i.e. by how ids were assigned); this mixes every bit.
    """
    z = np.asarray(ids, dtype=np.int64).astype(np.uint64)  # two's complement for negatives
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def shard_mask(user_ids: np.ndarray, shard: Shard) -> np.ndarray:
    """Which raw user ids belong to ``shard``."""
    return stable_hash(user_ids) % np.uint64(shard.count) == np.uint64(shard.index)


# ---------------------------------------------------------------------------------------
# What scoring needs besides the model


@dataclass(frozen=True)
class SeenPairs:
    """The movies each user has rated (any split), as CSR: ``movies[indptr[u]:indptr[u+1]]``."""

    indptr: np.ndarray  # (n_users + 1,) int64
    movies: np.ndarray  # (n_ratings,) int32, sorted within each user
    n_movies: int

    @classmethod
    def from_pairs(
        cls, users: np.ndarray, movies: np.ndarray, n_users: int, n_movies: int
    ) -> SeenPairs:
        order = np.lexsort((movies, users))
        counts = np.bincount(users, minlength=n_users)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr, np.asarray(movies, dtype=np.int32)[order], n_movies)

    @property
    def counts(self) -> np.ndarray:
        """(n_users,) rated movies per user."""
        return np.diff(self.indptr)

    def mask(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_movies) bool: True where the user has rated the movie."""
        starts, ends = self.indptr[users], self.indptr[users + 1]
        lengths = ends - starts
        rows = np.repeat(np.arange(len(users)), lengths)
        # positions of every rated movie of these users inside ``self.movies``
        offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        cols = self.movies[np.repeat(starts, lengths) + offsets]
        mask = np.zeros((len(users), self.n_movies), dtype=bool)
        mask[rows, cols] = True
        return mask


@dataclass(frozen=True)
class ColdStart:
    """The popularity rule for users and movies the model never trained on.

    ``popularity[j]`` is movie j's Bayesian average ``(C*m + sum r) / (C + n)`` over every
    rating it has (the rule is a product decision, not a model under evaluation, so it may use
    validation and test ratings); ``n_ratings[j]`` is that n. A pair is *cold* when its user or
    its movie has no training rating; its predicted rating is the movie's popularity.
    """

    popularity: np.ndarray  # (n_movies,) float64
    n_ratings: np.ndarray  # (n_movies,) int64
    cold_users: np.ndarray  # (n_users,) bool
    cold_movies: np.ndarray  # (n_movies,) bool
    global_mean: float
    prior_count: float = PRIOR_COUNT

    @classmethod
    def fit(
        cls,
        users: np.ndarray,
        movies: np.ndarray,
        ratings: np.ndarray,
        is_train: np.ndarray,
        n_users: int,
        n_movies: int,
        prior_count: float = PRIOR_COUNT,
    ) -> ColdStart:
        """From encoded (user, movie, rating) triples and which of them trained the model."""
        popularity, counts, mean = bayesian_average(movies, ratings, n_movies, prior_count)
        return cls(
            popularity=popularity,
            n_ratings=counts,
            cold_users=np.bincount(users[is_train], minlength=n_users) == 0,
            cold_movies=np.bincount(movies[is_train], minlength=n_movies) == 0,
            global_mean=mean,
            prior_count=prior_count,
        )


def bayesian_average(
    movies: np.ndarray, ratings: np.ndarray, n_movies: int, prior_count: float = PRIOR_COUNT
) -> tuple[np.ndarray, np.ndarray, float]:
    """(C*m + sum r) / (C + n) per movie, the counts n, and the global mean m.

    A movie with no ratings gets m. With no ratings at all, m is 0.
    """
    ratings = np.asarray(ratings, dtype=np.float64)
    mean = float(ratings.mean()) if ratings.size else 0.0
    sums = np.bincount(movies, weights=ratings, minlength=n_movies)
    counts = np.bincount(movies, minlength=n_movies).astype(np.int64)
    score = (prior_count * mean + sums) / (prior_count + counts)
    return score, counts, mean


def popular_table(cold: ColdStart, encoding: IdEncoding) -> pd.DataFrame:
    """rank, movie_id, score, n_ratings of every rated movie, most popular first."""
    rated = np.flatnonzero(cold.n_ratings > 0)
    frame = pd.DataFrame(
        {
            "movie_id": encoding.decode_movies(rated).astype("int64"),
            "score": cold.popularity[rated],
            "n_ratings": cold.n_ratings[rated].astype("int32"),
        }
    ).sort_values(["score", "n_ratings", "movie_id"], ascending=[False, False, True])
    frame.insert(0, "rank", np.arange(1, len(frame) + 1, dtype="int32"))
    return frame.reset_index(drop=True)


@dataclass(frozen=True)
class ScoringInputs:
    """Everything the scorers need besides the model, in encoded indexes."""

    seen: SeenPairs
    cold: ColdStart
    scale: RatingScale

    @property
    def n_users(self) -> int:
        return len(self.seen.indptr) - 1

    @property
    def n_movies(self) -> int:
        return self.seen.n_movies


def scoring_inputs(
    encoding: IdEncoding, ratings: pd.DataFrame, scale: RatingScale
) -> ScoringInputs:
    """From a run's ratings table (raw ids, rating, split): the seen pairs and the cold rule."""
    users = encoding.encode_users(ratings["user_id"])
    movies = encoding.encode_movies(ratings["movie_id"])
    return ScoringInputs(
        seen=SeenPairs.from_pairs(users, movies, encoding.n_users, encoding.n_movies),
        cold=ColdStart.fit(
            users,
            movies,
            ratings["rating"].to_numpy("float64"),
            is_train(ratings["split"]),
            encoding.n_users,
            encoding.n_movies,
        ),
        scale=scale,
    )


def is_train(split: pd.Series) -> np.ndarray:
    """The split column holds codes (job.split.TRAIN, ...) or names ("train", ...)."""
    if pd.api.types.is_numeric_dtype(split):
        return split.to_numpy() == TRAIN
    return split.astype(str).to_numpy() == "train"


# ---------------------------------------------------------------------------------------
# The fast path


@dataclass(frozen=True)
class ScoredBlock:
    """One block of users scored against the whole catalogue."""

    users: np.ndarray  # (b,) encoded user indexes
    top_movies: np.ndarray  # (b, k) encoded movie indexes, best first
    top_scores: np.ndarray  # (b, k) ranking scores, unclipped; -inf past a user's unwatched
    seen: np.ndarray  # (b, n_movies) bool
    ratings: np.ndarray | None  # (b, n_movies) clipped predicted ratings, when asked for


def default_block_users(n_movies: int, width: int) -> int:
    """Users per block so that the (users, movies, width) float32 intermediate fits BLOCK_BYTES."""
    return int(max(1, min(4096, BLOCK_BYTES // max(1, n_movies * max(width, 1) * 4))))


def compile_block_function(fn: Callable[..., Any]) -> Callable[..., Any]:
    """XLA for TensorFlow (``tf.function(jit_compile=True)``) and JAX (``jax.jit``); eager
    for torch, whose compiler would add minutes of start-up for no proven gain here."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        # No autograph: the function has no Python control flow on tensors to convert.
        return tf.function(fn, jit_compile=True, autograph=False)
    if backend == "jax":
        import jax

        return jax.jit(fn)
    return fn


class BlockScorer:
    """Scores blocks of ``block_users`` users against every movie with one compiled function.

    Blocks are padded to ``block_users`` rows so the function compiles once.
    """

    def __init__(
        self,
        model: keras.Model,
        inputs: ScoringInputs,
        k: int,
        block_users: int | None = None,
        with_ratings: bool = False,
        n_users: int | None = None,
    ) -> None:
        """``n_users``: how many users will be scored, to keep the default block no larger."""
        if k < 1:
            raise ConfigError(f"top K must be at least 1 (got {k})")
        self.model = model
        self.inputs = inputs
        self.k = min(k, inputs.n_movies)
        self.with_ratings = with_ratings
        self.movie_parts = model.movie_parts(np.arange(inputs.n_movies, dtype="int32"))
        width = int(self.movie_parts.shape[-1])
        self.block_users = block_users or min(
            default_block_users(inputs.n_movies, width), max(n_users or inputs.n_users, 1)
        )
        if self.block_users < 1:
            raise ConfigError(f"--block-users must be at least 1 (got {self.block_users})")
        self.cold_movies = inputs.cold.cold_movies
        self.popularity = inputs.cold.popularity.astype("float32")
        self._fn = compile_block_function(self._block)

    def _block(
        self,
        users: Any,
        movie_parts: Any,
        seen: Any,
        user_cold: Any,
        movie_cold: Any,
        popularity: Any,
    ) -> Any:
        ops = keras.ops
        scores = self.model.pair_scores(
            self.model.user_parts(users)[:, None, :], movie_parts[None, :, :]
        )
        scores = ops.cast(scores, "float32") + self.model.rating_mean
        cold = ops.logical_or(user_cold[:, None], movie_cold[None, :])
        scores = ops.where(cold, popularity[None, :], scores)
        top_scores, top_movies = ops.top_k(ops.where(seen, -math.inf, scores), self.k)
        if not self.with_ratings:
            return top_scores, top_movies
        scale = self.inputs.scale
        return top_scores, top_movies, ops.clip(scores, scale.low, scale.high)

    def __call__(self, users: np.ndarray) -> ScoredBlock:
        """Score ``users`` (encoded indexes, at most ``block_users`` of them)."""
        b = len(users)
        if b > self.block_users:
            raise ValueError(f"a block holds at most {self.block_users} users (got {b})")
        padded = np.zeros(self.block_users, dtype="int32")
        padded[:b] = users
        seen = self.inputs.seen.mask(padded)
        seen[b:] = False
        out = self._fn(
            padded,
            self.movie_parts,
            seen,
            self.inputs.cold.cold_users[padded],
            self.cold_movies,
            self.popularity,
        )
        out = [keras.ops.convert_to_numpy(x) for x in out]
        return ScoredBlock(
            users=np.asarray(users, dtype="int32"),
            top_movies=out[1][:b].astype("int32"),
            top_scores=out[0][:b],
            seen=seen[:b],
            ratings=out[2][:b] if self.with_ratings else None,
        )


def score_blocks(scorer: BlockScorer, users: np.ndarray) -> Iterator[ScoredBlock]:
    """Score ``users`` (encoded indexes) block by block; logs progress at INFO."""
    progress = Progress(len(users), scorer.inputs.n_movies)
    for start in range(0, len(users), scorer.block_users):
        block = scorer(users[start : start + scorer.block_users])
        yield block
        progress.update(len(block.users))
    progress.done()


class Progress:
    """Users done, pairs per second and time left, at most every PROGRESS_SECONDS."""

    def __init__(self, n_users: int, n_movies: int) -> None:
        self.n_users, self.n_movies = n_users, n_movies
        self.users_done = 0
        self.started = self.last = time.perf_counter()

    def update(self, users: int) -> None:
        self.users_done += users
        now = time.perf_counter()
        if now - self.last < PROGRESS_SECONDS or self.users_done >= self.n_users:
            return
        self.last = now
        rate = self.users_done / (now - self.started)
        left = (self.n_users - self.users_done) / rate
        log.info(
            "scored %s/%s users (%.1f%%), %s pairs/s, about %s left",
            f"{self.users_done:,}",
            f"{self.n_users:,}",
            100 * self.users_done / self.n_users,
            f"{rate * self.n_movies:,.0f}",
            _duration(left),
        )

    def done(self) -> None:
        seconds = time.perf_counter() - self.started
        pairs = self.users_done * self.n_movies
        log.info(
            "scored %s users x %s movies (%s pairs) in %.1f s: %s pairs/s",
            f"{self.users_done:,}",
            f"{self.n_movies:,}",
            f"{pairs:,}",
            seconds,
            f"{pairs / max(seconds, 1e-9):,.0f}",
        )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


# ---------------------------------------------------------------------------------------
# The reference path


def reference_predictions(
    model: keras.Model, inputs: ScoringInputs, users: np.ndarray
) -> pd.DataFrame:
    """The slow, obvious answer: ``model.predict`` on every explicit unwatched pair.

    Returns user, movie (encoded), score (the ranking score: the model's unclipped rating, or
    the movie's popularity for cold pairs), predicted_rating (clipped) and cold_start,
    ordered by user then movie.
    """
    users = np.asarray(users, dtype="int32")
    unseen = ~inputs.seen.mask(users)
    rows, movies = np.nonzero(unseen)
    pair_users = users[rows]
    model_rating = predict_ratings(model, pair_users, movies)
    cold = inputs.cold.cold_users[pair_users] | inputs.cold.cold_movies[movies]
    score = np.where(cold, inputs.cold.popularity[movies], model_rating)
    return pd.DataFrame(
        {
            "user": pair_users,
            "movie": movies.astype("int32"),
            "score": score,
            "predicted_rating": np.clip(score, inputs.scale.low, inputs.scale.high),
            "cold_start": cold,
        }
    )


# ---------------------------------------------------------------------------------------
# The score stage


@dataclass(frozen=True)
class ScoreSummary:
    """What one ``score`` call did (also written to ``parts/score-IIIII-of-NNNNN.json``)."""

    run_id: str
    shard: str
    top_k: int
    keep_top: int | None
    block_users: int
    users: int
    movies: int
    pairs: int  # unwatched (user, movie) pairs scored
    prediction_rows: int
    top_k_rows: int
    seconds: float

    @property
    def pairs_per_second(self) -> float:
        return self.pairs / max(self.seconds, 1e-9)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "pairs_per_second": round(self.pairs_per_second)}


def estimate_rows(seen: SeenPairs, users: np.ndarray, keep_top: int | None) -> int:
    """Rows ``predictions`` gets for ``users``: their unwatched pairs, or at most keep_top each."""
    unwatched = seen.n_movies - seen.counts[users]
    if keep_top is not None:
        unwatched = np.minimum(unwatched, keep_top)
    return int(unwatched.sum())


def check_row_budget(rows: int, max_rows: int, n_users: int, keep_top: int | None) -> None:
    """Refuse, before scoring, a ``predictions`` table larger than ``max_rows``."""
    if rows <= max_rows:
        return
    what = f"--keep-top {keep_top}" if keep_top else "every unwatched pair"
    fits = max_rows // max(n_users, 1)
    hint = (
        f"keep the best N per user with --keep-top {min(fits, 100)} "
        f"({n_users * min(fits, 100):,} rows at most)"
        if fits >= 1
        else "there are more users than the budget has rows"
    )
    raise JobError(
        f"predictions would hold {rows:,} rows ({what}, {n_users:,} users), over the budget of "
        f"--max-rows {max_rows:,}; {hint}, or raise --max-rows"
    )


def score_stage(
    out: Path,
    shard: Shard | None = None,
    top_k: int = 10,
    keep_top: int | None = None,
    block_users: int | None = None,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ScoreSummary:
    """Score one shard of a trained run into ``OUT/parts``.

    Writes ``predictions-IIIII-of-NNNNN.parquet``, ``top_k-IIIII-of-NNNNN.parquet`` and, last,
    ``score-IIIII-of-NNNNN.json``. ``max_rows`` budgets the whole ``predictions`` table (all
    shards together), checked before anything is scored.

    Raises:
        ConfigError: a bad flag value.
        JobError: no trained run in ``out``; the row budget would be exceeded.
    """
    shard = shard or Shard()
    for name, value in (("--top-k", top_k), ("--keep-top", keep_top), ("--max-rows", max_rows)):
        if value is not None and value < 1:
            raise ConfigError(f"{name} must be at least 1 (got {value})")
    if block_users is not None and block_users < 1:
        raise ConfigError(f"--block-users must be at least 1 (got {block_users})")
    started = time.perf_counter()
    run = load_run(out)
    encoding = run.encoding
    inputs = scoring_inputs(encoding, run.ratings, run.scale)
    everyone = np.arange(encoding.n_users, dtype="int32")
    check_row_budget(
        estimate_rows(inputs.seen, everyone, keep_top), max_rows, len(everyone), keep_top
    )
    users = everyone[shard_mask(encoding.user_ids, shard)]
    run_id = str(run.manifest["run_id"])
    parts = out / "parts"
    remove_stale_parts(parts, run_id)
    log.info(
        "scoring shard %s: %s of %s users x %s movies",
        shard,
        f"{len(users):,}",
        f"{encoding.n_users:,}",
        f"{encoding.n_movies:,}",
    )

    model = run.load_model()
    full = keep_top is None
    k = max(top_k, keep_top or 0)
    predictions_rows = top_k_rows = pairs = 0
    with (
        parquet_part(
            part_path(parts, "predictions", shard.index, shard.count), PREDICTIONS_SCHEMA
        ) as predictions,
        parquet_part(part_path(parts, "top_k", shard.index, shard.count), TOP_K_SCHEMA) as best,
    ):
        scorer = BlockScorer(model, inputs, k, block_users, with_ratings=full, n_users=len(users))
        for block in score_blocks(scorer, users):
            pairs += int(block.seen.size - block.seen.sum())
            rows = top_rows(block, inputs, encoding, top_k)
            best.write(rows)
            top_k_rows += len(rows["user_id"])
            rows = (
                all_rows(block, inputs, encoding)
                if keep_top is None
                else top_rows(block, inputs, encoding, keep_top)
            )
            predictions.write(rows)
            predictions_rows += len(rows["user_id"])

    summary = ScoreSummary(
        run_id=run_id,
        shard=str(shard),
        top_k=top_k,
        keep_top=keep_top,
        block_users=scorer.block_users,
        users=len(users),
        movies=encoding.n_movies,
        pairs=pairs,
        prediction_rows=predictions_rows,
        top_k_rows=top_k_rows,
        seconds=round(time.perf_counter() - started, 3),
    )
    write_json(summary_path(parts, shard.index, shard.count), summary.as_dict())
    return summary


def top_rows(
    block: ScoredBlock, inputs: ScoringInputs, encoding: IdEncoding, k: int
) -> dict[str, np.ndarray]:
    """A block's best ``k`` unwatched movies per user, as top_k columns (rank 1-based)."""
    scores, movies = block.top_scores[:, :k], block.top_movies[:, :k]
    valid = np.isfinite(scores)  # -inf: the user has fewer than k unwatched movies
    rows, ranks = np.nonzero(valid)
    users = block.users[rows]
    chosen = movies[rows, ranks]
    return {
        "user_id": encoding.decode_users(users),
        "rank": (ranks + 1).astype("int32"),
        "movie_id": encoding.decode_movies(chosen),
        "predicted_rating": np.clip(
            scores[rows, ranks], inputs.scale.low, inputs.scale.high
        ).astype("float32"),
        "cold_start": inputs.cold.cold_users[users] | inputs.cold.cold_movies[chosen],
    }


def all_rows(
    block: ScoredBlock, inputs: ScoringInputs, encoding: IdEncoding
) -> dict[str, np.ndarray]:
    """Every unwatched pair of a block, as predictions columns, by user then movie."""
    assert block.ratings is not None, "score with with_ratings=True to store every pair"
    rows, movies = np.nonzero(~block.seen)
    users = block.users[rows]
    return {
        "user_id": encoding.decode_users(users),
        "movie_id": encoding.decode_movies(movies),
        "predicted_rating": block.ratings[rows, movies].astype("float32", copy=False),
        "cold_start": inputs.cold.cold_users[users] | inputs.cold.cold_movies[movies],
    }


# ---------------------------------------------------------------------------------------
# The merge stage


def merge_stage(out: Path) -> dict[str, Any]:
    """Build ``recommendations.duckdb`` and ``parquet/`` from every shard's parts.

    Raises:
        JobError: no trained run; parts missing, of mixed shard counts, or from another run.
    """
    started = time.perf_counter()
    run = load_run(out)
    parts = find_parts(out / "parts", str(run.manifest["run_id"]))
    summaries = parts.summaries
    scoring = {
        "shards": parts.count,
        "top_k": summaries[0]["top_k"],
        "keep_top": summaries[0]["keep_top"],
        "users": sum(s["users"] for s in summaries),
        "pairs": sum(s["pairs"] for s in summaries),
        "prediction_rows": sum(s["prediction_rows"] for s in summaries),
        "top_k_rows": sum(s["top_k_rows"] for s in summaries),
        "seconds": round(sum(s["seconds"] for s in summaries), 3),
    }
    scoring["pairs_per_second"] = round(scoring["pairs"] / max(scoring["seconds"], 1e-9))
    record_stage(out, "score", scoring["seconds"], scoring=scoring)

    inputs = scoring_inputs(run.encoding, run.ratings, run.scale)
    history_file = out / "history.csv"
    history = pd.read_csv(history_file) if history_file.exists() else pd.DataFrame({"epoch": []})
    tables = output_tables(
        manifest=read_json(out / "run.json"),  # re-read: it now holds the scoring facts
        movies=run.movies,
        ratings=run.ratings,
        history=history,
        popular=popular_table(inputs.cold, run.encoding),
    )
    counts = write_database(out, tables, parts.predictions, parts.top_k)
    record_stage(out, "merge", time.perf_counter() - started, merged_rows=counts)
    log.info(
        "merged %d shard(s) into %s: %s predictions, %s top-k rows",
        parts.count,
        out / "recommendations.duckdb",
        f"{counts['predictions']:,}",
        f"{counts['top_k']:,}",
    )
    return counts
