"""Reading a merged run for the site: DuckDB tables and run.json in, plain records out.

Only the database and the manifest are read (no Keras): movie neighbours are a table the
train stage computed, merged into the database like the rest.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from job.config import SIMILAR_MIN_RATINGS
from job.errors import JobError
from job.runfolder import (
    BASELINE_NAMES,
    DATABASE_FILE,
    PARQUET_DIR,
    RUN_JSON,
    read_manifest,
    remake,
)

REQUIRED_TABLES = (
    "movies",
    "users",
    "ratings",
    "top_k",
    "popular",
    "similar_movies",
    "history",
    "metrics",
    "runs",
)
# Columns of ``metrics`` that describe the row rather than score it.
METRIC_INFO_COLUMNS = ("model", "n", "evaluated_on")
# About 1,000 users per search shard keeps a shard near 10 kB: one small fetch per search,
# whatever the size of the catalogue.
USERS_PER_SHARD = 1000


# ---------------------------------------------------------------------------------------
# What the pages are made of: plain frozen records (picklable, attribute access in Jinja)


@dataclass(frozen=True, slots=True)
class Movie:
    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    n_ratings: int
    mean_rating: float | None


@dataclass(frozen=True, slots=True)
class User:
    user_id: int
    n_ratings: int
    mean_rating: float


@dataclass(frozen=True, slots=True)
class Rated:
    movie_id: int
    rating: float


@dataclass(frozen=True, slots=True)
class Recommended:
    movie_id: int
    predicted_rating: float
    cold_start: bool


@dataclass(frozen=True, slots=True)
class Popular:
    rank: int
    movie_id: int
    score: float
    n_ratings: int


@dataclass(frozen=True, slots=True)
class Similar:
    movie_id: int
    similarity: float


@dataclass(frozen=True)
class SiteData:
    """Everything the pages show, already read from the run's files."""

    run: Mapping[str, Any]  # run_id, created_at, dataset
    dataset: Mapping[str, Any]  # n_users, n_movies, n_rated_movies, n_ratings
    model: Mapping[str, Any]  # preset, layers, parameters, epochs_run, training_seconds
    metrics: Sequence[Mapping[str, Any]]  # rows of the metrics table, model first
    metric_columns: Sequence[str]  # score columns in display order: rmse, mae, then ranking
    history: Sequence[Mapping[str, Any]]  # epoch, loss, mae, val_loss, val_mae
    movies: Mapping[int, Movie]
    users: Sequence[User]
    top_rated: Mapping[int, Sequence[Rated]]
    recommendations: Mapping[int, Sequence[Recommended]]
    popular: Sequence[Popular]
    similar: Mapping[int, Sequence[Similar]]  # absent: too few ratings to place the movie
    similar_min_ratings: int = SIMILAR_MIN_RATINGS
    data_files: Sequence[str] = ()  # paths relative to OUT, linked from the index
    users_per_shard: int = USERS_PER_SHARD

    @property
    def n_shards(self) -> int:
        return max(1, math.ceil(len(self.users) / self.users_per_shard))

    @cached_property
    def users_by_id(self) -> dict[int, User]:
        return {u.user_id: u for u in self.users}


# ---------------------------------------------------------------------------------------
# Reading a run


