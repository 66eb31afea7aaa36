"""Storage: the DuckDB and Parquet contract, atomic writes, and merge's refusals."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from job.cli import main
from job.core.errors import JobError
from job.core.files import read_json, write_json
from job.core.layout import part_path, summary_path
from job.data.movielens import HALF_STARS
from job.runfolder.manifest import DatasetInfo, Manifest, ModelInfo
from job.stages.merge import (
    TABLES,
    MergeInputs,
    merge_stage,
    output_tables,
    write_database,
)
from job.stages.parts import remove_stale_parts

SCHEMA = {
    "movies": {
        "movie_id": "BIGINT",
        "title": "VARCHAR",
        "year": "INTEGER",
        "genres": "VARCHAR[]",
        "n_ratings": "INTEGER",
        "mean_rating": "DOUBLE",
    },
    "users": {"user_id": "BIGINT", "n_ratings": "INTEGER", "mean_rating": "DOUBLE"},
    "ratings": {
        "user_id": "BIGINT",
        "movie_id": "BIGINT",
        "rating": "FLOAT",
        "timestamp": "BIGINT",
        "split": "VARCHAR",
    },
    "predictions": {
        "user_id": "BIGINT",
        "movie_id": "BIGINT",
        "predicted_rating": "FLOAT",
        "score": "FLOAT",
        "cold_start": "BOOLEAN",
    },
    "top_k": {
        "user_id": "BIGINT",
        "rank": "INTEGER",
        "movie_id": "BIGINT",
        "predicted_rating": "FLOAT",
        "score": "FLOAT",
        "because_movie_id": "BIGINT",
        "cold_start": "BOOLEAN",
    },
    "popular": {"rank": "INTEGER", "movie_id": "BIGINT", "score": "DOUBLE", "n_ratings": "INTEGER"},
    "similar_movies": {
        "movie_id": "BIGINT",
        "rank": "INTEGER",
        "similar_movie_id": "BIGINT",
        "similarity": "FLOAT",
    },
    "also_liked": {
        "movie_id": "BIGINT",
        "rank": "INTEGER",
        "other_movie_id": "BIGINT",
        "score": "FLOAT",
    },
    "history": {
        "epoch": "INTEGER",
        "loss": "DOUBLE",
        "mae": "DOUBLE",
        "val_loss": "DOUBLE",
        "val_mae": "DOUBLE",
    },
    "metrics": {
        "model": "VARCHAR",
        "rmse": "DOUBLE",
        "mae": "DOUBLE",
        "n": "BIGINT",
        "evaluated_on": "VARCHAR",
    },
    "runs": {
        "run_id": "VARCHAR",
        "created_at": "TIMESTAMP",
        "dataset": "VARCHAR",
        "dataset_sha256": "VARCHAR",
        "preset": "VARCHAR",
        "epochs_run": "INTEGER",
        "parameters": "BIGINT",
        "training_seconds": "DOUBLE",
        "manifest": "JSON",
    },
    "links": {"movie_id": "BIGINT", "imdb_id": "BIGINT", "tmdb_id": "BIGINT"},
    "tags": {"user_id": "BIGINT", "movie_id": "BIGINT", "tag": "VARCHAR"},
}


def connect(out: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(out / "recommendations.duckdb"), read_only=True)


def test_tables_have_the_documented_schema(scored_run: Path) -> None:
    with connect(scored_run) as con:
        tables = {row[0] for row in con.execute("SHOW TABLES").fetchall()}
        assert tables == set(TABLES) == set(SCHEMA)
        for table, columns in SCHEMA.items():
            described = {r[0]: r[1] for r in con.execute(f"DESCRIBE {table}").fetchall()}
            # metrics and history may carry more columns than the documented ones
            assert {c: described.get(c) for c in columns} == columns, table


def test_parquet_files_hold_the_same_tables_in_zstd(scored_run: Path) -> None:
    with connect(scored_run) as con:
        for table in TABLES:
            path = scored_run / "parquet" / f"{table}.parquet"
            meta = pq.ParquetFile(path).metadata
            assert meta.row_group(0).column(0).compression == "ZSTD", table
            (count,) = con.execute(f"SELECT count(*) FROM {table}").fetchone()  # type: ignore[misc]
            assert meta.num_rows == count, table
            same = con.execute(
                f"SELECT count(*) FROM (SELECT * FROM {table} EXCEPT ALL "
                f"SELECT * FROM read_parquet('{path}'))"
            ).fetchone()
            assert same == (0,), table


def test_small_tables_hold_the_run(scored_run: Path) -> None:
    manifest = read_json(scored_run / "run.json")
    with connect(scored_run) as con:
        run_id, preset, steps = con.execute(
            "SELECT run_id, preset, json_extract(manifest, '$.scoring.top_k') FROM runs"
        ).fetchone()  # type: ignore[misc]
        assert (run_id, preset, int(steps)) == (manifest["run_id"], "seed", 5)
        models = [r[0] for r in con.execute("SELECT model FROM metrics").fetchall()]
        assert models == [row["model"] for row in manifest["metrics"]["rows"]]
        epochs = con.execute("SELECT list(epoch ORDER BY epoch) FROM history").fetchone()
        assert epochs == ([1, 2],)
        splits = {r[0] for r in con.execute("SELECT DISTINCT split FROM ratings").fetchall()}
        assert splits == {"train", "validation", "test"}
        ranks = con.execute("SELECT min(rank), max(rank), count(*) FROM popular").fetchone()
        rated = con.execute("SELECT count(*) FROM movies WHERE n_ratings > 0").fetchone()
        assert ranks == (1, rated[0], rated[0])  # type: ignore[index]


def test_output_tables_edge_cases() -> None:
    movies = pd.DataFrame(
        {
            "movie_id": [7, 3],
            "title": ["Untitled", "Heat (1995)"],
            "genres": ["(no genres listed)", "Action|Crime"],
        }
    )
    ratings = pd.DataFrame(
        {
            "user_id": [1, 1, 2],
            "movie_id": [3, 3, 3],
            "rating": np.array([4.0, 5.0, 3.0], "float32"),
            "timestamp": [1, 2, 3],
            "split": np.array([0, 1, 2], "int8"),
        }
    )
    manifest = Manifest(
        run_id="r1",
        created_at="2026-01-02T03:04:05+00:00",
        dataset=DatasetInfo("tiny", "0" * 64, 2, 2, 1, 3, HALF_STARS, {"train": 1}),
        config={},
        model=ModelInfo("m", 10, [], 1, 3.5),
        history=[],
        versions={},
        metrics={
            "evaluated_on": "test",
            "rows": [{"model": "m", "rmse": 1.0, "mae": 0.5, "n": 3, "accuracy": None}],
        },
        training_seconds=1.0,
    )
    popular = pd.DataFrame({"rank": [1], "movie_id": [3], "score": [4.0], "n_ratings": [3]})
    history = pd.DataFrame(
        {
            "epoch": [1],
            "loss": [1.0],
            "mae": [0.8],
            "val_loss": [1.1],
            "val_mae": [0.9],
            "accuracy": [0.3],
        }
    )
    similar = pd.DataFrame(
        {"movie_id": [3], "rank": [1], "similar_movie_id": [7], "similarity": [0.5]}
    )
    also_liked = pd.DataFrame({"movie_id": [3], "rank": [1], "other_movie_id": [7], "score": [0.2]})
    tables = output_tables(
        MergeInputs(manifest, movies, ratings, history, popular, similar, also_liked)
    )
    assert tables["movies"].to_pylist() == [
        {
            "movie_id": 3,
            "title": "Heat (1995)",
            "year": 1995,
            "genres": ["Action", "Crime"],
            "n_ratings": 3,
            "mean_rating": 4.0,
        },
        {
            "movie_id": 7,
            "title": "Untitled",
            "year": None,
            "genres": [],
            "n_ratings": 0,
            "mean_rating": None,
        },
    ]
    assert tables["ratings"].column("split").to_pylist() == ["train", "validation", "test"]
    assert tables["metrics"].schema.field("accuracy").type == pa.float64()  # all missing
    assert tables["users"].column("n_ratings").to_pylist() == [2, 1]
    assert tables["history"].column_names == [
        "epoch",
        "loss",
        "mae",
        "val_loss",
        "val_mae",
        "accuracy",
    ]
    assert str(tables["runs"].column("created_at")[0]) == "2026-01-02 03:04:05"


# ---------------------------------------------------------------------------------------
# Atomic writes (of a part: tests/test_stages_parts.py)


def test_failed_merge_keeps_the_previous_database(scored_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    before = (out / "recommendations.duckdb").read_bytes()
    tables = {"movies": pa.table({"movie_id": pa.array([1], pa.int64())})}
    with pytest.raises(duckdb.Error):
        write_database(out, tables, [out / "parts" / "nope.parquet"], [])
    assert (out / "recommendations.duckdb").read_bytes() == before
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


# ---------------------------------------------------------------------------------------
# Merge refusals


@pytest.fixture
def scored_copy(scored_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(scored_run, out, ignore=shutil.ignore_patterns("parquet", "*.duckdb"))
    return out


def as_shards(parts: Path, count: int) -> None:
    """Copy the single shard's files to shards 0..count-1 of ``count`` (same content)."""
    for i in range(count):
        for table in ("predictions", "top_k"):
            shutil.copy(part_path(parts, table, 0, 1), part_path(parts, table, i, count))
        shutil.copy(summary_path(parts, 0, 1), summary_path(parts, i, count))


