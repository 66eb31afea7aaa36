"""Item-to-item models of who liked what: EASE and "people who liked this also liked".

Closed-form linear algebra (numpy, scipy.sparse), no Keras: both rest on the item-item
co-like counts ``G = X^T X`` of the binary matrix X of users x movies they liked.

- ``Ease`` (Steck, "Embarrassingly Shallow Autoencoders for Sparse Data", WWW 2019):
  ``B = I - P diagMat(1 / diag(P))`` with ``P = (G + l2 I)^-1``, so a user's score for movie
  i is ``sum over liked j of B[j, i]``. Its weights also give each recommendation its reason:
  the liked movie j with the largest ``B[j, i]``.
- ``also_liked``: each movie's nearest movies by shrunk cosine over who liked them.

Both are items^2 floats, so they cover at most ``MAX_ITEMS`` movies: every movie someone
liked on a catalogue up to that size (ml-latest-small's 9,742 movies, ml-1m, ml-10m), the most
liked ones beyond it (ml-25m, ml-32m), with a logged note. Movies outside get no EASE score.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import sparse
from scipy.linalg import lapack

from job.core.config import ModelConfig
from job.core.files import atomic_path
from job.core.memory import usable_cores

log = logging.getLogger(__name__)

# Movies liked by fewer people are left out of the item-item models: a single like says
# little about a movie, and leaving them out halves the items at the same validation nDCG@10.
MIN_LIKES = 2
# The same for the EASE over everything rated: a movie two people watched says as little,
# and leaving out those rated fewer times than this gave the same validation nDCG@10 with a
# fifth fewer items, half the fit's time (cubic in the items; docs/benchmarks.md).
MIN_WATCHES = 3
# The Gram matrix and its inverse grow with the square of the items, the inverse's time
# with the cube: this many keeps both within a runner's memory and minutes.
MAX_ITEMS = 10_000
# Shrinkage of the also-liked cosine: two movies liked together by 2 people out of 3 must not
# outrank two liked together by 200 out of 300.
COSINE_SHRINK = 10.0
# Below this many rows per thread, a thread costs more than it saves (sparse_times_dense).
MIN_ROWS_PER_THREAD = 16


def sparse_times_dense(
    rows: sparse.csr_matrix, dense: np.ndarray, workers: int | None = None
) -> np.ndarray:
    """``rows @ dense``, in row chunks on ``workers`` threads (default: every core).

    The score stage spent about half its time here (a block of users' histories times
    EASE's items x items weights; evaluation ranks through it too). scipy's CSR product reads
    a row of ``dense`` once per non-zero, and users in a block share their popular movies;
    each chunk in column order (CSC) reads it once per chunk instead (1.4x on one core), and
    scipy's product releases the GIL, so chunks run on every core (2.8x on 2 cores; README,
    "Where the time went"). Each output row is summed by one thread in column order, so the
    result is the same whatever the chunking.
    """
    n = rows.shape[0]
    workers = min(workers or usable_cores(), max(1, n // MIN_ROWS_PER_THREAD))
    if workers == 1:
        return np.asarray(rows.tocsc() @ dense)
    bounds = np.linspace(0, n, workers + 1).astype(int)
    with ThreadPoolExecutor(workers) as pool:
        chunks = pool.map(lambda lo, hi: rows[lo:hi].tocsc() @ dense, bounds[:-1], bounds[1:])
        return np.vstack(list(chunks))


def covered_items(
    liked: sparse.csr_matrix, min_likes: int = MIN_LIKES, max_items: int = MAX_ITEMS
) -> np.ndarray:
    """Sorted movie indexes with at least ``min_likes`` likes; the ``max_items`` most liked
    if there are more."""
    counts = np.asarray(liked.sum(axis=0)).ravel()
    items = np.flatnonzero(counts >= max(min_likes, 1))
    if len(items) > max_items:
        log.info(
            "item-item models cover the %s most liked of %s liked movies (MAX_ITEMS)",
            f"{max_items:,}",
            f"{len(items):,}",
        )
        order = np.lexsort((items, -counts[items]))  # most liked first, then by index
        items = np.sort(items[order[:max_items]])
    return items


def gram(liked: sparse.csr_matrix, items: np.ndarray) -> np.ndarray:
    """(m, m) float64 co-like counts G = X^T X over the ``items`` columns."""
    x = liked[:, items].tocsc()
    return (x.T @ x).toarray().astype(np.float64)


def fit_ease(
    liked: sparse.csr_matrix, l2: float, min_likes: int = MIN_LIKES, max_items: int = MAX_ITEMS
) -> tuple[Ease, np.ndarray]:
    """EASE on the ``liked`` matrix (users x movies), and the co-like counts it was fit on."""
    items = covered_items(liked, min_likes, max_items)
    g = gram(liked, items)
    return Ease.fit(g, items, liked.shape[1], l2), g


def _mirror_upper(a: np.ndarray, block: int = 512) -> None:
    """Copy the upper triangle of square ``a`` onto its lower one, in place, a block of
    columns at a time (``np.triu(a) + np.triu(a, 1).T`` made three items^2 temporaries and
    took 0.8 s at 6,000 items)."""
    n = len(a)
    for start in range(0, n, block):
        end = min(start + block, n)
        corner = a[start:end, start:end]
        lower = np.tril_indices(end - start, -1)
        corner[lower] = corner.T[lower]
        a[end:, start:end] = a[start:end, end:].T


@dataclass(frozen=True)
class Ease:
    """EASE over the ``items`` columns: ``weights[j, i]``, zero diagonal, float32."""

    items: np.ndarray  # (m,) encoded movie indexes, sorted
    weights: np.ndarray  # (m, m)
    n_movies: int
    l2: float

    @classmethod
    def fit(cls, g: np.ndarray, items: np.ndarray, n_movies: int, l2: float) -> Ease:
        """From the co-like counts ``g`` of ``items`` (``gram``); ``g`` is not modified.

        The one place an EASE model is fit (tests/test_stages_train.py counts the calls in a run).
        """
        # float32 and in place: G + l2 I is symmetric positive definite, so a Cholesky
        # inverse (half an LU one) in single precision, on a Fortran-ordered copy that LAPACK
        # overwrites rather than copies again: several times faster than float64, at the same
        # nDCG@10.
        regularised = np.array(g, dtype=np.float32, order="F")
        regularised[np.diag_indices_from(regularised)] += l2
        factor, info = lapack.spotrf(regularised, lower=False, overwrite_a=True, clean=False)
        if info == 0:
            p, info = lapack.spotri(factor, lower=False, overwrite_c=True)
        if info != 0:
            raise ValueError(f"G + {l2} I is not positive definite (LAPACK info {info})")
        _mirror_upper(p)
        # P is symmetric: its transpose is the same matrix, C-ordered, with no copy.
        weights = p.T
        weights /= -np.diag(weights)[None, :]
        np.fill_diagonal(weights, 0.0)
        return cls(np.asarray(items, dtype=np.int64), weights, n_movies, l2)

    def scores(self, liked_rows: sparse.csr_matrix) -> np.ndarray:
        """(b, n_movies) float32 scores of the users whose liked rows are given; 0 outside
        the covered items."""
        out = np.zeros((liked_rows.shape[0], self.n_movies), dtype=np.float32)
        out[:, self.items] = sparse_times_dense(liked_rows[:, self.items], self.weights)
        return out

    def reasons(self, liked_rows: sparse.csr_matrix, recommended: np.ndarray) -> np.ndarray:
        """(b, k) the liked movie (encoded index) that adds most to each recommended movie's
        score: ``argmax over liked j of weights[j, i]``; -1 where no liked movie adds to it
        (a cold user, or a movie outside the covered items)."""
        position = np.full(self.n_movies, -1, dtype=np.int64)
        position[self.items] = np.arange(len(self.items))
        columns = position[recommended]  # (b, k)
        out = np.full(recommended.shape, -1, dtype=np.int64)
        for row in range(liked_rows.shape[0]):
            liked = position[
                liked_rows.indices[liked_rows.indptr[row] : liked_rows.indptr[row + 1]]
            ]
            liked = liked[liked >= 0]
            known = columns[row] >= 0
            if not len(liked) or not known.any():
                continue
            contributions = self.weights[np.ix_(liked, columns[row][known])]  # (liked, k')
            best = contributions.argmax(axis=0)
            adds = contributions[best, np.arange(contributions.shape[1])] > 0
            out[row, np.flatnonzero(known)[adds]] = self.items[liked[best[adds]]]
        return out


def recency_weights(recency_rows: sparse.csr_matrix, half_life: float) -> sparse.csr_matrix:
    """Each rated movie's weight in a user's history: 1 for the latest, halving every
    ``half_life`` of the user's ratings (a fraction of their count; at least one rating).

    ``recency_rows`` hold each rating's place counted from the user's latest, plus one
    (``interactions.recency_matrix``). A fraction rather than days: users rate at very
    different paces, and many rate dozens of movies in one sitting.
    """
    weights = recency_rows.copy().astype(np.float32)
    lengths = np.diff(weights.indptr)
    span = np.maximum(np.repeat(lengths, lengths) * half_life, 1.0)
    weights.data = np.power(0.5, (weights.data - 1.0) / span).astype(np.float32)
    return weights


@dataclass(frozen=True)
class WatchAndLike:
    """The recommendation score: would this user watch the movie, and like it?

    The sum of two EASE scores: one fit on everything users rated (what people watch
    together), one on what they liked (rated >= LIKE_RATING). On the validation split the sum
    beat either alone (nDCG@10 0.211 against 0.209 for likes, 0.195 for everything rated):
    the first keeps the popularity and co-watching signal, the second what people enjoyed.
    Reasons come from the liked part only: "because you rated X" names a movie the user liked.

    Two settings, chosen per run on the validation split (``evaluate.choose_ranking``):
    ``half_life`` weights a user's history by recency (None: every rating alike), for "what
    will they watch next"; ``rating_weight`` adds that many times the rating model's
    predicted rating minus its mean (the scorer adds it, ``rank.BlockScorer``), for "would
    they like it" where who-watches-what says little about it.
    """

    watch: Ease
    like: Ease
    half_life: float | None = None
    rating_weight: float = 0.0

    def scores(
        self,
        watched_rows: sparse.csr_matrix,
        liked_rows: sparse.csr_matrix,
        recency_rows: sparse.csr_matrix | None = None,
    ) -> np.ndarray:
        """(b, n_movies) float32 item-item scores; ``recency_rows`` (the same users' rows of
        ``Interactions.recency``) are needed for the recency weighting and ignored without
        a ``half_life``."""
        if self.half_life is not None and recency_rows is not None:
            weights = recency_weights(recency_rows, self.half_life)
            watched_rows = watched_rows.multiply(weights).tocsr()
            liked_rows = liked_rows.multiply(weights).tocsr()
        return self.watch.scores(watched_rows) + self.like.scores(liked_rows)

    def knows(self, watched: sparse.csr_matrix) -> np.ndarray:
        """(n_users,) bool: users who rated at least one movie the model covers."""
        return np.asarray(watched[:, self.watch.items].getnnz(axis=1) > 0)

    def reasons(self, liked_rows: sparse.csr_matrix, recommended: np.ndarray) -> np.ndarray:
        return self.like.reasons(liked_rows, recommended)

    def save(self, path: Path) -> None:
        arrays: dict[str, Any] = {
            f"{part}_{key}": value
            for part, ease in (("watch", self.watch), ("like", self.like))
            for key, value in (("items", ease.items), ("weights", ease.weights), ("l2", ease.l2))
        }
        with atomic_path(path) as tmp, tmp.open("wb") as f:
            np.savez(
                f,
                n_movies=self.watch.n_movies,
                half_life=np.nan if self.half_life is None else self.half_life,
                rating_weight=self.rating_weight,
                **arrays,
            )

    @classmethod
    def load(cls, path: Path) -> WatchAndLike:
        with np.load(path) as saved:
            parts = [
                Ease(
                    saved[f"{part}_items"],
                    saved[f"{part}_weights"],
                    int(saved["n_movies"]),
                    float(saved[f"{part}_l2"]),
                )
                for part in ("watch", "like")
            ]
            # Rankers saved before these settings existed weigh every rating alike.
            half_life = float(saved["half_life"]) if "half_life" in saved else np.nan
            weight = float(saved["rating_weight"]) if "rating_weight" in saved else 0.0
        return cls(parts[0], parts[1], None if np.isnan(half_life) else half_life, weight)


def also_liked(
    g: np.ndarray, items: np.ndarray, k: int, min_likes: int, shrink: float = COSINE_SHRINK
) -> pd.DataFrame:
    """movie, rank, other, score: each movie's ``k`` most co-liked movies (encoded indexes).

    score = G[i, j] / (sqrt(G[i, i] G[j, j]) + shrink): cosine over who liked them, shrunk
    towards 0 for movies few people liked. Movies with fewer than ``min_likes`` likes neither
    get neighbours nor are one.
    """
    counts = np.diag(g).copy()
    placed = np.flatnonzero(counts >= max(min_likes, 1))
    rows: list[pd.DataFrame] = []
    take = min(k, len(placed) - 1)
    empty = pd.DataFrame(
        {
            "movie": np.zeros(0, np.int64),
            "rank": np.zeros(0, np.int32),
            "other": np.zeros(0, np.int64),
            "score": np.zeros(0, np.float32),
        }
    )
    if take < 1:
        return empty
    norms = np.sqrt(counts[placed])
    for start in range(0, len(placed), 1024):
        block = placed[start : start + 1024]
        sims = g[np.ix_(block, placed)] / (
            norms[start : start + 1024, None] * norms[None, :] + shrink
        )
        sims[np.arange(len(block)), np.arange(start, start + len(block))] = -np.inf  # not itself
        top = np.argpartition(-sims, take - 1, axis=1)[:, :take]
        top_sims = np.take_along_axis(sims, top, axis=1)
        order = np.lexsort((top, -top_sims), axis=1)  # best first; ties by movie index
        best = np.take_along_axis(top, order, axis=1)
        best_sims = np.take_along_axis(top_sims, order, axis=1)
        keep = best_sims > 0
        r, c = np.nonzero(keep)
        rows.append(
            pd.DataFrame(
                {
                    "movie": items[block[r]],
                    "rank": (c + 1).astype("int32"),
                    "other": items[placed[best[r, c]]],
                    "score": best_sims[r, c].astype("float32"),
                }
            )
        )
    return pd.concat([empty, *rows], ignore_index=True)


def also_liked_table(
    liked: sparse.csr_matrix, k: int, min_likes: int, shrink: float = COSINE_SHRINK
) -> pd.DataFrame:
    """``also_liked`` over the co-like counts of ``liked`` (users x movies): the movies EASE
    would cover, their Gram matrix, and no inverse (nothing is fit)."""
    items = covered_items(liked)
    return also_liked(gram(liked, items), items, k, min_likes, shrink)


def fit_watch_and_like(
    watched: sparse.csr_matrix,
    liked: sparse.csr_matrix,
    config: ModelConfig,
    *,
    reuse: Ease | None = None,
    half_life: float | None = None,
    rating_weight: float = 0.0,
) -> WatchAndLike:
    """The ``ease`` ranker, as evaluate and bench fit it: EASE on what users liked
    (``config.ease_l2``) plus EASE on everything they rated (``config.ease_watch_l2``).

    ``reuse``: an EASE already fit on ``watched`` (evaluate's baseline, with ``MIN_WATCHES``),
    taken as the watched part when its L2 is the one asked for, so it is not fit twice.
    """
    like = fit_ease(liked, config.ease_l2)[0]
    if reuse is not None and reuse.l2 == config.ease_watch_l2:
        watch = reuse
    else:
        watch = fit_ease(watched, config.ease_watch_l2, MIN_WATCHES)[0]
    return WatchAndLike(watch, like, half_life, rating_weight)