def load_site_data(
    out: Path,
    *,
    n_top_rated: int = 10,
    n_popular: int = 100,
) -> tuple[SiteData, dict[str, float]]:
    """Read what the pages show from a merged run; returns the data and the time of each step."""
    db = out / DATABASE_FILE
    manifest = read_manifest(out)
    timings: dict[str, float] = {}

    started = time.perf_counter()
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise JobError(f"{db}: cannot open ({first}); {remake('merge', out)}") from None
    with con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise JobError(f"{db} has no table {', '.join(missing)}; {remake('merge', out)}")
        movies = {
            int(m): Movie(int(m), str(t), _opt_int(y), tuple(g or ()), int(n or 0), _opt_float(r))
            for m, t, y, g, n, r in con.execute(
                "SELECT movie_id, title, year, genres, n_ratings, mean_rating FROM movies"
                " ORDER BY movie_id"
            ).fetchall()
        }
        users = [
            User(int(u), int(n), float(r))
            for u, n, r in con.execute(
                "SELECT user_id, n_ratings, mean_rating FROM users ORDER BY user_id"
            ).fetchall()
        ]
        top_rated: dict[int, list[Rated]] = {}
        # The article's "top ratings the user had made": best first, most recent first on ties.
        for u, m, r in con.execute(
            """SELECT user_id, movie_id, rating FROM ratings
               QUALIFY row_number() OVER (
                   PARTITION BY user_id ORDER BY rating DESC, timestamp DESC, movie_id) <= ?
               ORDER BY user_id, rating DESC, timestamp DESC, movie_id""",
            [n_top_rated],
        ).fetchall():
            top_rated.setdefault(int(u), []).append(Rated(int(m), float(r)))
        recommendations: dict[int, list[Recommended]] = {}
        for u, m, p, c in con.execute(
            "SELECT user_id, movie_id, predicted_rating, cold_start FROM top_k"
            " ORDER BY user_id, rank"
        ).fetchall():
            recommendations.setdefault(int(u), []).append(Recommended(int(m), float(p), bool(c)))
        popular = [
            Popular(int(k), int(m), float(s), int(n))
            for k, m, s, n in con.execute(
                "SELECT rank, movie_id, score, n_ratings FROM popular ORDER BY rank LIMIT ?",
                [n_popular],
            ).fetchall()
        ]
        history = _records(con, "SELECT * FROM history ORDER BY epoch")
        metrics = _records(con, "SELECT * FROM metrics")
        runs = _records(
            con, "SELECT run_id, created_at, dataset FROM runs ORDER BY created_at DESC"
        )
        similar: dict[int, list[Similar]] = {}
        for m, n, sim in con.execute(
            "SELECT movie_id, similar_movie_id, similarity FROM similar_movies ORDER BY movie_id, rank"
        ).fetchall():
            similar.setdefault(int(m), []).append(Similar(int(n), float(sim)))
    timings["read"] = time.perf_counter() - started

    metrics, columns = _order_metrics(metrics, manifest.model.preset)
    run = runs[0] if runs else {}
    dataset, model = manifest.dataset, manifest.model
    data = SiteData(
        run={
            "run_id": str(run.get("run_id") or manifest.run_id),
            "created_at": str(run.get("created_at") or manifest.created_at),
            "dataset": str(run.get("dataset") or dataset.name),
        },
        dataset={
            "n_users": dataset.n_users,
            "n_movies": dataset.n_movies,
            "n_rated_movies": dataset.n_rated_movies,
            "n_ratings": dataset.n_ratings,
            "split": dataset.split,
        },
        model={
            "preset": model.preset,
            "layers": list(model.layers),
            "parameters": model.parameters,
            "epochs_run": model.epochs_run,
            "training_seconds": manifest.training_seconds,
        },
        metrics=metrics,
        metric_columns=columns,
        history=history,
        movies=movies,
        users=users,
        top_rated=top_rated,
        recommendations=recommendations,
        popular=popular,
        similar=similar,
        data_files=data_files(out),
    )
    return data, timings


def _records(con: Any, sql: str) -> list[dict[str, Any]]:
    """Rows as dicts; DECIMAL values (a hand-made table's literals) become floats."""
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [
        {k: float(v) if isinstance(v, Decimal) else v for k, v in zip(names, row, strict=True)}
        for row in cursor.fetchall()
    ]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


def _order_metrics(
    rows: list[dict[str, Any]], preset: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Model rows first, then the baselines; score columns RMSE, MAE, then any ranking ones."""
    names = list(rows[0]) if rows else ["model", "rmse", "mae"]
    # A column no row fills (the classifier's accuracy, for a regression model) says nothing.
    names = [c for c in names if c in ("rmse", "mae") or any(r.get(c) is not None for r in rows)]
    scores: list[str] = [c for c in ("rmse", "mae") if c in names]
    scores += [c for c in names if c not in scores and c not in METRIC_INFO_COLUMNS]

    def key(row: dict[str, Any]) -> tuple[int, int]:
        name = str(row.get("model"))
        if name in BASELINE_NAMES:
            return (1, BASELINE_NAMES.index(name))
        return (0, 0 if name == preset else 1)

    return sorted(rows, key=key), scores


def data_files(out: Path) -> list[str]:
    """The run's data files that sit beside site/, relative to OUT, for the index's links."""
    found = [name for name in (DATABASE_FILE, RUN_JSON) if (out / name).is_file()]
    parquet = out / PARQUET_DIR
    if parquet.is_dir():
        found += sorted(p.relative_to(out).as_posix() for p in parquet.rglob("*.parquet"))
    return found
