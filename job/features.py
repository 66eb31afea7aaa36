"""Id encoding (done once, saved with the model) and side features of movies."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from job.errors import DataError

YEAR_IN_TITLE = re.compile(r"\((\d{4})(?:[–-]\d{0,4})?\)\s*$")
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
        from job.store import atomic_write_text

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
        raise DataError(f"unknown {kind} id {int(raw[missing][0])}: it is not in the trained encoding")
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
