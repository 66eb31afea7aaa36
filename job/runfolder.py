"""The run folder (``--out``): every file name a stage writes, defined once.

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
"""

from __future__ import annotations

import dataclasses
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from job.data import RatingScale
from job.errors import JobError
from job.features import IdEncoding
from job.files import read_json, write_json

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

# Written by score, merge and render; a new train stage invalidates them.
DOWNSTREAM_OUTPUTS = (PARTS_DIR, DATABASE_FILE, PARQUET_DIR, SITE_DIR)

# What a published run is made of (relative to the run folder); the rest stays local.
PUBLISHED_FILES = (RUN_JSON, DATABASE_FILE)
PUBLISHED_DIRS = (SITE_DIR, PARQUET_DIR)
SITE_INDEX = f"{SITE_DIR}/index.html"


def dataset_file(out: Path, table: str) -> Path:
    """``OUT/dataset/<table>.parquet`` (ratings, movies, tags)."""
    return out / DATASET_DIR / f"{table}.parquet"


# The names of the baselines' rows in the manifest's metrics (and the DuckDB table, the site):
# three that predict ratings (the article's two and the bias model), two that only rank.
POPULARITY = "popularity"
EASE = "EASE"
BASELINE_NAMES = ("global mean", "movie mean", "user+movie bias", POPULARITY, EASE)

# Bumped when the run folder's layout or run.json's shape changes in a way older folders do
# not have: a later stage refuses a folder made by another version instead of misreading it.
RUN_FORMAT = 2


def remake(stage: str, out: Path) -> str:
    """The command that (re)makes a stage's outputs in ``out``."""
    return f"run `python -m job {stage} --out {out}`"


# ---------------------------------------------------------------------------------------
# The manifest


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    sha256: str
    n_users: int
    n_movies: int
    n_rated_movies: int
    n_ratings: int
    scale: RatingScale
    split: dict[str, int]  # train, validation, test: ratings in each


@dataclass(frozen=True)
class ModelInfo:
    preset: str
    parameters: int
    layers: list[str]  # "user_embedding: Embedding(610, 8)", ...
    epochs_run: int
    rating_mean: float


