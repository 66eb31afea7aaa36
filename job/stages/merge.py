"""The tables users query: scored parts in, ``recommendations.duckdb`` and ``parquet/`` out.

The score stage streams its rows into one Parquet part per table and shard (``parts/``); the
merge stage (``merge_stage``) checks the parts belong together and builds the database and
the Parquet copies from them and the trained run. Every file appears complete under its
final name or not at all.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd
import pyarrow as pa

from job.core.files import atomic_path
from job.core.layout import (
    ALSO_LIKED_FILE,
    DATABASE_FILE,
    HISTORY_FILE,
    PARQUET_DIR,
    PARTS_DIR,
    SIMILAR_FILE,
    dataset_file,
)
from job.data.features import movie_table
from job.data.interactions import interactions_of, popular_table
from job.runfolder.manifest import Manifest, StageRecord, load_run, with_stage
from job.runfolder.preflight import damaged_part, require
from job.stages.parts import find_parts

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# recommendations.duckdb and parquet/: the tables users query

TABLES = (
    "movies",
    "users",
    "ratings",
    "predictions",
    "top_k",
    "popular",
    "similar_movies",
    "also_liked",
    "history",
    "metrics",
    "runs",
    "links",
    "tags",
)
SPLIT_NAMES = {0: "train", 1: "validation", 2: "test"}  # job.data.split's codes


@dataclass(frozen=True)
class MergeInputs:
    """What merge reads besides the scored parts.

    ``movies``/``ratings`` are a trained run's frames (raw ids; split as codes or names),
    ``history`` is history.csv, ``popular`` is ``job.data.interactions.popular_table``, ``similar``
    is the train stage's movie neighbours (``job.models.rank.similar_movies_table``), ``also_liked``
    its co-liked ones (``job.models.itemitem.also_liked``), ``links`` and ``tags`` the dataset's
    links.csv and tags.csv (empty tables when absent).
    """

    manifest: Manifest
    movies: pd.DataFrame
    ratings: pd.DataFrame
    history: pd.DataFrame
    popular: pd.DataFrame
    similar: pd.DataFrame
    also_liked: pd.DataFrame
    links: pd.DataFrame | None = None
    tags: pd.DataFrame | None = None


def output_tables(inputs: MergeInputs) -> dict[str, pa.Table]:
    """Every table but predictions and top_k (which come from the parts), typed as documented."""
    metrics = pd.DataFrame(inputs.manifest.metrics.get("rows", []))
    metrics["evaluated_on"] = inputs.manifest.metrics.get("evaluated_on")
    return {
        **_rating_tables(inputs.movies, inputs.ratings),
        "popular": _typed(inputs.popular, POPULAR_SCHEMA),
        "similar_movies": _typed(inputs.similar, SIMILAR_SCHEMA),
        "also_liked": _typed(inputs.also_liked, ALSO_LIKED_SCHEMA),
        "history": _history_table(inputs.history),
        "metrics": _metrics_table(metrics),
        **_links_and_tags(inputs.links, inputs.tags),
        "runs": _runs_table(inputs.manifest),
    }


def _rating_tables(movies: pd.DataFrame, ratings: pd.DataFrame) -> dict[str, pa.Table]:
    """movies (with their rating counts and means), users and ratings."""
    user_ids = ratings["user_id"].to_numpy("int64")
    movie_ids = ratings["movie_id"].to_numpy("int64")
    stars = ratings["rating"].to_numpy("float64")

    catalogue = movie_table(movies)
    per_movie = pd.DataFrame({"movie_id": movie_ids, "rating": stars}).groupby("movie_id")["rating"]
    n_per_movie = per_movie.size().reindex(catalogue["movie_id"], fill_value=0)
    mean_per_movie = per_movie.mean().reindex(catalogue["movie_id"])
    per_user = pd.DataFrame({"user_id": user_ids, "rating": stars}).groupby("user_id")["rating"]

    split = ratings["split"]
    if pd.api.types.is_numeric_dtype(split):
        split = split.map(SPLIT_NAMES)
    return {
        "movies": pa.table(
            {
                "movie_id": pa.array(catalogue["movie_id"], pa.int64()),
                "title": pa.array(catalogue["title"], pa.string()),
                "year": pa.array(catalogue["year"].astype("Int32"), pa.int32(), from_pandas=True),
                "genres": pa.array(catalogue["genres"], pa.list_(pa.string())),
                "n_ratings": pa.array(n_per_movie.to_numpy("int32"), pa.int32()),
                "mean_rating": pa.array(
                    mean_per_movie.to_numpy("float64"), pa.float64(), from_pandas=True
                ),
            }
        ),
        "users": pa.table(
            {
                "user_id": pa.array(per_user.size().index.to_numpy("int64"), pa.int64()),
                "n_ratings": pa.array(per_user.size().to_numpy("int32"), pa.int32()),
                "mean_rating": pa.array(per_user.mean().to_numpy("float64"), pa.float64()),
            }
        ),
        "ratings": pa.table(
            {
                "user_id": pa.array(user_ids, pa.int64()),
                "movie_id": pa.array(movie_ids, pa.int64()),
                "rating": pa.array(ratings["rating"].to_numpy("float32"), pa.float32()),
                "timestamp": pa.array(ratings["timestamp"].to_numpy("int64"), pa.int64()),
                "split": pa.array(split.astype(str).to_numpy(), pa.string()),
            }
        ),
    }


def _runs_table(manifest: Manifest) -> pa.Table:
    created = pd.Timestamp(manifest.created_at)
    created = created.tz_convert("UTC").tz_localize(None) if created.tzinfo else created
    return pa.table(
        {
            "run_id": pa.array([manifest.run_id], pa.string()),
            "created_at": pa.array([created.to_pydatetime()], pa.timestamp("us")),
            "dataset": pa.array([manifest.dataset.name], pa.string()),
            "dataset_sha256": pa.array([manifest.dataset.sha256], pa.string()),
            "preset": pa.array([manifest.model.preset], pa.string()),
            "epochs_run": pa.array([manifest.model.epochs_run], pa.int32()),
            "parameters": pa.array([manifest.model.parameters], pa.int64()),
            "training_seconds": pa.array([manifest.training_seconds], pa.float64()),
            "manifest": pa.array([json.dumps(manifest.to_dict(), default=str)], pa.string()),
        }
    )


POPULAR_SCHEMA = pa.schema(
    [
        ("rank", pa.int32()),
        ("movie_id", pa.int64()),
        ("score", pa.float64()),
        ("n_ratings", pa.int32()),
    ]
)
SIMILAR_SCHEMA = pa.schema(
    [
        ("movie_id", pa.int64()),
        ("rank", pa.int32()),
        ("similar_movie_id", pa.int64()),
        ("similarity", pa.float32()),
    ]
)
ALSO_LIKED_SCHEMA = pa.schema(
    [
        ("movie_id", pa.int64()),
        ("rank", pa.int32()),
        ("other_movie_id", pa.int64()),
        ("score", pa.float32()),
    ]
)


def _typed(frame: pd.DataFrame, schema: pa.Schema) -> pa.Table:
    """The schema's columns of ``frame``, cast to its types."""
    return pa.Table.from_pandas(frame[schema.names], schema=schema, preserve_index=False)


