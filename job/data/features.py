"""Id encoding (done once, saved with the model) and side features of movies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from job.core.errors import DataError

YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:\s*[–-]\s*(?:\d{4})?\s*)?\)\s*$")
NO_GENRES = "(no genres listed)"


@dataclass(frozen=True)
class IdEncoding:
    """Raw MovieLens ids <-> dense embedding indexes, both directions.

    ``user_ids[i]`` is the raw id of user index ``i``; both arrays are sorted, so encoding is
    a binary search. Every stage goes through this: raw ids never index an embedding table.
    """

    user_ids: np.ndarray
    movie_ids: np.ndarray

    @classmethod
    def fit(cls, ratings: pd.DataFrame, movies: pd.DataFrame) -> IdEncoding:
        """Users are those with ratings; movies are the whole catalogue (rated or not)."""
        return cls(
            user_ids=np.unique(ratings["user_id"].to_numpy(dtype="int64")),
            movie_ids=np.unique(movies["movie_id"].to_numpy(dtype="int64")),
        )

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_movies(self) -> int:
        return len(self.movie_ids)

    def encode_users(self, raw: np.ndarray | pd.Series | list[int]) -> np.ndarray:
        return _encode(self.user_ids, np.asarray(raw, dtype="int64"), "user")

    def encode_movies(self, raw: np.ndarray | pd.Series | list[int]) -> np.ndarray:
        return _encode(self.movie_ids, np.asarray(raw, dtype="int64"), "movie")

    def decode_users(self, index: np.ndarray) -> np.ndarray:
        return self.user_ids[np.asarray(index)]

    def decode_movies(self, index: np.ndarray) -> np.ndarray:
        return self.movie_ids[np.asarray(index)]

    def save(self, path: Path) -> None:
        from job.core.files import atomic_write_text

        payload = {"user_ids": self.user_ids.tolist(), "movie_ids": self.movie_ids.tolist()}
        atomic_write_text(path, json.dumps(payload))

    @classmethod
    def load(cls, path: Path) -> IdEncoding:
        raw = json.loads(path.read_text())
        return cls(np.asarray(raw["user_ids"], "int64"), np.asarray(raw["movie_ids"], "int64"))


def _encode(known: np.ndarray, raw: np.ndarray, kind: str) -> np.ndarray:
    index = np.searchsorted(known, raw)
    index = np.minimum(index, len(known) - 1)
    missing = known[index] != raw
    if missing.any():
        raise DataError(
            f"unknown {kind} id {int(raw[missing][0])}: it is not in the trained encoding"
        )
    return index.astype("int32")


def parse_year(title: str) -> int | None:
    """The release year MovieLens appends to titles: "Heat (1995)" -> 1995."""
    match = YEAR_IN_TITLE.search(title.strip())
    return int(match.group(1)) if match else None


def split_genres(genres: str) -> list[str]:
    """ "Action|Comedy" -> ["Action", "Comedy"]; "(no genres listed)" -> []."""
    return [g for g in genres.split("|") if g and g != NO_GENRES]


def movie_table(movies: pd.DataFrame) -> pd.DataFrame:
    """movie_id, title, year (nullable int), genres (list of str), sorted by movie_id."""
    table = movies.sort_values("movie_id").reset_index(drop=True)
    return pd.DataFrame(
        {
            "movie_id": table["movie_id"].astype("int64"),
            "title": table["title"],
            "year": pd.array([parse_year(t) for t in table["title"]], dtype="Int64"),
            "genres": [split_genres(g) for g in table["genres"]],
        }
    )


def genre_vocabulary(movies: pd.DataFrame) -> list[str]:
    """Every genre used in the catalogue, sorted."""
    return sorted({g for gs in movies["genres"] for g in split_genres(gs)})


def genre_matrix(movies: pd.DataFrame, encoding: IdEncoding, vocabulary: list[str]) -> np.ndarray:
    """Multi-hot genres, one row per encoded movie index: (n_movies, len(vocabulary))."""
    position = {g: i for i, g in enumerate(vocabulary)}
    matrix = np.zeros((encoding.n_movies, len(vocabulary)), dtype="float32")
    rows = encoding.encode_movies(movies["movie_id"])
    for row, genres in zip(rows, movies["genres"], strict=True):
        for genre in split_genres(genres):
            if genre in position:
                matrix[row, position[genre]] = 1.0
    return matrix


def normalise_tag(tag: str) -> str:
    """Tags as users typed them differ in case and spacing: "Dark Comedy " == "dark comedy"."""
    return " ".join(str(tag).lower().split())


def tag_vocabulary(tags: pd.DataFrame, size: int) -> list[str]:
    """The ``size`` most used tags (normalised), most used first; ties broken alphabetically.

    "Used" counts distinct (user, movie, tag) applications, so a user repeating a tag on one
    movie counts once.
    """
    if size < 1 or tags.empty:
        return []
    applied = pd.DataFrame(
        {
            "user_id": tags["user_id"],
            "movie_id": tags["movie_id"],
            "tag": tags["tag"].map(normalise_tag),
        }
    )
    applied = applied[applied["tag"] != ""].drop_duplicates()
    counts = applied.groupby("tag").size().reset_index(name="n")
    counts = counts.sort_values(["n", "tag"], ascending=[False, True], kind="stable")
    return counts["tag"].head(size).tolist()


def tag_matrix(tags: pd.DataFrame, encoding: IdEncoding, vocabulary: list[str]) -> np.ndarray:
    """Term-frequency weights of the vocabulary's tags, one row per encoded movie index.

    (n_movies, len(vocabulary)), each non-empty row summing to 1 (a weighted mean pooling of
    tag embeddings); movies without a vocabulary tag get a row of zeros. Tags of movies
    outside the encoding are ignored.
    """
    matrix = np.zeros((encoding.n_movies, len(vocabulary)), dtype="float32")
    if not vocabulary or tags.empty:
        return matrix
    position = {t: i for i, t in enumerate(vocabulary)}
    column = tags["tag"].map(normalise_tag).map(position)
    raw_movies = tags["movie_id"].to_numpy("int64")
    known = np.isin(raw_movies, encoding.movie_ids) & column.notna().to_numpy()
    if not known.any():
        return matrix
    rows = encoding.encode_movies(raw_movies[known])
    np.add.at(matrix, (rows, column[known].to_numpy("int64")), 1.0)
    totals = matrix.sum(axis=1, keepdims=True)
    return np.divide(matrix, totals, out=matrix, where=totals > 0)


def year_matrix(movies: pd.DataFrame, encoding: IdEncoding) -> np.ndarray:
    """Dense year features per encoded movie index: (n_movies, 2) = [standardised year, missing].

    The year is standardised over the catalogue's known years; a movie with no year in its
    title gets 0 (the mean) and a 1 in the ``missing`` column.
    """
    matrix = np.zeros((encoding.n_movies, 2), dtype="float32")
    matrix[:, 1] = 1.0
    years = np.array([parse_year(t) or np.nan for t in movies["title"]], dtype="float64")
    rows = encoding.encode_movies(movies["movie_id"])
    known = ~np.isnan(years)
    if known.any():
        spread = float(np.std(years[known])) or 1.0
        matrix[rows[known], 0] = (years[known] - float(np.mean(years[known]))) / spread
        matrix[rows[known], 1] = 0.0
    return matrix


@dataclass(frozen=True)
class SideFeatures:
    """Per-movie constants the DLRM model stores: genres, year and tags, by encoded index."""

    genres: np.ndarray  # (n_movies, n_genres) multi-hot
    years: np.ndarray  # (n_movies, 2) standardised year, missing flag
    tags: np.ndarray  # (n_movies, n_tags) term frequencies, rows sum to 1 or 0
    genre_names: tuple[str, ...] = ()
    tag_names: tuple[str, ...] = ()

    @property
    def n_movies(self) -> int:
        return int(self.genres.shape[0])

    @classmethod
    def empty(cls, n_movies: int) -> SideFeatures:
        """No side information (e.g. synthetic benchmarks): one all-zero column per table."""
        zeros = np.zeros((n_movies, 1), dtype="float32")
        return cls(zeros, np.zeros((n_movies, 2), dtype="float32"), zeros.copy())


def side_features(
    movies: pd.DataFrame, tags: pd.DataFrame, encoding: IdEncoding, n_tags: int
) -> SideFeatures:
    """Build every side-feature table for the encoded catalogue.

    A table with no columns (a dataset without genres or tags) gets one all-zero column, so
    the model's shapes never have a zero dimension.
    """
    genres = genre_vocabulary(movies)
    vocabulary = tag_vocabulary(tags, n_tags)
    genre_table = genre_matrix(movies, encoding, genres)
    tag_table = tag_matrix(tags, encoding, vocabulary)
    if genre_table.shape[1] == 0:
        genre_table = np.zeros((encoding.n_movies, 1), dtype="float32")
    if tag_table.shape[1] == 0:
        tag_table = np.zeros((encoding.n_movies, 1), dtype="float32")
    return SideFeatures(
        genre_table, year_matrix(movies, encoding), tag_table, tuple(genres), tuple(vocabulary)
    )
