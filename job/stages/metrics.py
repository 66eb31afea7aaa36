"""Ranking metrics over held-out ratings: precision, recall and nDCG at K, and the catalogue's
coverage, vectorised over blocks of users and checked against a one-user-at-a-time reference
(tests/test_stages_metrics.py)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

RANK_K = 10  # the "@10" of the ranking metrics (their column names say 10)
RELEVANT_RATING = 4.0  # a held-out rating of this or more marks a relevant movie

ScoreFunction = Callable[[np.ndarray], np.ndarray]  # users (B,) -> (B, n_movies) scores


@dataclass(frozen=True)
class RankingMetrics:
    precision: float  # mean over users of hits@k / k
    recall: float  # mean over users of hits@k / (their relevant movies)
    ndcg: float  # mean over users of DCG@k / ideal DCG@k, binary relevance
    coverage: float  # distinct movies in all top-k lists / catalogue size
    n_users: int  # users with at least one relevant held-out movie (the mean's denominator)


def _rows_of(sorted_users: np.ndarray, block_users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For pairs sorted by user: (row in block, index into the pairs) of the block's users' pairs."""
    starts = np.searchsorted(sorted_users, block_users, side="left")
    ends = np.searchsorted(sorted_users, block_users, side="right")
    lengths = ends - starts
    rows = np.repeat(np.arange(len(block_users)), lengths)
    offsets = np.repeat(starts - np.concatenate([[0], np.cumsum(lengths)[:-1]]), lengths)
    return rows, offsets + np.arange(int(lengths.sum()))


def top_k_stable(scores: np.ndarray, k: int) -> np.ndarray:
    """(b, min(k, n)) column indexes of each row's ``k`` highest scores, best first, ties
    by column: ``np.argsort(-scores, axis=1, kind="stable")[:, :k]`` without sorting whole
    rows. Only the candidates (scores at or above each row's k-th highest) are sorted."""
    b, n = scores.shape
    k = min(k, n)
    if k == 0 or b == 0:
        return np.zeros((b, k), dtype=np.int64)
    neg = -scores
    kth = np.partition(neg, k - 1, axis=1)[:, k - 1 : k]
    candidates = neg <= kth
    if candidates.sum() > b * (4 * k + 64):  # mostly ties (a constant baseline): sort rows
        return np.argsort(neg, axis=1, kind="stable")[:, :k]
    rows, cols = np.nonzero(candidates)  # by row, then column
    order = np.lexsort((cols, neg[rows, cols], rows))  # by row, then score, then column
    rows, cols = rows[order], cols[order]
    starts = np.searchsorted(rows, np.arange(b))
    rank = np.arange(len(rows)) - starts[rows]
    keep = rank < k
    top = np.empty((b, k), dtype=np.int64)
    top[rows[keep], rank[keep]] = cols[keep]
    return top


def ranking_metrics(
    score_block: ScoreFunction,
    n_movies: int,
    seen: tuple[np.ndarray, np.ndarray],
    held_out: tuple[np.ndarray, np.ndarray, np.ndarray],
    order: np.ndarray,
    k: int = RANK_K,
    block: int = 64,
) -> RankingMetrics | None:
    """Rank every movie a user has not rated in ``seen`` and score the top ``k``.

    Args:
        score_block: users (B,) -> (B, n_movies) scores (e.g. predicted ratings, unclipped).
        seen: (users, movies) the model learnt from (train and validation): never candidates.
        held_out: (users, movies, ratings) of the test ratings; every user among them is
            ranked, those with a rating >= ``RELEVANT_RATING`` are the relevant movies.
        order: the tie-break, movies in preferred order (``popularity_order``); among equal
            scores the earlier movie ranks first.
        block: users scored at once; memory is ``block x n_movies``.

    Returns means over the users with a relevant movie (None if none has one), and the
    coverage over all ranked users.
    """
    seen_users, seen_movies = _by_user(*(np.asarray(a) for a in seen))
    ho_users, ho_movies, ho_ratings = (np.asarray(a) for a in held_out)
    relevant = ho_ratings >= RELEVANT_RATING
    rel_users, rel_movies = _by_user(ho_users[relevant], ho_movies[relevant])
    # Columns in the tie-break order: a stable sort on the score alone then breaks ties by it.
    position = np.empty(n_movies, dtype="int64")
    position[order] = np.arange(n_movies)
    users = np.unique(ho_users)
    discount = 1.0 / np.log2(np.arange(2, k + 2))
    precision, recall, ndcg = [], [], []
    shown = np.zeros(n_movies, dtype=bool)
    for start in range(0, len(users), block):
        block_users = users[start : start + block]
        scores = np.asarray(score_block(block_users), "float64")[:, order]
        rows, index = _rows_of(seen_users, block_users)
        scores[rows, position[seen_movies[index]]] = -np.inf
        top = top_k_stable(scores, k)
        candidate = np.isfinite(np.take_along_axis(scores, top, axis=1))
        top_movies = order[top]
        shown[top_movies[candidate]] = True
        hits, n_rel = _relevant_hits((rel_users, rel_movies), block_users, top_movies, n_movies)
        judged = n_rel > 0
        if not judged.any():
            continue
        hits, n_rel = hits[judged] & candidate[judged], n_rel[judged]
        n_hits = hits.sum(axis=1)
        precision.append(n_hits / k)
        recall.append(n_hits / n_rel)
        ideal = np.cumsum(discount)[np.minimum(n_rel, k) - 1]
        ndcg.append((hits * discount).sum(axis=1) / ideal)
    if not precision:
        return None
    precision_, recall_, ndcg_ = (
        float(np.mean(np.concatenate(p))) for p in (precision, recall, ndcg)
    )
    n_users = int(sum(len(p) for p in precision))
    return RankingMetrics(precision_, recall_, ndcg_, float(shown.sum() / n_movies), n_users)


def _relevant_hits(
    relevant: tuple[np.ndarray, np.ndarray],
    block_users: np.ndarray,
    top_movies: np.ndarray,
    n_movies: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(B, k) whether each pick is a relevant held-out movie, and (B,) each user's count of
    them; ``relevant``: (users, movies) sorted by user."""
    is_relevant = np.zeros((len(block_users), n_movies), dtype=bool)
    rows, index = _rows_of(relevant[0], block_users)
    is_relevant[rows, relevant[1][index]] = True
    return np.take_along_axis(is_relevant, top_movies, axis=1), is_relevant.sum(axis=1)


def _by_user(users: np.ndarray, movies: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The pairs sorted by user (stable), as ``_rows_of`` looks them up."""
    order = np.argsort(users, kind="stable")
    return users[order], movies[order]


def constant_scorer(per_movie: np.ndarray) -> ScoreFunction:
    """A baseline's scores: the same per-movie value for every user."""
    return lambda users: np.broadcast_to(per_movie, (len(users), len(per_movie)))
