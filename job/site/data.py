"""Reading a merged run for the site: DuckDB tables and run.json in, plain records out.

Only the database and the manifest are read (no Keras): movie neighbours are a table the
train stage computed, merged into the database like the rest.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from pathlib import Path
from typing import Any

import duckdb

from job.core.baselines import BASELINE_NAMES
from job.core.config import SIMILAR_MIN_RATINGS
from job.core.errors import JobError
from job.core.layout import DATABASE_FILE, PARQUET_DIR, RUN_JSON, remake
from job.core.timing import Stopwatch
from job.data.movielens import RatingScale, natural_title
from job.runfolder.manifest import Manifest, read_manifest

REQUIRED_TABLES = (
    "movies",
    "users",
    "ratings",
    "top_k",
    "popular",
    "history",
    "metrics",
    "runs",
)
# Columns of ``metrics`` that describe the row rather than score it: the index says them in
# its text (the same for every row), not as table columns.
METRIC_INFO_COLUMNS = ("model", "n", "evaluated_on", "ranked_users")
# About 1,000 users per search shard keeps a shard near 10 kB: one small fetch per search,
# whatever the size of the catalogue.
USERS_PER_SHARD = 1000
# The movie-to-movie neighbours of the movie pages and the taste page, as (table, neighbour
# column, score column), read ``ORDER BY movie_id, rank``: "people who liked this also liked"
# (co-likes), which read better than the model's embedding neighbours (``similar_movies``):
# they share a genre more often, are closer in time and are movies people know
# (docs/benchmarks.md, "Design measurements").
TASTE_SOURCE = ("also_liked", "other_movie_id", "score")
# What the taste page says its neighbours are, for each source it may read.
TASTE_EXPLAINED = {
    "similar_movies": "the movies nearest to each pick in the model's embedding space",
    "also_liked": "the movies most liked by the people who liked each pick",
}
# Genre picks come from the catalogue's most rated movies: those with at least as many
# ratings as 90% of the rated movies (27 on ml-latest-small), ranked by the cold-start
# rule's Bayesian average. "Popular and well rated", at any catalogue size.
POPULAR_QUANTILE = 0.9
N_TAGS = 8  # the most used tags shown on a movie page


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
    # GroupLens' spelling ("Matrix, The (1999)"), as the database keeps it, where ``title``
    # (what the pages show) differs: "" when they are the same.
    grouplens_title: str = ""


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
    because_movie_id: int | None = None  # the liked movie behind the pick
    because_rating: float | None = None  # the user's rating of it


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


@dataclass(frozen=True, slots=True)
class Links:
    """A movie's ids on IMDb and TMDB (links.csv); either may be missing."""

    imdb_id: int | None
    tmdb_id: int | None

    @property
    def imdb_url(self) -> str | None:
        # links.csv drops IMDb's "tt" and keeps at least 7 digits (0114709 -> tt0114709)
        return None if self.imdb_id is None else f"https://www.imdb.com/title/tt{self.imdb_id:07d}/"

    @property
    def tmdb_url(self) -> str | None:
        return None if self.tmdb_id is None else f"https://www.themoviedb.org/movie/{self.tmdb_id}"


@dataclass(frozen=True, slots=True)
class TagCount:
    tag: str
    n_users: int  # users who gave the movie this tag (any case)


@dataclass(frozen=True, slots=True)
class GenrePick:
    genre: str
    movie: Popular


@dataclass(frozen=True, slots=True)
class GenreList:
    genre: str
    movies: tuple[Popular, ...]

    @property
    def anchor(self) -> str:
        return "genre-" + "".join(c if c.isalnum() else "-" for c in self.genre.lower())


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
    similar: Mapping[int, Sequence[Similar]]  # absent: too few people liked the movie
    similar_min_ratings: int = SIMILAR_MIN_RATINGS
    data_files: Sequence[str] = ()  # paths relative to OUT, linked from the index
    users_per_shard: int = USERS_PER_SHARD
    links: Mapping[int, Links] = field(default_factory=dict)
    tags: Mapping[int, Sequence[TagCount]] = field(default_factory=dict)  # most used first
    rating_values: Sequence[float] = ()  # the scale's ratings: 0.5, 1.0, ..., 5.0
    rating_counts: Mapping[int, Sequence[int]] = field(default_factory=dict)  # per value
    every_genre: Sequence[GenrePick] = ()  # one popular movie from each genre, best first
    by_genre: Sequence[GenreList] = ()  # each genre's popular movies, genres A to Z
    popular_min_ratings: int = 0  # the "popular" threshold of the genre picks
    neighbours: Mapping[int, Sequence[Similar]] = field(default_factory=dict)  # taste page

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
    manifest: Manifest | None = None,
    *,
    n_top_rated: int = 10,
    n_popular: int = 100,
) -> tuple[SiteData, dict[str, float]]:
    """Read what the pages show from a merged run; returns the data and the time of each step."""
    manifest = manifest or read_manifest(out)
    watch = Stopwatch()
    with watch.time("read"), _open_database(out) as con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        missing = [t for t in (*REQUIRED_TABLES, TASTE_SOURCE[0]) if t not in tables]
        if missing:
            db = out / DATABASE_FILE
            raise JobError(f"{db} has no table {', '.join(missing)}; {remake('merge', out)}")
        movies = _movies(con)
        ranked = _popular(con)
        scale = manifest.dataset.scale
        neighbours = _neighbours(con)
        every_genre, by_genre, threshold = genre_picks(movies, ranked)
        metrics, columns = _order_metrics(
            _records(con, "SELECT * FROM metrics"), manifest.model.preset
        )
        facts = _run_facts(manifest, con)
        data = SiteData(
            run=facts["run"],
            dataset=facts["dataset"],
            model=facts["model"],
            metrics=metrics,
            metric_columns=columns,
            history=_records(con, "SELECT * FROM history ORDER BY epoch"),
            movies=movies,
            users=_users(con),
            top_rated=_top_rated(con, n_top_rated),
            recommendations=_recommendations(con),
            popular=ranked[:n_popular],
            similar=neighbours,
            data_files=data_files(out),
            links=_links(con) if "links" in tables else {},
            tags=_top_tags(con, N_TAGS) if "tags" in tables else {},
            rating_values=[float(v) for v in scale.values],
            rating_counts=_rating_counts(con, scale),
            every_genre=every_genre,
            by_genre=by_genre,
            popular_min_ratings=threshold,
            neighbours=neighbours,
        )
    return data, watch.seconds


