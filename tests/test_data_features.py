"""Id encoding round trip and side features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from job.core.errors import DataError
from job.data.features import (
    IdEncoding,
    genre_matrix,
    genre_vocabulary,
    movie_table,
    parse_year,
    split_genres,
)


def test_encoding_round_trip_with_sparse_raw_ids(tmp_path: Path) -> None:
    ratings = pd.DataFrame({"user_id": [500, 7, 7, 42], "movie_id": [9000, 10, 9000, 3]})
    movies = pd.DataFrame(
        {"movie_id": [3, 10, 9000, 123456], "title": list("abcd"), "genres": [""] * 4}
    )
    encoding = IdEncoding.fit(ratings, movies)
    assert (
        encoding.n_users == 3 and encoding.n_movies == 4
    )  # unrated movie 123456 is in the catalogue
    users = encoding.encode_users(ratings["user_id"])
    assert users.max() < encoding.n_users  # dense indexes, never raw ids
    assert encoding.decode_users(users).tolist() == ratings["user_id"].tolist()
    movie_index = encoding.encode_movies([123456, 3])
    assert encoding.decode_movies(movie_index).tolist() == [123456, 3]

    encoding.save(tmp_path / "encoding.json")
    loaded = IdEncoding.load(tmp_path / "encoding.json")
    assert np.array_equal(loaded.user_ids, encoding.user_ids)
    assert np.array_equal(loaded.encode_movies([9000]), encoding.encode_movies([9000]))


def test_unknown_id_is_refused() -> None:
    encoding = IdEncoding(np.array([1, 5]), np.array([2, 4]))
    with pytest.raises(DataError, match="unknown user id 3"):
        encoding.encode_users([3])
    with pytest.raises(DataError, match="unknown movie id 9"):
        encoding.encode_movies([9])


@pytest.mark.parametrize(
    ("title", "year"),
    [
        ("Toy Story (1995)", 1995),
        ("Spirited Away (Sen to Chihiro no kamikakushi) (2001)", 2001),
        ("Babylon 5", None),
        ("Stranger Things (2016– )", 2016),
        ("Cosmos (1980) ", 1980),
        ("1984 (1956)", 1956),
    ],
)
def test_parse_year(title: str, year: int | None) -> None:
    assert parse_year(title) == year


def test_genres() -> None:
    assert split_genres("Action|Sci-Fi") == ["Action", "Sci-Fi"]
    assert split_genres("(no genres listed)") == []
    movies = pd.DataFrame(
        {
            "movie_id": [20, 10],
            "title": ["B (2000)", "A"],
            "genres": ["Drama|Action", "(no genres listed)"],
        }
    )
    table = movie_table(movies)
    assert table["movie_id"].tolist() == [10, 20]
    assert table["genres"].tolist() == [[], ["Drama", "Action"]]
    assert table["year"].isna().tolist() == [True, False]
    vocabulary = genre_vocabulary(movies)
    assert vocabulary == ["Action", "Drama"]
    encoding = IdEncoding(np.array([1]), np.array([10, 20]))
    assert genre_matrix(movies, encoding, vocabulary).tolist() == [[0, 0], [1, 1]]