def _links_and_tags(links: pd.DataFrame | None, tags: pd.DataFrame | None) -> dict[str, pa.Table]:
    """``links(movie_id, imdb_id, tmdb_id)`` (ids NULL where links.csv has none) and
    ``tags(user_id, movie_id, tag)``, for the site's movie pages and for SQL."""
    links = links if links is not None else pd.DataFrame(columns=["movie_id", "imdb_id", "tmdb_id"])
    tags = tags if tags is not None else pd.DataFrame(columns=["user_id", "movie_id", "tag"])
    return {
        "links": pa.table(
            {
                name: pa.array(links[name].astype("Int64"), pa.int64(), from_pandas=True)
                for name in ("movie_id", "imdb_id", "tmdb_id")
            }
        ),
        "tags": pa.table(
            {
                "user_id": pa.array(tags["user_id"].to_numpy("int64"), pa.int64()),
                "movie_id": pa.array(tags["movie_id"].to_numpy("int64"), pa.int64()),
                "tag": pa.array(tags["tag"].astype(str).to_numpy(), pa.string()),
            }
        ),
    }


HISTORY_COLUMNS = ("epoch", "loss", "mae", "val_loss", "val_mae")
METRIC_TYPES = {"model": pa.string(), "rmse": pa.float64(), "mae": pa.float64(), "n": pa.int64()}


