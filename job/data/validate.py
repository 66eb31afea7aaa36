"""Checks of a dataset's rows: ids, numbers, duplicates, movies known to the catalogue.

Each problem becomes a ``DataError`` naming the file, the line (of a CSV, the header is line
1) or column, and the fix.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pandas as pd

from job.core.errors import DataError

log = logging.getLogger(__name__)


def bad_row(path: Path, frame: pd.DataFrame, mask: np.ndarray, column: str, what: str) -> DataError:
    """An error naming the first offending line (of a CSV, the header is line 1)."""
    position = int(np.flatnonzero(mask)[0])
    value = frame[column].iloc[position]
    line = position + frame.attrs.get("first_data_line", 2)
    if value == "" or (isinstance(value, float) and np.isnan(value)):
        return DataError(
            f"{path}, line {line}: column {column!r} is empty; fill it in or remove the row"
        )
    return DataError(f"{path}, line {line}: column {column!r} has {value!r}; {what}")


def whole_ids(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    values = frame[column]
    parsed = pd.to_numeric(values, errors="coerce")
    bad = parsed.isna().to_numpy() | (parsed % 1 != 0).to_numpy()
    if bad.any():
        raise bad_row(path, frame, bad, column, "ids must be whole numbers")
    return parsed.astype("int64")


def finite_numbers(frame: pd.DataFrame, column: str, path: Path) -> pd.Series:
    parsed = pd.to_numeric(frame[column], errors="coerce")
    bad = ~np.isfinite(parsed.to_numpy(dtype="float64", na_value=np.nan))
    if bad.any():
        raise bad_row(path, frame, bad, column, "it must be a number")
    return parsed


def refuse_duplicate_movies(movies: pd.DataFrame, path: Path) -> None:
    dup = movies["movie_id"].duplicated().to_numpy()
    if dup.any():
        line = int(np.flatnonzero(dup)[0]) + 2
        movie = movies["movie_id"].iloc[line - 2]
        raise DataError(
            f"{path}, line {line}: movieId {movie} appears twice; keep one row per movie"
        )


def drop_duplicate_pairs(ratings: pd.DataFrame, path: Path) -> pd.DataFrame:
    """Rule: a user who rated a movie twice keeps the latest rating (highest timestamp;
    on a tie, the later line), because it is their most recent opinion."""
    ordered = ratings.reset_index(drop=True)
    duplicated = ordered.duplicated(["user_id", "movie_id"], keep=False)
    if not duplicated.any():
        return ordered
    kept = (
        ordered.assign(_line=np.arange(len(ordered)))
        .sort_values(["timestamp", "_line"])
        .drop_duplicates(["user_id", "movie_id"], keep="last")
        .sort_values("_line")
        .drop(columns="_line")
    )
    log.warning(
        "%s: %d duplicate (user, movie) ratings; kept the latest of each",
        path,
        len(ordered) - len(kept),
    )
    return kept


def check_movies_known(
    ratings: pd.DataFrame, movies: pd.DataFrame, ratings_path: Path, movies_path: Path
) -> None:
    unknown = ~ratings["movie_id"].isin(movies["movie_id"]).to_numpy()
    if unknown.any():
        position = int(np.flatnonzero(unknown)[0])
        movie = ratings["movie_id"].iloc[position]
        raise DataError(
            f"{ratings_path}, line {position + 2}: movieId {movie} is not in {movies_path.name}; "
            f"add it to {movies_path.name} or remove its ratings ({int(unknown.sum())} rows)"
        )
