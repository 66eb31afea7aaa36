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
import errno
import json
import os
import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from job.data import RatingScale
from job.errors import JobError
from job.features import IdEncoding
from job.files import disk_error, read_json, write_json

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


# Scored parts: one Parquet file per table and shard, and the shard's summary, written last.
PART_FILE = re.compile(r"^(predictions|top_k|score)-(\d{5})-of-(\d{5})\.(parquet|json)$")


def part_path(parts: Path, table: str, index: int, count: int) -> Path:
    """``parts/predictions-00002-of-00008.parquet``."""
    return parts / f"{table}-{index:05d}-of-{count:05d}.parquet"


def summary_path(parts: Path, index: int, count: int) -> Path:
    """``parts/score-00002-of-00008.json``: written last, so a shard is done when it exists."""
    return parts / f"score-{index:05d}-of-{count:05d}.json"


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
            _check_fields(raw)
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


def _check_fields(raw: dict[str, Any]) -> None:
    """The facts later stages compute with have their types (ValueError names the first bad one)."""
    if not isinstance(raw.get("run_id"), str) or not raw["run_id"]:
        raise ValueError(f"run_id is {raw.get('run_id')!r}")
    for key in ("n_users", "n_movies", "n_ratings"):
        value = raw["dataset"].get(key)
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"dataset.{key} is {value!r}")
    if not isinstance(raw.get("config"), dict) or not isinstance(raw.get("metrics"), dict):
        raise ValueError("config and metrics must be objects")


def read_manifest(out: Path) -> Manifest:
    path = out / RUN_JSON
    return Manifest.from_dict(read_json(path, remake("train", out)), path)


def write_manifest(out: Path, manifest: Manifest) -> None:
    write_json(out / RUN_JSON, manifest.to_dict())


def with_stage(manifest: Manifest, stage: str, seconds: float, **facts: Any) -> Manifest:
    """``manifest`` with a stage's timing and the facts it reports."""
    return dataclasses.replace(
        manifest,
        timings={**manifest.timings, stage: round(seconds, 3)},
        extra={**manifest.extra, **facts},
    )


def record_stage(out: Path, stage: str, seconds: float, **facts: Any) -> None:
    """Add a stage's timing (and any facts it reports) to run.json."""
    write_manifest(out, with_stage(read_manifest(out), stage, seconds, **facts))


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
    """Read a train stage's outputs (not the model: ``job.model.load_model``).

    Raises:
        JobError: a file cannot be read (``require(out, stage)`` checks them first; this
            catches damage its cheap checks cannot see, such as a corrupt page in a Parquet
            file whose footer is whole).
    """
    manifest = read_manifest(out)
    fix = train_command(out, manifest)
    try:
        encoding = IdEncoding.load(out / ENCODING_FILE)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobError(f"{out / ENCODING_FILE}: damaged ({_first_line(exc)}); {fix}") from None
    return TrainedRun(
        out=out,
        manifest=manifest,
        encoding=encoding,
        ratings=_read_parquet(dataset_file(out, "ratings"), fix),
        movies=_read_parquet(dataset_file(out, "movies"), fix),
        tags=_read_parquet(dataset_file(out, "tags"), fix),
    )


