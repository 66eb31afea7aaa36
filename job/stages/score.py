"""The score stage: every user's unwatched movies, one shard at a time, into ``OUT/parts``.

Ranking itself is ``job.models.rank``'s; this module picks the shard's users, checks the row budget
before any work, and streams each block's rows into the shard's Parquet parts.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from job.core.config import ScoreOptions
from job.core.errors import ConfigError, JobError
from job.core.files import write_json
from job.core.layout import PARTS_DIR, RANKER_FILE, part_path, summary_path
from job.core.timing import Stopwatch
from job.data.features import IdEncoding
from job.data.interactions import Interactions, SeenPairs, interactions_of
from job.models.itemitem import WatchAndLike
from job.runfolder.manifest import TrainedRun, load_run
from job.runfolder.preflight import require
from job.stages.parts import PREDICTIONS_SCHEMA, TOP_K_SCHEMA, parquet_part, remove_stale_parts

if TYPE_CHECKING:
    from job.models.rank import ScoredBlock

log = logging.getLogger(__name__)


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
    startup_seconds: float | None = None  # the process's, when this was its first stage

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
    options: ScoreOptions | None = None,
    startup_s: float | None = None,
) -> ScoreSummary:
    """Score one shard of a trained run into ``OUT/parts``.

    Writes ``predictions-IIIII-of-NNNNN.parquet``, ``top_k-IIIII-of-NNNNN.parquet`` and, last,
    ``score-IIIII-of-NNNNN.json``. ``options.max_rows`` budgets the whole ``predictions`` table (all
    shards together), checked before anything is scored. ``startup_s``: the start-up of the
    process, when this is its first stage; the summary carries it to merge, for run.json.

    Raises:
        JobError: no trained run in ``out``; the row budget would be exceeded.
    """
    shard = shard or Shard()
    options = options or ScoreOptions()
    watch = Stopwatch()
    with watch.time("score"):
        run = load_run(out, require(out, "score"))
        inputs = interactions_of(run.encoding, run.ratings, run.scale)
        users = shard_users(run.encoding, inputs.seen, shard, options)
        remove_stale_parts(out / PARTS_DIR, run.manifest.run_id, (shard.index, shard.count))
        log.info(
            "scoring shard %s: %s of %s users", shard, f"{len(users):,}", _catalogue(run.encoding)
        )
        counts = _score_users(out, run, inputs, users, shard, options)
    summary = ScoreSummary(
        run_id=run.manifest.run_id,
        shard=str(shard),
        top_k=options.top_k,
        keep_top=options.keep_top,
        users=len(users),
        movies=run.encoding.n_movies,
        seconds=round(watch.seconds["score"], 3),
        startup_seconds=None if startup_s is None else round(startup_s, 3),
        **counts,
    )
    write_json(summary_path(out / PARTS_DIR, shard.index, shard.count), summary.as_dict())
    return summary


def shard_users(
    encoding: IdEncoding, seen: SeenPairs, shard: Shard, options: ScoreOptions
) -> np.ndarray:
    """The encoded users of ``shard``, once the whole table is known to fit ``options.max_rows``."""
    everyone = np.arange(encoding.n_users, dtype="int32")
    keep_top = options.keep_top
    check_row_budget(
        estimate_rows(seen, everyone, keep_top), options.max_rows, len(everyone), keep_top
    )
    return everyone[shard_mask(encoding.user_ids, shard)]


def _score_users(
    out: Path,
    run: TrainedRun,
    inputs: Interactions,
    users: np.ndarray,
    shard: Shard,
    options: ScoreOptions,
) -> dict[str, int]:
    """Stream the rows of ``users`` into the shard's parts; return the summary's counts."""
    # Keras (job.models.rating, job.models.rank) is imported here, not with this module: `python -m job
    # score` imports it once its flags are known good, with TensorFlow's start-up noise hidden.
    from job.models.rank import BlockScorer, score_blocks
    from job.models.rating import load_model

    encoding, top_k, keep_top = run.encoding, options.top_k, options.keep_top
    model = load_model(out)
    # A preset that ranks by predicted rating has no ranker: no EASE weights to load, and
    # no reasons (the liked movie that adds most to a pick's EASE score explains nothing
    # about a pick made by predicted rating).
    ranker = WatchAndLike.load(out / RANKER_FILE) if run.manifest.ranker == "ease" else None
    parts = out / PARTS_DIR
    counts = {"pairs": 0, "prediction_rows": 0, "top_k_rows": 0}
    with (
        parquet_part(
            part_path(parts, "predictions", shard.index, shard.count), PREDICTIONS_SCHEMA
        ) as predictions,
        parquet_part(part_path(parts, "top_k", shard.index, shard.count), TOP_K_SCHEMA) as best,
    ):
        scorer = BlockScorer(
            model,
            inputs,
            max(top_k, keep_top or 0),
            options.block_users,
            with_ratings=keep_top is None,
            n_users=len(users),
            ranker=ranker,
        )
        for block in score_blocks(scorer, users):
            counts["pairs"] += estimate_rows(inputs.seen, block.users, keep_top=None)
            rows = top_rows(block, inputs, encoding, top_k, explain_with=ranker)
            rows.setdefault("because_movie_id", pa.nulls(len(rows["user_id"]), pa.int64()))
            best.write(rows)
            counts["top_k_rows"] += len(rows["user_id"])
            rows = (
                all_rows(block, inputs, encoding)
                if keep_top is None
                else top_rows(block, inputs, encoding, keep_top)
            )
            predictions.write(rows)
            counts["prediction_rows"] += len(rows["user_id"])
    return {**counts, "block_users": scorer.block_users}


def _catalogue(encoding: IdEncoding) -> str:
    return f"{encoding.n_users:,} users x {encoding.n_movies:,} movies"


def top_rows(
    block: ScoredBlock,
    inputs: Interactions,
    encoding: IdEncoding,
    k: int,
    explain_with: WatchAndLike | None = None,
) -> dict[str, Any]:
    """A block's best ``k`` unwatched movies per user, as top_k columns (rank 1-based), with
    each pick's reason from ``explain_with`` when given."""
    scores, movies = block.top_scores[:, :k], block.top_movies[:, :k]
    valid = np.isfinite(scores)  # -inf: the user has fewer than k unwatched movies
    rows, ranks = np.nonzero(valid)
    users = block.users[rows]
    chosen = movies[rows, ranks]
    columns: dict[str, Any] = {
        "user_id": encoding.decode_users(users),
        "rank": (ranks + 1).astype("int32"),
        "movie_id": encoding.decode_movies(chosen),
        "predicted_rating": block.top_ratings[rows, ranks].astype("float32"),
        "score": scores[rows, ranks].astype("float32"),
        "cold_start": inputs.cold.cold_users[users] | inputs.cold.cold_movies[chosen],
    }
    if explain_with is not None:
        # The liked movie that adds most to the pick's EASE score; none (null) for a cold
        # user or a movie EASE does not cover.
        reasons = explain_with.reasons(inputs.liked[block.users], movies)[rows, ranks]
        columns["because_movie_id"] = pa.array(
            encoding.decode_movies(np.maximum(reasons, 0)), pa.int64(), mask=reasons < 0
        )
    return columns


def all_rows(
    block: ScoredBlock, inputs: Interactions, encoding: IdEncoding
) -> dict[str, np.ndarray]:
    """Every unwatched pair of a block, as predictions columns, by user then movie."""
    assert block.ratings is not None and block.scores is not None, "score with with_ratings"
    rows, movies = np.nonzero(~block.seen)
    users = block.users[rows]
    return {
        "user_id": encoding.decode_users(users),
        "movie_id": encoding.decode_movies(movies),
        "predicted_rating": block.ratings[rows, movies].astype("float32", copy=False),
        "score": block.scores[rows, movies].astype("float32", copy=False),
        "cold_start": inputs.cold.cold_users[users] | inputs.cold.cold_movies[movies],
    }
