"""The run folder (``--out``): every file name a stage writes, defined once.

Layout::

    run.json                manifest: dataset checksum, config, versions, metrics, timings
    model.keras             the trained Keras model
    encoding.json           raw id <-> embedding index, both directions
    history.csv             loss, mae, val_loss, val_mae per epoch
    metrics.json            held-out metrics of the model and each baseline
    dataset/                the validated input as Parquet (ratings with their split,
                            movies, tags), so later stages never need the original files
    parts/                  score's output, one file per table and shard
    recommendations.duckdb  merge's output: the tables users query
    parquet/                the same tables as Parquet
    site/                   render's output: the static site
"""

from __future__ import annotations

from pathlib import Path

RUN_JSON = "run.json"
MODEL_FILE = "model.keras"
ENCODING_FILE = "encoding.json"
HISTORY_FILE = "history.csv"
METRICS_FILE = "metrics.json"
DATASET_DIR = "dataset"
PARTS_DIR = "parts"
DATABASE_FILE = "recommendations.duckdb"
PARQUET_DIR = "parquet"
SITE_DIR = "site"

# Written by score, merge and render; a new train stage invalidates them.
DOWNSTREAM_OUTPUTS = (PARTS_DIR, DATABASE_FILE, PARQUET_DIR, SITE_DIR)

# What a published run is made of (relative to the run folder); the rest stays local.
PUBLISHED_FILES = (RUN_JSON, DATABASE_FILE)
PUBLISHED_DIRS = (SITE_DIR, PARQUET_DIR)
SITE_INDEX = f"{SITE_DIR}/index.html"


def dataset_file(out: Path, table: str) -> Path:
    """``OUT/dataset/<table>.parquet`` (ratings, movies, tags, links)."""
    return out / DATASET_DIR / f"{table}.parquet"