def _history_table(history: pd.DataFrame) -> pa.Table:
    """epoch INTEGER, then loss, mae, val_loss, val_mae and any other metric as DOUBLE."""
    columns: dict[str, pa.Array] = {}
    for name in (*HISTORY_COLUMNS, *(c for c in history.columns if c not in HISTORY_COLUMNS)):
        values = history[name] if name in history else pd.Series([None] * len(history))
        kind = pa.int32() if name == "epoch" else pa.float64()
        columns[name] = pa.array(pd.to_numeric(values), kind, from_pandas=True)
    return pa.table(columns)


def _metrics_table(metrics: pd.DataFrame) -> pa.Table:
    """model, rmse, mae, n, evaluated_on, then any other column run.json's rows carry."""
    columns: dict[str, pa.Array] = {}
    for name, kind in (*METRIC_TYPES.items(), ("evaluated_on", pa.string())):
        values = metrics[name] if name in metrics else pd.Series([None] * len(metrics))
        columns[name] = pa.array(values, kind, from_pandas=True)
    for name in metrics.columns:
        if name not in columns:
            columns[name] = _extra_column(metrics[name])
    return pa.table(columns)


def _extra_column(values: pd.Series) -> pa.Array:
    """BIGINT for whole numbers, DOUBLE for other numbers and for all-missing columns (a
    metric one model does not report, e.g. the classifier's accuracy), else VARCHAR."""
    if pd.api.types.is_integer_dtype(values) or pd.api.types.is_bool_dtype(values):
        return pa.array(values.astype("int64"), pa.int64())
    numeric = pd.to_numeric(values, errors="coerce")
    if numeric.notna().sum() == values.notna().sum():
        return pa.array(numeric.astype("float64"), pa.float64(), from_pandas=True)
    return pa.array(values.astype("string"), pa.string(), from_pandas=True)


def write_database(
    out: Path,
    tables: Mapping[str, pa.Table],
    predictions: list[Path],
    top_k: list[Path],
) -> dict[str, int]:
    """Write ``out/recommendations.duckdb`` and ``out/parquet/<table>.parquet`` (zstd).

    ``tables`` are the small tables (see ``output_tables``); predictions and top_k are read
    from the shards' Parquet parts and sorted by user. Both outputs are built under temporary
    names and renamed at the end, the database last. Returns the row count of every table.
    """
    with atomic_path(out / DATABASE_FILE) as db_file, atomic_path(out / PARQUET_DIR) as folder:
        folder.mkdir()
        con = duckdb.connect(str(db_file))
        try:
            for name, table in tables.items():
                con.register("arrow_table", table)
                columns = (
                    "* REPLACE (CAST(manifest AS JSON) AS manifest)" if name == "runs" else "*"
                )
                con.execute(f"CREATE TABLE {name} AS SELECT {columns} FROM arrow_table")
                con.unregister("arrow_table")
            con.execute(
                "CREATE TABLE predictions AS "
                "SELECT user_id, movie_id, predicted_rating, score, cold_start "
                f"FROM read_parquet({_sql_list(predictions)}) ORDER BY user_id, movie_id"
            )
            con.execute(
                "CREATE TABLE top_k AS "
                "SELECT user_id, rank, movie_id, predicted_rating, score, because_movie_id, cold_start "
                f"FROM read_parquet({_sql_list(top_k)}) ORDER BY user_id, rank"
            )
            counts: dict[str, int] = {}
            for name in TABLES:
                con.execute(
                    f"COPY {name} TO {_sql_string(folder / f'{name}.parquet')} "
                    "(FORMAT parquet, COMPRESSION zstd)"
                )
                row = con.execute(f"SELECT count(*) FROM {name}").fetchone()
                counts[name] = int(row[0]) if row else 0
        finally:
            con.close()
    return counts


