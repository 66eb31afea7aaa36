"""The tables users query: each table of ``recommendations.duckdb`` (and ``parquet/``), its
columns with their DuckDB types, and what each holds, in one place.

The docs' tables reference (docs/reference/tables.md) is generated from ``CATALOG``, the
site's SQL page lists it, and tests/test_core_tables.py checks it against the database a real run
writes, column for column, so none of the three can drift from what merge writes.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # DuckDB's name for it, as DESCRIBE prints it
    doc: str


@dataclass(frozen=True)
class Table:
    name: str
    doc: str
    columns: tuple[Column, ...]
    # Columns after these depend on the run (a metric only some models report): DESCRIBE
    # lists them at the end.
    open_ended: str = ""

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)


def _cols(*rows: tuple[str, str, str]) -> tuple[Column, ...]:
    return tuple(Column(*row) for row in rows)


_USER = ("user_id", "BIGINT", "the dataset's user id")
_MOVIE = ("movie_id", "BIGINT", "the dataset's movie id")

CATALOG: tuple[Table, ...] = (
    Table(
        "movies",
        "Every movie of the catalogue, with its rating count and mean.",
        _cols(
            _MOVIE,
            ("title", "VARCHAR", "the title as the dataset spells it (\"Matrix, The (1999)\")"),
            ("year", "INTEGER", "the release year parsed from the title; NULL when it has none"),
            ("genres", "VARCHAR[]", "the genres; `list_contains(genres, 'Comedy')` picks one"),
            ("n_ratings", "INTEGER", "ratings of the movie in the whole dataset"),
            ("mean_rating", "DOUBLE", "their mean; NULL for a movie nobody rated"),
        ),
    ),
    Table(
        "users",
        "Every user who rated something.",
        _cols(
            _USER,
            ("n_ratings", "INTEGER", "ratings the user gave"),
            ("mean_rating", "DOUBLE", "their mean"),
        ),
    ),
    Table(
        "ratings",
        "Every rating the run was given, with the part of the split it fell in.",
        _cols(
            _USER,
            _MOVIE,
            ("rating", "FLOAT", "stars, on the dataset's scale"),
            ("timestamp", "BIGINT", "seconds since 1970 (0 where the dataset has none)"),
            ("split", "VARCHAR", "`train`, `validation` or `test`"),
        ),
    ),
    Table(
        "predictions",
        "For every user, the movies they have not rated, with both numbers. With "
        "`score --keep-top N`, only each user's best N by `score`.",
        _cols(
            _USER,
            _MOVIE,
            ("predicted_rating", "FLOAT", "how many stars the user would give it, clipped to the scale"),
            ("score", "FLOAT", "the recommendation score: would the user pick it and like it (higher first)"),
            ("cold_start", "BOOLEAN", "true where the popularity rule stood in (a user or movie without training ratings)"),
        ),
    ),
    Table(
        "top_k",
        "Each user's best unwatched movies by `score`: what the site shows.",
        _cols(
            _USER,
            ("rank", "INTEGER", "1 is the best"),
            _MOVIE,
            ("predicted_rating", "FLOAT", "as in `predictions`"),
            ("score", "FLOAT", "as in `predictions`"),
            ("because_movie_id", "BIGINT", "the movie the user liked that adds most to the pick (the reason); NULL when there is none"),
            ("cold_start", "BOOLEAN", "as in `predictions`"),
        ),
    ),
    Table(
        "popular",
        "The cold-start list: movies by their Bayesian average rating.",
        _cols(
            ("rank", "INTEGER", "1 is the best"),
            _MOVIE,
            ("score", "DOUBLE", "the Bayesian average (C·m + Σr) / (C + n), m the global mean, C = 10"),
            ("n_ratings", "INTEGER", "the movie's training ratings"),
        ),
    ),
    Table(
        "similar_movies",
        "Each movie's nearest movies in the rating model's embedding space.",
        _cols(
            _MOVIE,
            ("rank", "INTEGER", "1 is the nearest"),
            ("similar_movie_id", "BIGINT", "the neighbour"),
            ("similarity", "FLOAT", "cosine similarity of the two embeddings"),
        ),
    ),
    Table(
        "also_liked",
        "People who liked this also liked: the movies most often liked (rated 4 or more) by "
        "the same people. The site's movie pages show it.",
        _cols(
            _MOVIE,
            ("rank", "INTEGER", "1 is the most co-liked"),
            ("other_movie_id", "BIGINT", "the other movie"),
            ("score", "FLOAT", "shrunk cosine over who liked what"),
        ),
    ),
    Table(
        "history",
        "The rating model's training, one row per epoch.",
        _cols(
            ("epoch", "INTEGER", "1 is the first"),
            ("loss", "DOUBLE", "training loss"),
            ("mae", "DOUBLE", "training mean absolute error, in stars"),
            ("val_loss", "DOUBLE", "validation loss"),
            ("val_mae", "DOUBLE", "validation mean absolute error: early stopping watches it"),
        ),
        open_ended="then any other quantity Keras logged (the classifiers' accuracy, the learning rate), as DOUBLE",
    ),
    Table(
        "metrics",
        "Held-out quality of the model and of every baseline, one row each.",
        _cols(
            ("model", "VARCHAR", "the preset, or the baseline's name"),
            ("rmse", "DOUBLE", "root mean squared error on the test ratings; NULL for a ranking baseline"),
            ("mae", "DOUBLE", "mean absolute error on the test ratings"),
            ("n", "BIGINT", "test ratings"),
            ("evaluated_on", "VARCHAR", "which ratings were held out"),
        ),
        open_ended=(
            "then what the models report: `accuracy` (the classifiers), `precision_at_10`, "
            "`recall_at_10`, `ndcg_at_10`, `coverage_at_10`, `ranked_users`, "
            "`training_seconds`; whole numbers as BIGINT, others as DOUBLE"
        ),
    ),
    Table(
        "runs",
        "The run itself: one row.",
        _cols(
            ("run_id", "VARCHAR", "the run's id, also in run.json and on the site"),
            ("created_at", "TIMESTAMP", "when the run started, UTC"),
            ("dataset", "VARCHAR", "the dataset's name or folder"),
            ("dataset_sha256", "VARCHAR", "the checksum of its files"),
            ("preset", "VARCHAR", "the model preset"),
            ("epochs_run", "INTEGER", "epochs trained"),
            ("parameters", "BIGINT", "the rating model's weights"),
            ("training_seconds", "DOUBLE", "the fit's wall time"),
            ("manifest", "JSON", "the whole run.json"),
        ),
    ),
    Table(
        "links",
        "Each movie's IMDb and TMDB ids (from links.csv; empty without it).",
        _cols(
            _MOVIE,
            ("imdb_id", "BIGINT", "https://www.imdb.com/title/tt + the id, zero-padded to 7 digits"),
            ("tmdb_id", "BIGINT", "https://www.themoviedb.org/movie/ + the id; NULL where it has none"),
        ),
    ),
    Table(
        "tags",
        "The tags users gave movies (from tags.csv; empty without it).",
        _cols(_USER, _MOVIE, ("tag", "VARCHAR", "the tag as typed")),
    ),
)


def table(name: str) -> Table:
    """The catalogue's entry for ``name``."""
    for entry in CATALOG:
        if entry.name == name:
            return entry
    raise KeyError(name)