@dataclass(frozen=True)
class Manifest:
    """``run.json``: what a run was made from and what it measured.

    Stages after train add their facts with ``record_stage`` (a timing, and top-level keys
    such as ``scoring`` and ``merged_rows`` kept in ``extra``).
    """

    run_id: str
    created_at: str
    dataset: DatasetInfo
    config: dict[str, Any]
    model: ModelInfo
    history: list[dict[str, Any]]
    versions: dict[str, str]
    metrics: dict[str, Any]  # evaluated_on, rows (one per model and baseline)
    training_seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    format: int = RUN_FORMAT
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        raw = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "extra"}
        raw["dataset"] = dataclasses.asdict(self.dataset)
        raw["model"] = dataclasses.asdict(self.model)
        return {**raw, **self.extra}

    @classmethod
    def from_dict(cls, raw: Any, path: Path) -> Manifest:
        """Raises JobError (naming ``path``) for anything but a complete manifest of this format."""
        out = path.parent
        if not isinstance(raw, dict):
            raise JobError(f"{path}: not a run manifest; {remake('train', out)}")
        if raw.get("format") != RUN_FORMAT:
            raise JobError(
                f"{path}: written by another version of the job (format {raw.get('format', 1)}, "
                f"this one reads {RUN_FORMAT}); {remake('train', out)}"
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        try:
            dataset = dict(raw["dataset"])
            dataset["scale"] = RatingScale(**dataset["scale"])
            return cls(
                **{k: v for k, v in raw.items() if k in known and k not in ("dataset", "model")},
                dataset=DatasetInfo(**dataset),
                model=ModelInfo(**raw["model"]),
                extra={k: v for k, v in raw.items() if k not in known},
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise JobError(
                f"{path}: incomplete or damaged manifest ({exc.__class__.__name__}: {exc}); "
                f"{remake('train', out)}"
            ) from None


def read_manifest(out: Path) -> Manifest:
    path = out / RUN_JSON
    return Manifest.from_dict(read_json(path, remake("train", out)), path)


def write_manifest(out: Path, manifest: Manifest) -> None:
    write_json(out / RUN_JSON, manifest.to_dict())


def record_stage(out: Path, stage: str, seconds: float, **facts: Any) -> None:
    """Add a stage's timing (and any facts it reports) to run.json."""
    manifest = read_manifest(out)
    write_manifest(
        out,
        dataclasses.replace(
            manifest,
            timings={**manifest.timings, stage: round(seconds, 3)},
            extra={**manifest.extra, **facts},
        ),
    )


# ---------------------------------------------------------------------------------------
# A trained run, read back


@dataclass(frozen=True)
class TrainedRun:
    """What later stages need from a finished train stage, read back from ``out``."""

    out: Path
    manifest: Manifest
    encoding: IdEncoding
    ratings: pd.DataFrame  # user_id, movie_id (raw ids), rating, timestamp, split
    movies: pd.DataFrame  # movie_id, title, genres
    tags: pd.DataFrame

    @property
    def scale(self) -> RatingScale:
        return self.manifest.dataset.scale


def load_run(out: Path) -> TrainedRun:
    """Read a train stage's outputs (not the model: ``job.model.load_model``)."""
    return TrainedRun(
        out=out,
        manifest=read_manifest(out),
        encoding=IdEncoding.load(out / ENCODING_FILE),
        ratings=pd.read_parquet(dataset_file(out, "ratings")),
        movies=pd.read_parquet(dataset_file(out, "movies")),
        tags=pd.read_parquet(dataset_file(out, "tags")),
    )


# ---------------------------------------------------------------------------------------
# What each stage needs before it starts


def _check_nonempty(path: Path, stage: str) -> None:
    if not path.exists():
        raise JobError(f"{path}: missing; {remake(stage, path.parent)}")
    if path.is_file() and path.stat().st_size == 0:
        raise JobError(
            f"{path}: empty, probably an interrupted write; {remake(stage, path.parent)}"
        )


def _check_parquet(path: Path, out: Path, stage: str) -> None:
    import pyarrow.parquet as pq

    _check_nonempty(path, stage)
    try:
        pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else exc.__class__.__name__
        raise JobError(
            f"{path}: not a readable Parquet file ({first}); {remake(stage, out)}"
        ) from None


def _check_train_outputs(out: Path) -> None:
    """run.json, encoding.json, model.keras and dataset/ of one finished train stage."""
    if not out.is_dir():
        raise JobError(f"{out}: no trained run here (no such folder); {remake('train', out)} first")
    if not (out / RUN_JSON).exists():
        raise JobError(f"{out}: no trained run here (no {RUN_JSON}); {remake('train', out)} first")
    read_manifest(out)
    _check_nonempty(out / MODEL_FILE, "train")
    if not zipfile.is_zipfile(out / MODEL_FILE):
        raise JobError(f"{out / MODEL_FILE}: damaged (not a Keras archive); {remake('train', out)}")
    encoding = out / ENCODING_FILE
    _check_nonempty(encoding, "train")
    try:
        json.loads(encoding.read_text(encoding="utf-8"))
    except (ValueError, OSError):
        raise JobError(f"{encoding}: damaged (not JSON); {remake('train', out)}") from None
    for table in ("ratings", "movies", "tags"):
        _check_parquet(dataset_file(out, table), out, "train")
    _check_parquet(out / SIMILAR_FILE, out, "train")
    _check_parquet(out / ALSO_LIKED_FILE, out, "train")
    _check_nonempty(out / RANKER_FILE, "train")
    if not zipfile.is_zipfile(out / RANKER_FILE):
        raise JobError(
            f"{out / RANKER_FILE}: damaged (not a NumPy archive); {remake('train', out)}"
        )


def require(out: Path, stage: str) -> None:
    """Check, before ``stage`` starts, that ``out`` holds the inputs it reads.

    Raises:
        JobError: one line naming the missing or damaged file and the command that remakes it.
    """
    if stage in ("score", "recommend", "merge"):
        _check_train_outputs(out)
    elif stage == "render":
        _check_train_outputs(out)
        _check_nonempty(out / DATABASE_FILE, "merge")
    elif stage == "publish":
        for name in (RUN_JSON, DATABASE_FILE, SITE_INDEX):
            if not (out / name).is_file():
                stage_of = {RUN_JSON: "train", DATABASE_FILE: "merge"}.get(name, "render")
                raise JobError(f"{out / name}: missing; {remake(stage_of, out)} first")
        read_manifest(out)
    else:
        raise ValueError(f"unknown stage {stage!r}")
