"""Who rated what: user histories, seen pairs, the cold-start rule and popularity.

Shared by every stage that ranks movies for users (evaluate, rank, score, store, bench), so
"unwatched", "cold" and "popular" mean the same thing everywhere. Pure numpy on encoded
indexes; no model.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import sparse

from job.core.config import Config
from job.core.errors import JobError
from job.data.features import IdEncoding, SideFeatures, side_features
from job.data.movielens import Dataset, RatingScale
from job.data.split import TRAIN, VAL, split_ratings

# A rating of this or more counts as "liked". Learning from what users liked, not from all
# they watched, is the biggest single lever (docs/benchmarks.md, "The ranker").
LIKE_RATING = 4.0
# The cold-start rule: a movie's popularity is the Bayesian average of its ratings,
# (C * m + sum of ratings) / (C + n), m the global mean. C = 10 is about the mean number of
# ratings per movie in ml-latest-small: a movie's own mean outweighs the global mean once it
# has more than 10 ratings, and a movie with three 5-star ratings does not top the list.
PRIOR_COUNT = 10.0


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
        users, movies = np.asarray(users), np.asarray(movies, dtype=np.int32)
        counts = np.bincount(users, minlength=n_users)
        indptr = np.zeros(n_users + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        # A run's ratings are usually stored by user, then movie (as MovieLens ships them):
        # checking that is one pass, where sorting them again costs seconds of every score.
        key = users.astype(np.int64) * n_movies + movies
        if len(key) < 2 or bool(np.all(key[1:] >= key[:-1])):
            return cls(indptr, movies.copy(), n_movies)
        return cls(indptr, movies[np.lexsort((movies, users))], n_movies)

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
class EncodedRatings:
    """Ratings by encoded index (``IdEncoding``) with the catalogue's sizes: what models,
    baselines and the item-item fits take, instead of loose arrays and counts."""

    pairs: np.ndarray  # (n, 2) encoded (user, movie), one row per rating
    ratings: np.ndarray  # (n,) stars
    n_users: int
    n_movies: int

    @property
    def users(self) -> np.ndarray:
        return self.pairs[:, 0]

    @property
    def movies(self) -> np.ndarray:
        return self.pairs[:, 1]

    def where(self, mask: np.ndarray) -> EncodedRatings:
        """The ratings ``mask`` selects, of the same catalogue."""
        return EncodedRatings(self.pairs[mask], self.ratings[mask], self.n_users, self.n_movies)

    def liked(self, like_rating: float = LIKE_RATING) -> sparse.csr_matrix:
        """``liked_matrix`` of these ratings; ``-np.inf``: every rating (what was watched)."""
        return liked_matrix(
            self.users, self.movies, self.ratings, self.n_users, self.n_movies, like_rating
        )


@dataclass(frozen=True)
class Interactions:
    """Everything the scorers need besides the model, in encoded indexes. The user x movie
    matrices are made on first use: a rating-ranked preset reads none of them, and on
    millions of ratings each costs a sort."""

    seen: SeenPairs
    cold: ColdStart
    scale: RatingScale
    rated: EncodedRatings
    timestamps: np.ndarray | None = None  # (n,) when each rating was given, if known

    @classmethod
    def from_ratings(
        cls,
        rated: EncodedRatings,
        is_train: np.ndarray,
        scale: RatingScale,
        timestamps: np.ndarray | None = None,
    ) -> Interactions:
        """From encoded (user, movie, rating) triples and which of them trained the model
        (and when each was given, for the recency weighting)."""
        users, movies, ratings = rated.users, rated.movies, rated.ratings
        n_users, n_movies = rated.n_users, rated.n_movies
        return cls(
            seen=SeenPairs.from_pairs(users, movies, n_users, n_movies),
            cold=ColdStart.fit(users, movies, ratings, is_train, n_users, n_movies),
            scale=scale,
            rated=rated,
            timestamps=timestamps,
        )

    @functools.cached_property
    def watched(self) -> sparse.csr_matrix:
        """(n_users, n_movies): 1 where the user rated the movie."""
        return self.rated.liked(-np.inf)

    @functools.cached_property
    def liked(self) -> sparse.csr_matrix:
        """(n_users, n_movies): 1 where the user rated it >= LIKE_RATING."""
        return self.rated.liked()

    @functools.cached_property
    def recency(self) -> sparse.csr_matrix | None:
        """(n_users, n_movies): each rating's place from the user's latest, plus one (None:
        no timestamps); the ranker's recency weighting reads it (itemitem.recency_weights)."""
        if self.timestamps is None:
            return None
        rated = self.rated
        return recency_matrix(
            rated.users, rated.movies, self.timestamps, rated.n_users, rated.n_movies
        )

    @property
    def n_users(self) -> int:
        return len(self.seen.indptr) - 1

    @property
    def n_movies(self) -> int:
        return self.seen.n_movies


