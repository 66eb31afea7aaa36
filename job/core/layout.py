"""The run folder (``--out``): every name a stage writes, defined once.

Layout::

    run.json                manifest: dataset checksum, config, versions, metrics, timings
    model.keras             the trained Keras model
    encoding.json           raw id <-> embedding index, both directions
    history.csv             loss, mae, val_loss, val_mae per epoch
    metrics.json            held-out metrics of the model and each baseline
    similar.parquet         each movie's nearest movies in the model's embedding space
    ranker.npz              the item-item EASE weights (the ranker, and every pick's reason)
    also_liked.parquet      each movie's most co-liked movies ("people who liked this ...")
    dataset/                the validated input as Parquet (ratings with their split,
                            movies, tags), so later stages never need the original files
    parts/                  score's output, one file per table and shard
    recommendations.duckdb  merge's output: the tables users query
    parquet/                the same tables as Parquet
    site/                   render's output: the static site
    engine/                 render's too: the SQL page's engine (DuckDB-Wasm), the same for
                            every run, published once outside the runs (``job.site.sql``)

What run.json holds is ``job.runfolder.manifest``'s; what each stage checks before it starts is
``job.runfolder.preflight``'s.
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_JSON = "run.json"
MODEL_FILE = "model.keras"
ENCODING_FILE = "encoding.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
SIMILAR_FILE = "similar.parquet"
RANKER_FILE = "ranker.npz"
ALSO_LIKED_FILE = "also_liked.parquet"
DATASET_DIR = "dataset"
PARTS_DIR = "parts"
DATABASE_FILE = "recommendations.duckdb"
PARQUET_DIR = "parquet"
SITE_DIR = "site"
ENGINE_DIR = "engine"

# Written by score, merge and render; a new train stage invalidates them.
DOWNSTREAM_OUTPUTS = (PARTS_DIR, DATABASE_FILE, PARQUET_DIR, SITE_DIR, ENGINE_DIR)

# What a published run is made of (relative to the run folder); the rest stays local.
# The model and its encoding go up too: the next run can start from them (train --warm-start
# after pull-latest), wherever it runs.
PUBLISHED_FILES = (RUN_JSON, DATABASE_FILE, MODEL_FILE, ENCODING_FILE)
PUBLISHED_DIRS = (SITE_DIR, PARQUET_DIR)
SITE_INDEX = f"{SITE_DIR}/index.html"
# Published beside the runs, not in them (PREFIX/engine/...): versioned in their names, the
# same for every run, so a later run uploads nothing for them.
SHARED_DIRS = (ENGINE_DIR,)


def dataset_file(out: Path, table: str) -> Path:
    """``OUT/dataset/<table>.parquet`` (ratings, movies, tags, links)."""
    return out / DATASET_DIR / f"{table}.parquet"


# Scored parts: one Parquet file per table and shard, and the shard's summary, written last.
PART_FILE = re.compile(r"^(predictions|top_k|score)-(\d{5})-of-(\d{5})\.(parquet|json)$")


def part_path(parts: Path, table: str, index: int, count: int) -> Path:
    """``parts/predictions-00002-of-00008.parquet``."""
    return parts / f"{table}-{index:05d}-of-{count:05d}.parquet"


def summary_path(parts: Path, index: int, count: int) -> Path:
    """``parts/score-00002-of-00008.json``: written last, so a shard is done when it exists."""
    return parts / f"score-{index:05d}-of-{count:05d}.json"


def remake(stage: str, out: Path) -> str:
    """The command that (re)makes a stage's outputs in ``out``."""
    return f"run `python -m job {stage} --out {out}`"


def score_command(out: Path, index: int = 0, count: int = 1) -> str:
    """The command that (re)makes one shard's scored parts."""
    shard = f" --shard {index}/{count}" if count > 1 else ""
    return f"run `python -m job score --out {out}{shard}`, then merge"