def _sql_string(path: Path) -> str:
    return "'" + str(path).replace("'", "''") + "'"


def _sql_list(paths: list[Path]) -> str:
    return "[" + ", ".join(_sql_string(p) for p in paths) + "]"


# ---------------------------------------------------------------------------------------
# The merge stage


@dataclass(frozen=True)
class MergeOutputs:
    counts: dict[str, int]  # rows of every table
    record: StageRecord  # for run.json: the scoring facts and the merged row counts


def merge_stage(out: Path) -> MergeOutputs:
    """Build ``recommendations.duckdb`` and ``parquet/`` from every shard's parts; run.json
    gets the scoring facts and the row counts from ``job.pipeline.run_stage`` (a failed
    merge writes nothing).

    Raises:
        JobError: no trained run; parts missing, of mixed shard counts, or from another run.
    """
    run = load_run(out, require(out, "merge"))
    parts = find_parts(out / PARTS_DIR, run.manifest.run_id)
    summaries = parts.summaries
    scoring = {
        "shards": parts.count,
        "top_k": summaries[0]["top_k"],
        "keep_top": summaries[0]["keep_top"],
        "users": sum(s["users"] for s in summaries),
        "pairs": sum(s["pairs"] for s in summaries),
        "prediction_rows": sum(s["prediction_rows"] for s in summaries),
        "top_k_rows": sum(s["top_k_rows"] for s in summaries),
        "seconds": round(sum(s["seconds"] for s in summaries), 3),
    }
    scoring["pairs_per_second"] = round(scoring["pairs"] / max(scoring["seconds"], 1e-9))
    manifest = run.manifest
    startups = [s["startup_seconds"] for s in summaries if s.get("startup_seconds") is not None]
    if startups:  # shards run as their own processes: each paid its start-up, added up
        manifest = with_stage(manifest, "score start-up", sum(startups))
    manifest = with_stage(manifest, "score", scoring["seconds"], scoring=scoring)

    inputs = interactions_of(run.encoding, run.ratings, run.scale)
    history_file = out / HISTORY_FILE
    history = pd.read_csv(history_file) if history_file.exists() else pd.DataFrame({"epoch": []})
    # A run trained before links.parquet existed merges with an empty links table.
    links_file = dataset_file(out, "links")
    tables = output_tables(
        MergeInputs(
            manifest=manifest,
            movies=run.movies,
            ratings=run.ratings,
            history=history,
            popular=popular_table(inputs.cold, run.encoding),
            similar=pd.read_parquet(out / SIMILAR_FILE),
            also_liked=pd.read_parquet(out / ALSO_LIKED_FILE),
            links=pd.read_parquet(links_file) if links_file.exists() else None,
            tags=run.tags,
        )
    )
    try:
        counts = write_database(out, tables, parts.predictions, parts.top_k)
    except duckdb.Error as exc:  # damage inside a part that its footer did not show
        raise damaged_part(out, [*parts.predictions, *parts.top_k], exc) from None
    log.info(
        "merged %d shard(s) into %s: %s predictions, %s top-k rows",
        parts.count,
        out / DATABASE_FILE,
        f"{counts['predictions']:,}",
        f"{counts['top_k']:,}",
    )
    return MergeOutputs(counts, StageRecord(manifest, {"merged_rows": counts}))