def _open_database(out: Path) -> Any:
    db = out / DATABASE_FILE
    try:
        return duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise JobError(f"{db}: cannot open ({first}); {remake('merge', out)}") from None


def _run_facts(manifest: Manifest, con: Any) -> dict[str, dict[str, Any]]:
    """The run, dataset and model facts the pages show: run.json's, the database's run first."""
    runs = _records(con, "SELECT run_id, created_at, dataset FROM runs ORDER BY created_at DESC")
    run = runs[0] if runs else {}
    dataset, model = manifest.dataset, manifest.model
    return {
        "run": {
            "run_id": str(run.get("run_id") or manifest.run_id),
            "created_at": str(run.get("created_at") or manifest.created_at),
            "dataset": str(run.get("dataset") or dataset.name),
        },
        "dataset": {
            "n_users": dataset.n_users,
            "n_movies": dataset.n_movies,
            "n_rated_movies": dataset.n_rated_movies,
            "n_ratings": dataset.n_ratings,
            "split": dataset.split,
        },
        "model": {
            "preset": model.preset,
            "layers": list(model.layers),
            "parameters": model.parameters,
            "epochs_run": model.epochs_run,
            "training_seconds": manifest.training_seconds,
            "served": manifest.extra.get("served"),  # how each served model was fit
        },
    }


def _movies(con: Any) -> dict[int, Movie]:
    """The catalogue, each title as people write it (``job.data.movielens.natural_title``)."""
    return {
        int(m): Movie(
            int(m),
            natural_title(str(t)),
            _opt_int(y),
            tuple(g or ()),
            int(n or 0),
            _opt_float(r),
            "" if natural_title(str(t)) == str(t) else str(t),
        )
        for m, t, y, g, n, r in con.execute(
            "SELECT movie_id, title, year, genres, n_ratings, mean_rating FROM movies"
            " ORDER BY movie_id"
        ).fetchall()
    }


def _users(con: Any) -> list[User]:
    return [
        User(int(u), int(n), float(r))
        for u, n, r in con.execute(
            "SELECT user_id, n_ratings, mean_rating FROM users ORDER BY user_id"
        ).fetchall()
    ]


def _top_rated(con: Any, n_top_rated: int) -> dict[int, list[Rated]]:
    """The article's "top ratings the user had made": best first, most recent first on ties."""
    top_rated: dict[int, list[Rated]] = {}
    for u, m, r in con.execute(
        """SELECT user_id, movie_id, rating FROM ratings
           QUALIFY row_number() OVER (
               PARTITION BY user_id ORDER BY rating DESC, timestamp DESC, movie_id) <= ?
           ORDER BY user_id, rating DESC, timestamp DESC, movie_id""",
        [n_top_rated],
    ).fetchall():
        top_rated.setdefault(int(u), []).append(Rated(int(m), float(r)))
    return top_rated


def _recommendations(con: Any) -> dict[int, list[Recommended]]:
    """Each user's top_k, with each pick's reason: the liked movie behind it and its rating."""
    recommendations: dict[int, list[Recommended]] = {}
    for u, m, p, c, b, r in con.execute(
        "SELECT t.user_id, t.movie_id, t.predicted_rating, t.cold_start,"
        " t.because_movie_id, r.rating FROM top_k t LEFT JOIN ratings r"
        " ON r.user_id = t.user_id AND r.movie_id = t.because_movie_id"
        " ORDER BY t.user_id, t.rank"
    ).fetchall():
        recommendations.setdefault(int(u), []).append(
            Recommended(int(m), float(p), bool(c), _opt_int(b), _opt_float(r))
        )
    return recommendations


