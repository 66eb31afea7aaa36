"""The train stage: load, split, fit a rating model with Keras' own loop, progress bar and
early stopping, evaluate it against the baselines, and write the run folder's train outputs."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import platform
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.core.config import N_SIMILAR, SIMILAR_MIN_RATINGS, Config
from job.core.files import (
    atomic_path,
    remove_dead_temporaries,
    remove_path,
    retire,
    write_json,
)
from job.core.layout import (
    ALSO_LIKED_FILE,
    DATASET_DIR,
    DOWNSTREAM_OUTPUTS,
    ENCODING_FILE,
    HISTORY_FILE,
    METRICS_FILE,
    MODEL_FILE,
    PARTS_DIR,
    RANKER_FILE,
    RUN_JSON,
    SIMILAR_FILE,
)
from job.core.signals import SignalsDeferred
from job.data.features import IdEncoding
from job.data.interactions import SplitData, split_data
from job.data.movielens import Dataset, RatingScale, load_dataset
from job.data.split import TEST, TRAIN, VAL
from job.models.itemitem import WatchAndLike
from job.models.rank import similar_movies_table
from job.models.rating import (
    movie_vectors,
    trainable_parameters,
)
from job.runfolder.manifest import DatasetInfo, Manifest, ModelInfo, write_manifest
from job.runfolder.preflight import require_new_run
from job.stages.evaluate import Evaluation, HeldOut, evaluate
from job.stages.fit import TrainingResult, train_split
from job.stages.serving import (
    also_liked_neighbours,
    served_models,
    serving_ranker,
    serving_rating_model,
)
from job.stages.warmstart import (
    check_scale,
    check_shape,
    describe,
    load_previous_run,
)

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# The stage


@dataclass(frozen=True)
class TrainOutputs:
    """What the train stage made: the run's manifest (run.json, written last) and its folder."""

    out: Path
    manifest: Manifest


@dataclass(frozen=True)
class TrainedArtifacts:
    """Everything the train stage writes into the run folder (``write_train_outputs``)."""

    manifest: Manifest
    dataset: Dataset
    data: SplitData
    result: TrainingResult
    ranker: WatchAndLike | None  # None: the preset ranks by predicted rating
    also_liked: pd.DataFrame  # movie_id, rank, other_movie_id, score (raw ids)


def train_stage(config: Config, verbose: int = 1) -> TrainOutputs:
    """Load, split, train, evaluate, fit the ranker; write the run folder's train outputs.

    Nothing is written until the data has been loaded and validated.
    """
    require_new_run(config.out)  # a read-only or misnamed --out fails now, not after training
    timings: dict[str, float] = {}
    previous = None
    if config.warm_start is not None:  # a damaged or mismatched run fails now, in one line
        previous = load_previous_run(config.warm_start)
        check_shape(previous, config.model)
    with _timed(timings, "load"):
        dataset = load_dataset(config.data, config.cache_dir)
    _log_dataset(dataset)
    data = split_data(dataset, config)
    extra: dict[str, Any] = {}
    if previous is not None:
        check_scale(previous, config.model, dataset.scale)
        warm = describe(previous, data.encoding)
        log.info(
            "warm start from run %s: %s of %s users and %s of %s movies known",
            warm.from_run,
            f"{warm.known_users:,}",
            f"{data.encoding.n_users:,}",
            f"{warm.known_movies:,}",
            f"{data.encoding.n_movies:,}",
        )
        extra["warm_start"] = warm.as_dict()
    with _timed(timings, "train"):
        result = train_split(
            config.model, data, dataset.scale, config.seed, verbose=verbose, previous=previous
        )
    with _timed(timings, "evaluate"):
        metrics, evaluated = evaluate_split(config, data, dataset.scale, result)
    served_result, refit = result, None
    if config.model.serve_refit:
        with _timed(timings, "refit"):
            model, refit = serving_rating_model(config, data, dataset.scale, result, verbose)
        served_result = dataclasses.replace(result, model=model)
    # Judged on held-out data, served from all of it. The ranker is fit twice: evaluation's
    # fit (train split) is the one whose metrics are reported, and it cannot serve, because
    # it never saw the validation and test ratings, a user's latest ones on a temporal split.
    # The served one is refit on every rating with the settings chosen on validation. The
    # also-liked table is co-like counts, not a fit: it is counted on every rating.
    with _timed(timings, "item_item"):
        ranker = serving_ranker(data, config.model, evaluated)
        neighbours = also_liked_neighbours(data)
    manifest = build_manifest(
        config, dataset, data.encoding, served_result, data.labels, metrics, timings
    )
    served = served_models(config, data, result, evaluated, metrics, refit)
    manifest = dataclasses.replace(manifest, extra={**manifest.extra, **extra, "served": served})
    write_train_outputs(
        config.out, TrainedArtifacts(manifest, dataset, data, served_result, ranker, neighbours)
    )
    return TrainOutputs(config.out, manifest)


