"""Row checks: each names the file, the line and the fix; duplicates follow the documented rule."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from synth import write_movielens

from job.core.errors import DataError
from job.data.movielens import load_folder
from job.data.validate import (
    check_movies_known,
    drop_duplicate_pairs,
    finite_numbers,
    refuse_duplicate_movies,
    whole_ids,
)

PATH = Path("ratings.csv")


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_movielens(tmp_path / "data", n_users=8, n_movies=12, per_user=5)


def test_whole_ids_parse_and_name_the_first_bad_line() -> None:
    frame = pd.DataFrame({"userId": ["1", "2", "2.5", "x"]})
    with pytest.raises(DataError, match=r"ratings.csv, line 4: column 'userId' has '2.5'; ids"):
        whole_ids(frame, "userId", PATH)
    assert whole_ids(frame.iloc[:2], "userId", PATH).tolist() == [1, 2]


def test_an_empty_value_is_named_as_empty() -> None:
    frame = pd.DataFrame({"rating": ["4", ""]})
    with pytest.raises(DataError, match=r"line 3: column 'rating' is empty; fill it in"):
        finite_numbers(frame, "rating", PATH)


def test_finite_numbers_refuse_infinity() -> None:
    frame = pd.DataFrame({"rating": ["4", "inf"]})
    with pytest.raises(DataError, match=r"line 3: column 'rating' has 'inf'; it must be a number"):
        finite_numbers(frame, "rating", PATH)


def test_a_movie_twice_is_refused() -> None:
    movies = pd.DataFrame({"movie_id": [1, 2, 1]})
    with pytest.raises(DataError, match=r"movies.csv, line 4: movieId 1 appears twice"):
        refuse_duplicate_movies(movies, Path("movies.csv"))


def test_ratings_of_unknown_movies_are_refused() -> None:
    ratings = pd.DataFrame({"movie_id": [1, 7, 8]})
    movies = pd.DataFrame({"movie_id": [1, 2]})
    with pytest.raises(DataError, match=r"line 3: movieId 7 is not in movies.csv.*\(2 rows\)"):
        check_movies_known(ratings, movies, PATH, Path("movies.csv"))


def test_duplicate_pairs_keep_the_latest_then_the_later_line() -> None:
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 1],
            "movie_id": [5, 5, 5, 5],
            "rating": [1.0, 2.0, 3.0, 4.0],
            "timestamp": [9, 3, 1, 9],
        }
    )
    kept = drop_duplicate_pairs(ratings, PATH)
    assert kept["rating"].tolist() == [3.0, 4.0]  # the tie at timestamp 9: the later line
    unique = ratings.iloc[[0, 2]]
    assert np.array_equal(drop_duplicate_pairs(unique, PATH).to_numpy(), unique.to_numpy())


def test_duplicate_ratings_keep_the_latest(folder: Path, caplog: pytest.LogCaptureFixture) -> None:
    with open(folder / "ratings.csv", "a") as f:
        f.write("1,10,1.0,5\n1,10,5.0,9999999\n1,10,2.0,7\n")
    dataset = load_folder(folder, "x")
    kept = dataset.ratings[(dataset.ratings.user_id == 1) & (dataset.ratings.movie_id == 10)]
    assert kept["rating"].tolist() == [5.0]
    assert "duplicate (user, movie) ratings; kept the latest" in caplog.text
