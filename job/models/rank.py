"""Ranking movies for users: the one scoring path, and movie-to-movie neighbours.

``BlockScorer`` rests only on the three factorised methods every model implements
(``user_parts``, ``movie_parts``, ``pair_scores``) plus ``rating_mean``, so it covers every
model the project has. ``movie_parts`` is computed once for the whole catalogue; then a block
of users x every movie is scored by one compiled (XLA) function that also applies the
cold-start rule, masks the movies each user has rated and takes the top K; ``score_blocks``
runs a block per core at once. Memory is bounded by the blocks, not by the number of users.
``score`` (every user's unwatched movies), ``evaluate`` (ranking metrics) and ``recommend``
(one user's example) all go through it.

Ranking uses the unclipped score; the stored ``predicted_rating`` is clipped to the scale, so
two movies that both clip to 5.0 stars keep the model's order.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.core.errors import ConfigError
from job.core.memory import usable_cores
from job.core.progress import progress
from job.data.interactions import Interactions
from job.models.itemitem import WatchAndLike

# The largest intermediate of a block is (users, movies, width of the first layer) float32:
# small enough for any laptop's memory, large enough that the per-call overhead is noise.
BLOCK_BYTES = 128 << 20
# (users, movies) float32 arrays alive at once on the ranked path (``BlockScorer._ranked_block``)
RANKED_WIDTH = 8
# The rating term re-ranks each user's this many best unwatched movies by the item-item score
# (``rerank_candidates``): the rating model runs on them, not on the whole catalogue, and
# a movie the item-item score puts this far down is no pick whatever its predicted rating.
RERANK_CANDIDATES = 100


def rerank_candidates(affinity: np.ndarray, seen: np.ndarray, n: int) -> np.ndarray:
    """(b, n_movies) bool: each row's ``n`` highest unseen ``affinity`` columns, ties to the
    lower column; every unseen column where a row has fewer."""
    masked = np.where(seen, -np.inf, affinity)
    n = min(n, masked.shape[1])
    if n == 0:
        return np.zeros(masked.shape, dtype=bool)
    kth = -np.partition(-masked, n - 1, axis=1)[:, n - 1 : n]
    above = masked > kth
    tied = (masked == kth) & ~seen
    room = n - above.sum(axis=1, keepdims=True)
    return above | (tied & (np.cumsum(tied, axis=1) <= room))


@dataclass(frozen=True)
class ScoredBlock:
    """One block of users scored against the whole catalogue."""

    users: np.ndarray  # (b,) encoded user indexes
    top_movies: np.ndarray  # (b, k) encoded movie indexes, best first
    top_scores: np.ndarray  # (b, k) recommendation scores; -inf past a user's unwatched
    top_ratings: np.ndarray  # (b, k) their predicted ratings, clipped to the scale
    seen: np.ndarray  # (b, n_movies) bool
    ratings: np.ndarray | None  # (b, n_movies) clipped predicted ratings, when asked for
    scores: np.ndarray | None  # (b, n_movies) recommendation scores, when asked for


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

    Two numbers per (user, movie): the predicted rating (the model's, or the cold-start
    rule's popularity for a user or movie the model never trained on), and the
    recommendation score that ranks the top K: the predicted rating itself, or a
    ``ranker``'s score (``itemitem.WatchAndLike``; popularity for a user it knows nothing
    about). ``WatchAndLike.reasons`` explains the picks.

    Blocks are padded to ``block_users`` rows so the function compiles once.
    """

    def __init__(
        self,
        model: keras.Model,
        inputs: Interactions,
        k: int,
        block_users: int | None = None,
        with_ratings: bool = False,
        n_users: int | None = None,
        ranker: WatchAndLike | None = None,
    ) -> None:
        """``n_users``: how many users will be scored, to keep the default block no larger.
        ``ranker``: rank by its score instead of the predicted rating."""
        if k < 1:
            raise ConfigError(f"top K must be at least 1 (got {k})")
        self.model = model
        self.inputs = inputs
        self.k = min(k, inputs.n_movies)
        self.with_ratings = with_ratings
        self.ranker = ranker
        # Rank first and run the rating model on the picks (and the rating term's
        # candidates) alone, when only the top K is asked for.
        self._ranked_only = ranker is not None and not with_ratings
        self.candidates = min(RERANK_CANDIDATES, inputs.n_movies)
        self.movie_parts = model.movie_parts(np.arange(inputs.n_movies, dtype="int32"))
        width = int(self.movie_parts.shape[-1])
        if self._ranked_only:
            # The ranked path's largest intermediates are a few (users, movies) arrays (the
            # ranker's scores, the mask, the masked scores), not (users, movies, width): at
            # ml-25m's 62,423 movies the DLRM's width of 330 would allow one user per block.
            width = RANKED_WIDTH
        self.block_users = block_users or min(
            default_block_users(inputs.n_movies, width), max(n_users or inputs.n_users, 1)
        )
        if self.block_users < 1:
            raise ConfigError(f"--block-users must be at least 1 (got {self.block_users})")
        self.cold_movies = inputs.cold.cold_movies
        self.popularity = inputs.cold.popularity.astype("float32")
        if ranker is not None:
            # Users the ranker knows nothing about rank by popularity, like cold users.
            self.unknown = ~ranker.knows(inputs.watched)
        self._fn = compile_block_function(self._block)
        self._ratings_fn: Callable[..., Any] | None = None
        self._pairs_fn: Callable[..., Any] | None = None

    def _pair_ratings(self, users: Any, movie_parts: Any, movies: Any) -> Any:
        """(b, c) the model's uncentred, unclipped ratings of each user's ``movies`` (b, c)."""
        picked = keras.ops.take(movie_parts, movies, axis=0)  # (b, c, dm)
        scores = self.model.pair_scores(self.model.user_parts(users)[:, None, :], picked)
        return keras.ops.cast(scores, "float32") + self.model.rating_mean

    def _ratings(self, users: Any, movie_parts: Any) -> Any:
        """(b, n_movies) the model's uncentred, unclipped ratings: the pair scores plus the mean."""
        scores = self.model.block_scores(self.model.user_parts(users), movie_parts)
        return keras.ops.cast(scores, "float32") + self.model.rating_mean

    def _block(self, users: Any, catalogue: Any, block: Any) -> Any:
        """One block, compiled. ``catalogue``: (movie_parts, movie_cold, popularity), the same
        for every block (arguments, not captured: a traced constant would be copied into the
        compiled program); ``block``: (seen, user_cold, affinity, rank_cold, candidate,
        candidate_movies) of these users. ``candidate``: (b, n_movies) bool, the rating term's
        re-rank candidates (``rerank_candidates``, in numpy: a partition, where the compiled
        top_k sorts); ``candidate_movies``: (b, c) the same as movie indexes, -1 past a row's
        last."""
        ops = keras.ops
        if self._ranked_only:
            return self._ranked_block(users, catalogue, block)
        movie_parts, movie_cold, popularity = catalogue
        seen, user_cold, affinity, rank_cold, candidate, _ = block
        cold = ops.logical_or(user_cold[:, None], movie_cold[None, :])
        model_ratings = self._ratings(users, movie_parts)
        ratings = ops.where(cold, popularity[None, :], model_ratings)
        if self.ranker is not None:
            if self.ranker.rating_weight:
                ignored = ops.logical_or(cold, ops.logical_not(candidate))
                liking = ops.where(ignored, 0.0, model_ratings - self.model.rating_mean)
                affinity = affinity + self.ranker.rating_weight * liking
            scores = ops.where(rank_cold[:, None], popularity[None, :], affinity)
        else:
            scores = ratings
        top_scores, top_movies = ops.top_k(ops.where(seen, -math.inf, scores), self.k)
        scale = self.inputs.scale
        ratings = ops.clip(ratings, scale.low, scale.high)
        top_ratings = ops.take_along_axis(ratings, top_movies, axis=1)
        if not self.with_ratings:
            return top_scores, top_movies, top_ratings
        return top_scores, top_movies, top_ratings, ratings, scores

    def _ranked_block(self, users: Any, catalogue: Any, block: Any) -> Any:
        """``_block`` for a ranker when only the top K is asked for: rank first, then run the
        rating model on the K picks alone, not on every movie. The same numbers as ``_block``
        (the rating of a pick does not depend on the other movies); on ml-25m's catalogue it
        is 62,423 / K times less model work per user (README, "Scale"). With a rating term,
        the model also runs on the term's candidates."""
        ops = keras.ops
        movie_parts, movie_cold, popularity = catalogue
        seen, user_cold, affinity, rank_cold, candidate, candidate_movies = block
        scores = ops.where(rank_cold[:, None], popularity[None, :], affinity)
        masked = ops.where(seen, -math.inf, scores)
        weight = self.ranker.rating_weight if self.ranker is not None else 0.0
        if weight:
            # The candidates' scores with the rating term, then every other movie's: one
            # top K over both, the same work as without the term plus the candidates'.
            valid = ops.greater_equal(candidate_movies, 0)
            movies = ops.maximum(candidate_movies, 0)
            liking = self._pair_ratings(users, movie_parts, movies) - self.model.rating_mean
            ignored = ops.logical_or(
                ops.logical_or(user_cold, rank_cold)[:, None],
                ops.take(movie_cold, movies, axis=0),
            )
            reranked = ops.take_along_axis(masked, movies, axis=1)
            reranked = reranked + weight * ops.where(ignored, 0.0, liking)
            reranked = ops.where(valid, reranked, -math.inf)
            others = ops.where(candidate, -math.inf, masked)
            top_scores, at = ops.top_k(ops.concatenate([reranked, others], axis=1), self.k)
            n = ops.shape(movies)[1]
            picked = ops.take_along_axis(movies, ops.minimum(at, n - 1), axis=1)
            top_movies = ops.where(ops.less(at, n), picked, at - n)
        else:
            top_scores, top_movies = ops.top_k(masked, self.k)
        picked = ops.take(movie_parts, top_movies, axis=0)  # (b, k, dm)
        user_parts = self.model.user_parts(users)[:, None, :]
        ratings = ops.cast(self.model.pair_scores(user_parts, picked), "float32")
        ratings = ratings + self.model.rating_mean
        cold = ops.logical_or(user_cold[:, None], ops.take(movie_cold, top_movies, axis=0))
        ratings = ops.where(cold, ops.take(popularity, top_movies, axis=0), ratings)
        scale = self.inputs.scale
        return top_scores, top_movies, ops.clip(ratings, scale.low, scale.high)

    def model_ratings(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_movies) the model's own unclipped ratings, no cold rule, no mask:
        what the rating model's ranking metrics judge. Any number of users."""
        if self._ratings_fn is None:
            self._ratings_fn = compile_block_function(self._ratings)
        chunks = []
        for start in range(0, len(users), self.block_users):
            chunk = users[start : start + self.block_users]
            padded = np.zeros(self.block_users, dtype="int32")
            padded[: len(chunk)] = chunk
            out = keras.ops.convert_to_numpy(self._ratings_fn(padded, self.movie_parts))
            chunks.append(out[: len(chunk)].astype("float64"))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.inputs.n_movies))

    def score_matrix(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_movies) recommendation scores, seen movies included (a caller
        masks them): what the ranking metrics judge. Any number of users; needs a scorer
        made ``with_ratings``."""
        if self.ranker is not None:
            return self._ranker_scores(np.asarray(users)).astype("float64")
        chunks = []
        for start in range(0, len(users), self.block_users):
            scores = self(users[start : start + self.block_users]).scores
            assert scores is not None, "score_matrix needs BlockScorer(..., with_ratings=True)"
            chunks.append(scores.astype("float64"))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.inputs.n_movies))

    def _ranker_scores(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_movies) float32: ``_block``'s recommendation scores with a ranker,
        in numpy. They do not depend on the rating model, so evaluation does not run it on
        every movie (2.3 s of ml-latest-small's evaluation)."""
        assert self.ranker is not None
        affinity = self._affinity(users)
        rank_cold = self.inputs.cold.cold_users[users] | self.unknown[users]
        if self.ranker.rating_weight:
            seen = self.inputs.seen.mask(users)
            rows, movies = np.nonzero(rerank_candidates(affinity, seen, self.candidates))
            liking = self.candidate_ratings(users, rows, movies) - self.model.rating_mean
            cold = self.inputs.cold.cold_users[users][rows] | self.cold_movies[movies]
            affinity[rows, movies] += self.ranker.rating_weight * np.where(cold, 0.0, liking)
        return np.where(rank_cold[:, None], self.popularity[None, :], affinity)

    def candidate_ratings(
        self, users: np.ndarray, rows: np.ndarray, movies: np.ndarray
    ) -> np.ndarray:
        """(len(rows),) float32 the model's unclipped ratings of ``(users[rows], movies)``,
        pairs sorted by row with at most ``candidates`` a row: the rating term's input."""
        if self._pairs_fn is None:
            self._pairs_fn = compile_block_function(self._pair_ratings)
        counts = np.bincount(rows, minlength=len(users))
        column = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        out = np.empty(len(rows), dtype="float32")
        block = self.block_users
        for start in range(0, len(users), block):
            chunk = users[start : start + block]
            padded = np.zeros(block, dtype="int32")
            padded[: len(chunk)] = chunk
            grid = np.zeros((block, self.candidates), dtype="int32")
            inside = (rows >= start) & (rows < start + block)
            grid[rows[inside] - start, column[inside]] = movies[inside]
            found = keras.ops.convert_to_numpy(self._pairs_fn(padded, self.movie_parts, grid))
            out[inside] = found[rows[inside] - start, column[inside]]
        return out

    def _affinity(self, users: np.ndarray) -> np.ndarray:
        """(len(users), n_movies) float32: the ranker's item-item scores of ``users``."""
        assert self.ranker is not None
        inputs = self.inputs
        recency = None if inputs.recency is None else inputs.recency[users]
        return self.ranker.scores(inputs.watched[users], inputs.liked[users], recency)

    def __call__(self, users: np.ndarray) -> ScoredBlock:
        """Score ``users`` (encoded indexes, at most ``block_users`` of them)."""
        b = len(users)
        if b > self.block_users:
            raise ValueError(f"a block holds at most {self.block_users} users (got {b})")
        padded = np.zeros(self.block_users, dtype="int32")
        padded[:b] = users
        seen = self.inputs.seen.mask(padded)
        seen[b:] = False
        if self.ranker is not None:
            affinity = self._affinity(padded)
            rank_cold = self.inputs.cold.cold_users[padded] | self.unknown[padded]
        else:  # unused by the compiled function, which is traced without them
            affinity = np.zeros((1, 1), dtype="float32")
            rank_cold = np.zeros(1, dtype=bool)
        candidate = np.zeros((1, 1), dtype=bool)  # likewise, without a rating term
        candidate_movies = np.zeros((1, 1), dtype="int32")
        if self.ranker is not None and self.ranker.rating_weight:
            candidate = rerank_candidates(affinity, seen, self.candidates)
            rows, movies = np.nonzero(candidate)
            counts = np.bincount(rows, minlength=len(padded))
            column = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
            candidate_movies = np.full((len(padded), self.candidates), -1, dtype="int32")
            candidate_movies[rows, column] = movies
        out = self._fn(
            padded,
            (self.movie_parts, self.cold_movies, self.popularity),
            (
                seen,
                self.inputs.cold.cold_users[padded],
                affinity,
                rank_cold,
                candidate,
                candidate_movies,
            ),
        )
        out = [keras.ops.convert_to_numpy(x) for x in out]
        return ScoredBlock(
            users=np.asarray(users, dtype="int32"),
            top_movies=out[1][:b].astype("int32"),
            top_scores=out[0][:b],
            top_ratings=out[2][:b],
            seen=seen[:b],
            ratings=out[3][:b] if self.with_ratings else None,
            scores=out[4][:b] if self.with_ratings else None,
        )