def _read_parquet(path: Path, fix: str) -> pd.DataFrame:
    import pyarrow as pa

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise JobError(f"{path}: not a readable Parquet file ({_first_line(exc)}); {fix}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__


# ---------------------------------------------------------------------------------------
# What each stage needs before it starts: the one place that checks a stage's inputs

STAGES = ("train", "score", "recommend", "merge", "render", "publish")


def require(out: Path, stage: str) -> None:
    """Check, before ``stage`` starts, that ``out`` holds the inputs it reads, all of one run
    and of this version of the job, and (for stages that write into it) that it is writable.

    Cheap checks only (sizes, Parquet footers, zip checksums, DuckDB's catalogue, a few
    facts compared with run.json): they find missing, empty, truncated and corrupt files and
    files of another run, in seconds whatever the run's size.

    Raises:
        JobError: one line naming the file, what is wrong with it and the command that
            remakes it.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}")
    if stage == "train":
        _check_writable(out)
        return
    manifest = _check_manifest(out)
    if stage in ("score", "recommend", "merge"):
        _check_train_outputs(out, manifest)
    if stage == "merge":
        _check_parquet(out / SIMILAR_FILE, train_command(out, manifest))
        _check_parquet(out / ALSO_LIKED_FILE, train_command(out, manifest))
        if dataset_file(out, "links").exists():  # older runs have none; merge copes
            _check_parquet(dataset_file(out, "links"), train_command(out, manifest))
        _check_parts(out, manifest)
    if stage in ("render", "publish"):
        _check_database(out, manifest)
    if stage == "publish":
        _check_site(out, manifest)
    if stage == "score":
        _check_writable(out / PARTS_DIR)
    elif stage in ("merge", "render"):
        _check_writable(out)


def train_command(out: Path, manifest: Manifest | None = None) -> str:
    """The command that remakes a run's train outputs: with the run's own data, preset and
    seed when its manifest says them."""
    flags = ""
    if manifest is not None:
        config = manifest.config
        for flag, key in (("--data", "data"), ("--preset", "preset"), ("--seed", "seed")):
            if config.get(key) is not None:
                flags += f" {flag} {config[key]}"
        epochs = (config.get("model") or {}).get("epochs")
        if epochs is not None:
            flags += f" --epochs {epochs}"
        for flag, key, default in (
            ("--test-fraction", "test_fraction", 0.1),
            ("--val-fraction", "val_fraction", 0.1),
            ("--split", "split", "random"),
        ):
            if config.get(key) not in (None, default):
                flags += f" {flag} {config[key]}"
    return f"run `python -m job train --out {out}{flags}`"


def score_command(out: Path, index: int = 0, count: int = 1) -> str:
    shard = f" --shard {index}/{count}" if count > 1 else ""
    return f"run `python -m job score --out {out}{shard}`, then merge"


def _check_manifest(out: Path) -> Manifest:
    if not out.is_dir():
        what = "not a folder" if out.exists() else "no such folder"
        raise JobError(f"{out}: no trained run here ({what}); {train_command(out)} first")
    if not (out / RUN_JSON).exists():
        raise JobError(f"{out}: no trained run here (no {RUN_JSON}); {train_command(out)} first")
    return read_manifest(out)


def _check_nonempty(path: Path, fix: str) -> None:
    if not path.exists():
        raise JobError(f"{path}: missing; {fix}")
    if not path.is_file():
        raise JobError(f"{path}: not a file; {fix}")
    if path.stat().st_size == 0:
        raise JobError(f"{path}: empty, probably an interrupted write; {fix}")


def _check_parquet(path: Path, fix: str, columns: tuple[str, ...] = ()) -> Any:
    """A Parquet file whose footer reads (a truncated file has none); returns its metadata."""
    import pyarrow.parquet as pq

    _check_nonempty(path, fix)
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        raise JobError(f"{path}: not a readable Parquet file ({_first_line(exc)}); {fix}") from None
    missing = [c for c in columns if c not in metadata.schema.names]
    if missing:
        raise JobError(f"{path}: no column {', '.join(missing)} (another version's file?); {fix}")
    return metadata


DATASET_COLUMNS = {
    "ratings": ("user_id", "movie_id", "rating", "timestamp", "split"),
    "movies": ("movie_id", "title", "genres"),
    "tags": ("movie_id", "tag"),
}


def _check_train_outputs(out: Path, manifest: Manifest) -> None:
    """model.keras, encoding.json and dataset/ of the train stage that wrote run.json."""
    fix = train_command(out, manifest)
    facts = manifest.dataset
    _check_model(out / MODEL_FILE, manifest, fix)

    encoding = out / ENCODING_FILE
    _check_nonempty(encoding, fix)
    raw = read_json(encoding, fix)
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), list) and all(isinstance(i, int) for i in raw[k])
        for k in ("user_ids", "movie_ids")
    ):
        raise JobError(f"{encoding}: damaged (no user_ids and movie_ids lists of ids); {fix}")
    sizes = (len(raw["user_ids"]), len(raw["movie_ids"]))
    if sizes != (facts.n_users, facts.n_movies):
        raise JobError(
            f"{encoding}: {sizes[0]} users and {sizes[1]} movies, but {RUN_JSON} says "
            f"{facts.n_users} and {facts.n_movies} (a file of another run?); {fix}"
        )

    for table, columns in DATASET_COLUMNS.items():
        path = dataset_file(out, table)
        metadata = _check_parquet(path, fix, columns)
        if table == "ratings" and metadata.num_rows != facts.n_ratings:
            raise JobError(
                f"{path}: {metadata.num_rows} ratings, but {RUN_JSON} says {facts.n_ratings} "
                f"(a file of another run?); {fix}"
            )
    _check_ranker(out / RANKER_FILE, manifest, fix)


def _check_ranker(path: Path, manifest: Manifest, fix: str) -> None:
    """A whole NumPy archive (every member's CRC) of this run's catalogue."""
    import numpy as np

    _check_nonempty(path, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
        if broken is None:
            with np.load(path) as saved:
                n_movies = int(saved["n_movies"])
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as exc:
        raise JobError(
            f"{path}: damaged, not a whole NumPy archive ({_first_line(exc)}); {fix}"
        ) from None
    if broken is not None:
        raise JobError(f"{path}: damaged ({broken} fails its checksum); {fix}")
    if n_movies != manifest.dataset.n_movies:
        raise JobError(
            f"{path}: a ranker of {n_movies} movies, but {RUN_JSON} says "
            f"{manifest.dataset.n_movies} (a file of another run?); {fix}"
        )


def _check_model(path: Path, manifest: Manifest, fix: str) -> None:
    """A whole Keras archive (every member's CRC) made for this run's users and movies."""
    _check_nonempty(path, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            config = json.loads(archive.read("config.json")) if broken is None else None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as exc:
        raise JobError(
            f"{path}: damaged, not a whole Keras archive ({_first_line(exc)}); {fix}"
        ) from None
    if broken is not None:
        raise JobError(f"{path}: damaged ({broken} fails its checksum); {fix}")
    inner = config.get("config") if isinstance(config, dict) else None
    if isinstance(inner, dict):
        sizes = (inner.get("n_users"), inner.get("n_movies"))
        expected = (manifest.dataset.n_users, manifest.dataset.n_movies)
        if None not in sizes and sizes != expected:
            raise JobError(
                f"{path}: a model of {sizes[0]} users x {sizes[1]} movies, but {RUN_JSON} says "
                f"{expected[0]} x {expected[1]} (a file of another run?); {fix}"
            )


def _check_parts(out: Path, manifest: Manifest) -> None:
    """Every scored part whole and of this run; ``job.store.find_parts`` then checks the
    set is complete and scored with the same flags."""
    parts = out / PARTS_DIR
    found = sorted(p for p in parts.iterdir() if PART_FILE.match(p.name)) if parts.is_dir() else []
    if not found:
        raise JobError(f"{parts}: no scored parts; {score_command(out)}")
    for path in found:
        match = PART_FILE.match(path.name)
        assert match is not None
        if match.group(1) != "score":
            continue
        index, count = int(match.group(2)), int(match.group(3))
        fix = score_command(out, index, count)
        summary = read_json(path, fix)
        if not isinstance(summary, dict) or not all(
            isinstance(summary.get(k), int) for k in ("prediction_rows", "top_k_rows")
        ):
            raise JobError(f"{path}: damaged (not a shard's summary); {fix}")
        if summary.get("run_id") != manifest.run_id:
            raise JobError(
                f"{path}: scored for run {summary.get('run_id')}, but {out / RUN_JSON} is run "
                f"{manifest.run_id}; {fix}"
            )
        for table, key in (("predictions", "prediction_rows"), ("top_k", "top_k_rows")):
            part = part_path(parts, table, index, count)
            if not part.exists():
                continue  # find_parts names the missing shard
            rows = _check_parquet(part, fix).num_rows
            if rows != summary[key]:
                raise JobError(
                    f"{part}: {rows} rows, but {path.name} says {summary[key]} (an interrupted "
                    f"or mixed scoring); {fix}"
                )
    for path in found:  # parts whose shard has no summary yet: whole, at least
        if path.suffix == ".parquet":
            match = PART_FILE.match(path.name)
            assert match is not None
            _check_parquet(path, score_command(out, int(match.group(2)), int(match.group(3))))


def damaged_part(out: Path, paths: list[Path], exc: BaseException) -> JobError:
    """A part that DuckDB could not read past its footer, named by reading each in full (on
    this error path only: a whole read of every part costs as much as the merge)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as damage:
            match = PART_FILE.match(path.name)
            fix = score_command(out, int(match.group(2)), int(match.group(3))) if match else ""
            return JobError(f"{path}: damaged ({_first_line(damage)}); {fix}")
    return JobError(
        f"{out / PARTS_DIR}: cannot read the parts ({_first_line(exc)}); {score_command(out)}"
    )


def _check_database(out: Path, manifest: Manifest) -> None:
    """recommendations.duckdb opens, and its runs table holds this run alone."""
    import duckdb

    db = out / DATABASE_FILE
    fix = remake("merge", out)
    _check_nonempty(db, fix)
    try:
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables = {
                r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            }
            ids = (
                {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
                if "runs" in tables
                else None
            )
        finally:
            con.close()
    except duckdb.Error as exc:
        raise JobError(
            f"{db}: damaged, not a readable DuckDB database ({_first_line(exc)}); {fix}"
        ) from None
    if ids is None:
        raise JobError(f"{db}: no runs table (made by another version of the job?); {fix}")
    if ids != {manifest.run_id}:
        held = ", ".join(sorted(map(str, ids))) or "no run"
        raise JobError(
            f"{db}: holds {held}, but {out / RUN_JSON} is run {manifest.run_id} (merged for "
            f"another run); {fix}"
        )


def damaged_database(out: Path, exc: BaseException) -> JobError:
    """A DuckDB error while reading recommendations.duckdb, as the one line that says so."""
    return JobError(f"{out / DATABASE_FILE}: damaged ({_first_line(exc)}); {remake('merge', out)}")


def _check_site(out: Path, manifest: Manifest) -> None:
    index = out / SITE_INDEX
    fix = remake("render", out)
    _check_nonempty(index, fix)
    try:
        page = index.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise JobError(f"{index}: cannot read ({_first_line(exc)}); {fix}") from None
    if manifest.run_id not in page:
        raise JobError(f"{index}: rendered for another run than {manifest.run_id}; {fix}")


def _check_writable(folder: Path) -> None:
    """The folder a stage writes into (or, not made yet, its nearest parent) takes writes."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise JobError(f"{existing}: not a folder; choose another --out")
    if os.access(existing, os.W_OK | os.X_OK):
        return
    readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    number = errno.EROFS if readonly else errno.EACCES
    error = disk_error(OSError(number, os.strerror(number)), folder)
    assert error is not None
    raise error