def test_merge_refuses_a_missing_shard(
    scored_copy: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    parts = scored_copy / "parts"
    as_shards(parts, 3)
    for path in parts.glob("*-of-00001.*"):
        path.unlink()
    part_path(parts, "top_k", 1, 3).unlink()
    with pytest.raises(JobError, match=r"shard\(s\) 1/3 missing .*--shard 1/3"):
        merge_stage(scored_copy)
    assert main(["-q", "merge", "--out", str(scored_copy)]) == 1
    assert capsys.readouterr().err.startswith("error: ")
    assert not (scored_copy / "recommendations.duckdb").exists()


def test_merge_refuses_mixed_shard_counts(scored_copy: Path) -> None:
    as_shards(scored_copy / "parts", 2)
    with pytest.raises(JobError, match=r"different shard counts \(1, 2\)"):
        merge_stage(scored_copy)


def test_merge_refuses_no_parts(scored_copy: Path) -> None:
    shutil.rmtree(scored_copy / "parts")
    with pytest.raises(JobError, match="no scored parts; run `python -m job score"):
        merge_stage(scored_copy)


def test_merge_refuses_parts_of_another_run_or_other_flags(scored_copy: Path) -> None:
    parts = scored_copy / "parts"
    as_shards(parts, 2)
    for path in parts.glob("*-of-00001.*"):
        path.unlink()
    summary = read_json(summary_path(parts, 1, 2))
    write_json(summary_path(parts, 1, 2), {**summary, "top_k": 7})
    with pytest.raises(JobError, match="different --top-k/--keep-top"):
        merge_stage(scored_copy)
    write_json(summary_path(parts, 1, 2), {**summary, "run_id": "old"})
    with pytest.raises(JobError, match="scored for run old"):
        merge_stage(scored_copy)


def test_stale_parts_of_another_run_are_removed(scored_copy: Path) -> None:
    parts = scored_copy / "parts"
    as_shards(parts, 2)
    write_json(summary_path(parts, 1, 2), {**read_json(summary_path(parts, 1, 2)), "run_id": "old"})
    removed = remove_stale_parts(parts, read_json(scored_copy / "run.json")["run_id"])
    assert sorted(p.name for p in removed) == [
        "predictions-00001-of-00002.parquet",
        "score-00001-of-00002.json",
        "top_k-00001-of-00002.parquet",
    ]
    assert json.loads(summary_path(parts, 0, 2).read_text())["shard"] == "0/1"