@contextlib.contextmanager
def _timed(timings: dict[str, float], step: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    timings[step] = time.perf_counter() - started


def _log_dataset(dataset: Dataset) -> None:
    log.info(
        "%s: %s users rated %s movies (ratings = %s, catalogue = %s movies)",
        dataset.name,
        f"{dataset.ratings['user_id'].nunique():,}",
        f"{dataset.ratings['movie_id'].nunique():,}",
        f"{len(dataset.ratings):,}",
        f"{len(dataset.movies):,}",
    )


def evaluate_split(
    config: Config, data: SplitData, scale: RatingScale, result: TrainingResult
) -> tuple[dict[str, Any], Evaluation]:
    """run.json's metrics: the model and the baselines on the test set (the validation set
    when there is none); and the evaluation, with the preset's EASE ranker fit on the train
    split (None for a preset that ranks by predicted rating) and its settings' choice."""
    test = data.mask(TEST)
    evaluated_on = "test" if test.any() else "validation"
    evaluation = evaluate(
        config.preset,
        result.model,
        HeldOut(
            data.rated,
            data.mask(TRAIN),
            test if test.any() else data.mask(VAL),
            scale,
            data.timestamps,
        ),
        config.model,
        seed=config.seed,
        training_seconds=result.seconds,
    )
    for row in evaluation.rows:
        log.info(
            "%-16s %s RMSE=%s MAE=%s nDCG@10=%s",
            row.model,
            evaluated_on,
            *(("n/a" if x is None else f"{x:.4f}") for x in (row.rmse, row.mae, row.ndcg_at_10)),
        )
    metrics = {"evaluated_on": evaluated_on, "rows": [m.as_dict() for m in evaluation.rows]}
    if evaluation.tried:
        metrics["ranker_validation"] = evaluation.tried
    return metrics, evaluation


def build_manifest(
    config: Config,
    dataset: Dataset,
    encoding: IdEncoding,
    result: TrainingResult,
    labels: np.ndarray,
    metrics: dict[str, Any],
    timings: dict[str, float],
) -> Manifest:
    created = datetime.now(UTC)
    model, history = result.model, result.history
    fingerprint = hashlib.sha256(
        (dataset.sha256 + json.dumps(config.to_dict(), sort_keys=True)).encode()
    ).hexdigest()[:8]
    return Manifest(
        run_id=f"{created:%Y%m%dT%H%M%SZ}-{fingerprint}",
        created_at=created.isoformat(timespec="seconds"),
        dataset=DatasetInfo(
            name=dataset.name,
            sha256=dataset.sha256,
            n_users=encoding.n_users,
            n_movies=encoding.n_movies,
            n_rated_movies=int(dataset.ratings["movie_id"].nunique()),
            n_ratings=len(dataset.ratings),
            scale=dataset.scale,
            split={
                "train": int((labels == TRAIN).sum()),
                "validation": int((labels == VAL).sum()),
                "test": int((labels == TEST).sum()),
            },
        ),
        config=config.to_dict(),
        model=ModelInfo(
            preset=config.preset,
            parameters=trainable_parameters(model),
            layers=describe_layers(model),
            epochs_run=len(history),
            rating_mean=model.rating_mean,
        ),
        history=[{str(k): v for k, v in row.items()} for row in history.to_dict(orient="records")],
        versions=versions(),
        metrics=metrics,
        training_seconds=round(result.seconds, 3),
        timings={k: round(v, 3) for k, v in timings.items()},
        extra={"training": result.settings} if result.settings else {},
    )


def describe_layers(model: keras.Model) -> list[str]:
    """A line per layer, e.g. "user_embedding: Embedding(610, 8)", for the site and run.json."""
    lines = []
    for layer in model._flatten_layers(include_self=False, recursive=False):
        if isinstance(layer, keras.layers.Embedding):
            lines.append(f"{layer.name}: Embedding({layer.input_dim}, {layer.output_dim})")
        elif isinstance(layer, keras.layers.Dense):
            activation = getattr(layer.activation, "__name__", str(layer.activation))
            lines.append(f"{layer.name}: Dense({layer.units}, {activation})")
        elif isinstance(layer, keras.layers.Dropout):
            lines.append(f"{layer.name}: Dropout({layer.rate})")
    return lines


def versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for package in (
        "movielens-job",
        "keras",
        "tensorflow",
        "tensorflow-cpu",
        "numpy",
        "pandas",
        "duckdb",
        "jax",
        "torch",
    ):
        try:
            found[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    found["keras_backend"] = keras.backend.backend()
    return found


def write_train_outputs(out: Path, made: TrainedArtifacts) -> None:
    """Every file atomically; run.json last, so its presence means the stage finished.

    Every file is written under a temporary name first; only when all are written (a full
    disk fails here, with the previous run whole) are run.json and the later stages' outputs
    of the previous run removed and the new files renamed into place. A run killed during the
    renames leaves a folder without run.json, which every later stage refuses.
    """
    manifest, dataset, model = made.manifest, made.dataset, made.result.model
    encoding, labels = made.data.encoding, made.data.labels
    out.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(out)
    remove_dead_temporaries(out / PARTS_DIR)
    n_ratings = np.bincount(
        encoding.encode_movies(dataset.ratings["movie_id"]), minlength=encoding.n_movies
    )
    similar = similar_movies_table(
        encoding.movie_ids, movie_vectors(model), n_ratings, N_SIMILAR, SIMILAR_MIN_RATINGS
    )
    retired: list[Path | None] = []

    def finish(exc_type: type[BaseException] | None, *_: object) -> None:
        if exc_type is None:  # every file renamed into place: the run is complete
            write_manifest(out, manifest)

    with contextlib.ExitStack() as stack:
        # Left last: Ctrl-C held from critical.hold() on is delivered after run.json.
        critical = stack.enter_context(SignalsDeferred())
        stack.push(finish)
        tmp = stack.enter_context(atomic_path(out / MODEL_FILE))
        model.save(tmp)
        encoding.save(stack.enter_context(atomic_path(out / ENCODING_FILE)))
        made.result.history.to_csv(
            stack.enter_context(atomic_path(out / HISTORY_FILE)), index=False
        )
        write_json(stack.enter_context(atomic_path(out / METRICS_FILE)), manifest.metrics)
        similar.to_parquet(stack.enter_context(atomic_path(out / SIMILAR_FILE)), index=False)
        if made.ranker is not None:
            made.ranker.save(stack.enter_context(atomic_path(out / RANKER_FILE)))
        made.also_liked.to_parquet(
            stack.enter_context(atomic_path(out / ALSO_LIKED_FILE)), index=False
        )
        tmp = stack.enter_context(atomic_path(out / DATASET_DIR))
        tmp.mkdir()
        dataset.ratings.assign(split=labels).to_parquet(tmp / "ratings.parquet", index=False)
        dataset.movies.to_parquet(tmp / "movies.parquet", index=False)
        dataset.tags.to_parquet(tmp / "tags.parquet", index=False)
        dataset.links.to_parquet(tmp / "links.parquet", index=False)
        # Everything is written. Retire the previous run (its run.json first), then the
        # renames on leaving: outputs of later stages belong to another model and must not
        # be merged or published with this one.
        critical.hold()
        (out / RUN_JSON).unlink(missing_ok=True)
        retired += [retire(out / stale) for stale in DOWNSTREAM_OUTPUTS]
        if made.ranker is None:  # a previous run's ranker would be read as this run's
            retired.append(retire(out / RANKER_FILE))
    for path in retired:
        remove_path(path)