def _popular(con: Any) -> list[Popular]:
    return [
        Popular(int(k), int(m), float(s), int(n))
        for k, m, s, n in con.execute(
            "SELECT rank, movie_id, score, n_ratings FROM popular ORDER BY rank"
        ).fetchall()
    ]


def _rating_counts(con: Any, scale: RatingScale) -> dict[int, list[int]]:
    """Each movie's number of ratings at each step of the scale."""
    steps = len(scale.values)
    counts: dict[int, list[int]] = {}
    for m, r, n in con.execute(
        "SELECT movie_id, rating, count(*) FROM ratings GROUP BY ALL ORDER BY ALL"
    ).fetchall():
        slot = round((float(r) - scale.low) / scale.step)
        if 0 <= slot < steps:
            counts.setdefault(int(m), [0] * steps)[slot] += int(n)
    return counts


def _neighbours(con: Any) -> dict[int, list[Similar]]:
    table, other, score = TASTE_SOURCE
    neighbours: dict[int, list[Similar]] = {}
    for m, n, sim in con.execute(
        f"SELECT movie_id, {other}, {score} FROM {table} ORDER BY movie_id, rank"
    ).fetchall():
        neighbours.setdefault(int(m), []).append(Similar(int(n), float(sim)))
    return neighbours


def _links(con: Any) -> dict[int, Links]:
    return {
        int(m): Links(_opt_int(i), _opt_int(t))
        for m, i, t in con.execute(
            "SELECT movie_id, imdb_id, tmdb_id FROM links"
            " WHERE imdb_id IS NOT NULL OR tmdb_id IS NOT NULL"
        ).fetchall()
    }


def _top_tags(con: Any, n: int) -> dict[int, list[TagCount]]:
    """Each movie's ``n`` most used tags: users per tag, case and spaces aside (ties A to Z),
    each shown in its most used spelling."""
    found: dict[int, list[TagCount]] = {}
    for m, tag, users in con.execute(
        """WITH used AS (
               SELECT movie_id, user_id, trim(tag) AS spelling, lower(trim(tag)) AS folded
               FROM tags WHERE trim(tag) <> ''),
           spellings AS (
               SELECT movie_id, folded, spelling, count(*) AS uses FROM used GROUP BY ALL),
           shown AS (
               SELECT movie_id, folded, first(spelling ORDER BY uses DESC, spelling) AS shown
               FROM spellings GROUP BY ALL),
           counted AS (
               SELECT movie_id, folded, count(DISTINCT user_id) AS users FROM used GROUP BY ALL)
           SELECT movie_id, shown, users FROM counted JOIN shown USING (movie_id, folded)
           QUALIFY row_number() OVER (PARTITION BY movie_id ORDER BY users DESC, folded) <= ?
           ORDER BY movie_id, users DESC, folded""",
        [n],
    ).fetchall():
        found.setdefault(int(m), []).append(TagCount(str(tag), int(users)))
    return found


def genre_picks(
    movies: Mapping[int, Movie],
    ranked: Sequence[Popular],
    per_genre: int = 10,
    quantile: float = POPULAR_QUANTILE,
) -> tuple[list[GenrePick], list[GenreList], int]:
    """The popular page's picks: one movie from every genre, and each genre's best.

    Args:
        movies: the catalogue (for the genres).
        ranked: the cold-start ranking (``popular`` table), best Bayesian average first.
        per_genre: the length of each genre's list.
        quantile: a movie counts as popular from this quantile of ratings per movie on.

    Returns:
        (every_genre, by_genre, threshold): one pick per genre, distinct movies, best first;
        each genre's first ``per_genre`` popular movies, genres A to Z; the ratings a movie
        needs to count as popular.
    """
    counts = sorted(p.n_ratings for p in ranked if p.n_ratings > 0)
    threshold = counts[round(quantile * (len(counts) - 1))] if counts else 0
    candidates: dict[str, list[Popular]] = {}
    for item in ranked:
        if item.n_ratings >= max(threshold, 1) and item.movie_id in movies:
            for genre in movies[item.movie_id].genres:
                candidates.setdefault(genre, []).append(item)
    by_genre = [GenreList(g, tuple(items[:per_genre])) for g, items in sorted(candidates.items())]
    # The genre with the fewest candidates chooses first, so that a small genre keeps its
    # best movie when that movie is also a big genre's best.
    chosen: set[int] = set()
    every_genre: list[GenrePick] = []
    for genre, items in sorted(candidates.items(), key=lambda kv: (len(kv[1]), kv[0])):
        pick = next((p for p in items if p.movie_id not in chosen), None)
        if pick is not None:
            chosen.add(pick.movie_id)
            every_genre.append(GenrePick(genre, pick))
    every_genre.sort(key=lambda g: g.movie.rank)
    return every_genre, by_genre, threshold


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
