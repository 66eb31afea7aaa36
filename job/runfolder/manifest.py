"""``run.json``, the run's manifest: what a run was made from and what it measured, typed.

A stage command reads it once (``job.runfolder.preflight.require`` returns it), passes it down, and
writes it once when the stage is done (``job.pipeline``'s per-stage hook records the timing).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import pandas as pd

from job.core.config import Config, Ranker
from job.core.errors import JobError
from job.core.files import read_json, write_json
from job.core.layout import ENCODING_FILE, RUN_JSON, dataset_file, remake
from job.data.features import IdEncoding
from job.data.movielens import RatingScale

# Bumped when the run folder's layout or run.json's shape changes in a way older folders do
# not have: a later stage refuses a folder made by another version instead of misreading it.
RUN_FORMAT = 2


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

    Stages after train add their facts with ``with_stage`` (a timing, and top-level keys
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

    @property
    def ranker(self) -> Ranker:
        """What the run's top_k ranks by (its model config's ``ranker``; "rating" in runs that
        predate the choice)."""
        value = (self.config.get("model") or {}).get("ranker", "rating")
        if value not in get_args(Ranker):
            raise JobError(
                f"{RUN_JSON}: unknown ranker {value!r} in config.model (use one of "
                f"{', '.join(get_args(Ranker))})"
            )
        return value

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


@dataclass(frozen=True)
class StageRecord:
    """What a stage that writes into a run folder reports for run.json: the manifest it read
    (with any facts of earlier stages it adds, e.g. merge's scoring) and its own facts.
    ``job.pipeline.run_stage`` writes it, with the stage's time, once the stage is done."""

    manifest: Manifest
    facts: dict[str, Any] = field(default_factory=dict)

    def write(self, out: Path, stage: str, seconds: float) -> None:
        write_manifest(out, with_stage(self.manifest, stage, seconds, **self.facts))


def train_command(out: Path, manifest: Manifest | None = None) -> str:
    """The command that remakes a run's train outputs: with the run's own data, preset, seed
    and epochs when its manifest says them, and any other setting that is not the default."""
    flags = ""
    if manifest is not None:
        config = manifest.config
        for flag, key in (("--data", "data"), ("--preset", "preset"), ("--seed", "seed")):
            if config.get(key) is not None:
                flags += f" {flag} {config[key]}"
        epochs = (config.get("model") or {}).get("epochs")
        if epochs is not None:
            flags += f" --epochs {epochs}"
        defaults = {f.name: f.default for f in dataclasses.fields(Config)}
        for flag, key in (
            ("--test-fraction", "test_fraction"),
            ("--val-fraction", "val_fraction"),
            ("--split", "split"),
        ):
            if config.get(key) not in (None, defaults[key]):
                flags += f" {flag} {config[key]}"
    return f"run `python -m job train --out {out}{flags}`"


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


def load_run(out: Path, manifest: Manifest) -> TrainedRun:
    """Read a train stage's outputs (not the model: ``job.models.rating.load_model``), of the run
    ``manifest`` (``job.runfolder.preflight.require`` read it) describes.

    Raises:
        JobError: a file cannot be read (``require(out, stage)`` checks them first; this
            catches damage its cheap checks cannot see, such as a corrupt page in a Parquet
            file whose footer is whole).
    """
    fix = train_command(out, manifest)
    try:
        encoding = IdEncoding.load(out / ENCODING_FILE)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise JobError(f"{out / ENCODING_FILE}: damaged ({first_line(exc)}); {fix}") from None
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
        raise JobError(f"{path}: not a readable Parquet file ({first_line(exc)}); {fix}") from None


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else exc.__class__.__name__