def score_blocks(
    scorer: BlockScorer, users: np.ndarray, threads: int | None = None
) -> Iterator[ScoredBlock]:
    """Score ``users`` (encoded indexes) block by block, in order, with a progress bar on a
    terminal. ``threads`` blocks are scored at once (default: one per core), while the
    caller writes the finished ones: the compiled function runs without the GIL, and one
    call alone leaves a core idle part of the time."""
    threads = max(1, threads or usable_cores())
    starts = range(0, len(users), scorer.block_users)
    with (
        progress(len(users), "scoring", unit="user") as bar,
        ThreadPoolExecutor(threads, thread_name_prefix="score") as pool,
    ):
        pending: deque[Future[ScoredBlock]] = deque()
        for start in starts:
            pending.append(pool.submit(scorer, users[start : start + scorer.block_users]))
            if len(pending) > threads:
                block = pending.popleft().result()
                yield block
                bar.update(len(block.users))
        while pending:
            block = pending.popleft().result()
            yield block
            bar.update(len(block.users))


# ---------------------------------------------------------------------------------------
# Movie-to-movie neighbours


def nearest_neighbours(
    vectors: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every row among the ``candidates`` rows, never itself.

    Computed a block of rows at a time, so memory is ``block x n`` whatever ``n`` is.

    Args:
        vectors: (n, d) embeddings.
        k: neighbours per row.
        candidates: boolean mask (n,) of the rows that may be neighbours; default all.
        block: rows scored at once.

    Returns:
        (index, similarity), both (n, k), best first. Where fewer than ``k`` candidates
        exist, the remaining slots hold index -1 and similarity -inf.
    """
    n = len(vectors)
    allowed = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    pool = np.flatnonzero(allowed)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.maximum(norms, 1e-12)).astype("float32")
    index = np.full((n, k), -1, dtype="int64")
    similarity = np.full((n, k), -np.inf, dtype="float32")
    take = min(k, len(pool))
    if take == 0:
        return index, similarity
    pool_unit = unit[pool]
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        scores = unit[rows] @ pool_unit.T  # (b, len(pool))
        # A row is never its own neighbour: where it is in the pool, its score is -inf.
        in_pool = np.searchsorted(pool, rows)
        own = (in_pool < len(pool)) & (pool[np.minimum(in_pool, len(pool) - 1)] == rows)
        scores[np.flatnonzero(own), in_pool[own]] = -np.inf
        if take < len(pool):
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(len(pool)), (len(rows), len(pool)))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        best_scores = np.take_along_axis(top_scores, order, axis=1)
        found = np.isfinite(best_scores)
        index[rows, :take] = np.where(found, pool[best], -1)
        similarity[rows, :take] = best_scores
    return index, similarity


def similar_movies_table(
    movie_ids: np.ndarray, vectors: np.ndarray, n_ratings: np.ndarray, k: int, min_ratings: int
) -> pd.DataFrame:
    """movie_id, rank, similar_movie_id, similarity: each placed movie's ``k`` nearest movies
    (cosine over ``vectors``, one row per movie of ``movie_ids``).

    A movie with fewer than ``min_ratings`` ratings has an embedding that barely moved from
    its random start, so it neither gets nor appears as a neighbour.
    """
    placed = np.flatnonzero(np.asarray(n_ratings) >= max(min_ratings, 1))
    index, similarity = nearest_neighbours(vectors[placed], k)
    rows, ranks = np.nonzero(index >= 0)
    return pd.DataFrame(
        {
            "movie_id": np.asarray(movie_ids)[placed[rows]].astype("int64"),
            "rank": (ranks + 1).astype("int32"),
            "similar_movie_id": np.asarray(movie_ids)[placed[index[rows, ranks]]].astype("int64"),
            "similarity": similarity[rows, ranks].astype("float32"),
        }
    )