def interactions_of(
    encoding: IdEncoding, ratings: pd.DataFrame, scale: RatingScale
) -> Interactions:
    """From a run's ratings table (raw ids, rating, split): the seen pairs and the cold rule."""
    pairs = np.stack(
        [encoding.encode_users(ratings["user_id"]), encoding.encode_movies(ratings["movie_id"])],
        axis=1,
    )
    rated = EncodedRatings(
        pairs, ratings["rating"].to_numpy("float64"), encoding.n_users, encoding.n_movies
    )
    return Interactions.from_ratings(
        rated,
        is_train(ratings["split"]),
        scale,
        ratings["timestamp"].to_numpy("int64") if "timestamp" in ratings else None,
    )


def recency_matrix(
    users: np.ndarray, movies: np.ndarray, timestamps: np.ndarray, n_users: int, n_movies: int
) -> sparse.csr_matrix:
    """(n_users, n_movies) float32 CSR: 1 at each user's latest rating, 2 at the one before,
    and so on (ties by the later row first); the same sparsity as ``liked_matrix``'s
    every-rating matrix (one rating per pair)."""
    users, movies = np.asarray(users), np.asarray(movies)
    rows = np.arange(len(users))
    order = np.lexsort((-rows, -np.asarray(timestamps, "int64"), users))  # newest first
    starts = np.searchsorted(users[order], np.arange(n_users))
    place = np.empty(len(users), dtype=np.float32)
    place[order] = np.arange(len(users)) - starts[users[order]] + 1
    return sparse.csr_matrix((place, (users, movies)), shape=(n_users, n_movies))


def liked_matrix(
    users: np.ndarray,
    movies: np.ndarray,
    ratings: np.ndarray,
    n_users: int,
    n_movies: int,
    like_rating: float = LIKE_RATING,
) -> sparse.csr_matrix:
    """(n_users, n_movies) float32 CSR with 1 where the user rated the movie >= like_rating."""
    liked = np.asarray(ratings) >= like_rating
    values = np.ones(int(liked.sum()), dtype=np.float32)
    matrix = sparse.csr_matrix(
        (values, (np.asarray(users)[liked], np.asarray(movies)[liked])),
        shape=(n_users, n_movies),
    )
    matrix.sum_duplicates()
    matrix.data[:] = 1.0
    return matrix


def is_train(split: pd.Series) -> np.ndarray:
    """The split column holds codes (job.data.split.TRAIN, ...) or names ("train", ...)."""
    if pd.api.types.is_numeric_dtype(split):
        return split.to_numpy() == TRAIN
    return split.astype(str).to_numpy() == "train"


def popularity_order(train_movies: np.ndarray, n_movies: int) -> np.ndarray:
    """Movie indexes, most training ratings first, then by index: the tie-break of every ranking.

    Ties matter for the baselines: the global mean scores every movie the same, so its
    ranking *is* this order (a most-popular recommender); the movie mean ties many movies
    at 5.0.
    """
    counts = np.bincount(train_movies, minlength=n_movies)
    return np.lexsort((np.arange(n_movies), -counts))


@dataclass(frozen=True)
class SplitData:
    """A dataset encoded and split once: what training, evaluation and tuning share."""

    encoding: IdEncoding
    pairs: np.ndarray  # (n, 2) encoded (user, movie), one row per rating
    ratings: np.ndarray  # (n,) float64
    labels: np.ndarray  # (n,) TRAIN / VAL / TEST
    side: SideFeatures | None  # built only for models that read it
    timestamps: np.ndarray | None = None  # (n,) int64 seconds, when each rating was given

    def mask(self, part: int) -> np.ndarray:
        return self.labels == part

    @property
    def rated(self) -> EncodedRatings:
        return EncodedRatings(
            self.pairs, self.ratings, self.encoding.n_users, self.encoding.n_movies
        )


def split_data(dataset: Dataset, config: Config) -> SplitData:
    """Encode ids, split ratings with the config's seed, build side features if the model needs them."""
    encoding = IdEncoding.fit(dataset.ratings, dataset.movies)
    users = encoding.encode_users(dataset.ratings["user_id"])
    movies = encoding.encode_movies(dataset.ratings["movie_id"])
    labels = split_ratings(
        dataset.ratings, config.split, config.test_fraction, config.val_fraction, config.seed
    )
    if not (labels == TRAIN).any() or not (labels == VAL).any():
        raise JobError(
            f"{dataset.name}: too few ratings ({len(labels)}) to split into train and validation sets"
        )
    side = (
        side_features(dataset.movies, dataset.tags, encoding, config.model.n_tags)
        if config.model.architecture == "dlrm"
        else None
    )
    return SplitData(
        encoding=encoding,
        pairs=np.stack([users, movies], axis=1),
        ratings=dataset.ratings["rating"].to_numpy("float64"),
        labels=labels,
        side=side,
        timestamps=dataset.ratings["timestamp"].to_numpy("int64"),
    )
