"""The stages glued together, each runnable alone on a previous run's output folder.

Layout of an output folder (``--out``)::

    run.json            manifest: dataset checksum, config, versions, metrics, stage timings
    model.keras         the trained Keras model
    encoding.json       raw id <-> embedding index, both directions
    history.csv         loss, mae, val_loss, val_mae per epoch
    metrics.json        test RMSE/MAE of the model and each baseline
    dataset/            the validated input as Parquet (ratings with their split, movies, tags),
                        so later stages never need the original files
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import shutil
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pandas as pd

from job.config import Config
from job.data import Dataset, RatingScale, load_dataset
from job.errors import JobError
from job.evaluate import (
    BASELINE_NAMES,
    Metrics,
    accuracy,
    clip,
    constant_scorer,
    error_metrics,
    fit_biases,
    global_mean_baseline,
    movie_mean_baseline,
    popularity_order,
    ranking_metrics,
)
from job.features import IdEncoding
from job.files import atomic_path, read_json, write_json
from job.model import block_scorer, predict_classes, predict_ratings, trainable_parameters
from job.split import TEST, TRAIN, VAL
from job.train import split_data, train_split

log = logging.getLogger(__name__)

RUN_JSON = "run.json"
MODEL_FILE = "model.keras"
ENCODING_FILE = "encoding.json"
# Written by score, merge and render; a new train stage invalidates them.
DOWNSTREAM_OUTPUTS = ("parts", "recommendations.duckdb", "parquet", "site")


@dataclass(frozen=True)
class TrainedRun:
    """What later stages need from a finished train stage, read back from ``out``."""

    out: Path
    manifest: dict[str, Any]
    encoding: IdEncoding
    ratings: pd.DataFrame  # user_id, movie_id (raw ids), rating, timestamp, split
    movies: pd.DataFrame  # movie_id, title, genres
    tags: pd.DataFrame

    @property
    def scale(self) -> RatingScale:
        return RatingScale(**self.manifest["dataset"]["scale"])

    def load_model(self) -> keras.Model:
        import job.model  # noqa: F401  (registers the custom model class)

        return keras.saving.load_model(self.out / MODEL_FILE, compile=False)


def load_run(out: Path) -> TrainedRun:
    """Read a train stage's outputs; a clear error if ``out`` is not one."""
    if not (out / RUN_JSON).exists() or not (out / MODEL_FILE).exists():
        raise JobError(
            f"{out}: no trained run here (run.json, model.keras); run `python -m job train --out {out}` first"
        )
    return TrainedRun(
        out=out,
        manifest=read_json(out / RUN_JSON),
        encoding=IdEncoding.load(out / ENCODING_FILE),
        ratings=pd.read_parquet(out / "dataset" / "ratings.parquet"),
        movies=pd.read_parquet(out / "dataset" / "movies.parquet"),
        tags=pd.read_parquet(out / "dataset" / "tags.parquet"),
    )


def record_stage(out: Path, stage: str, seconds: float, **extra: Any) -> None:
    """Add a stage's timing (and any facts it reports) to run.json."""
    manifest = read_json(out / RUN_JSON)
    manifest.setdefault("timings", {})[stage] = round(seconds, 3)
    manifest.update(extra)
    write_json(out / RUN_JSON, manifest)


def train_stage(config: Config, verbose: int = 1) -> dict[str, Any]:
    """Load, split, train, evaluate; write the model and the manifest into ``config.out``.

    Nothing is written until the data has been loaded and validated.
    """
    timings: dict[str, float] = {}
    started = time.perf_counter()
    dataset = load_dataset(config.data, config.cache_dir)
    timings["load"] = time.perf_counter() - started
    log.info(
        "%s: %s users rated %s movies (ratings = %s, catalogue = %s movies)",
        dataset.name,
        f"{dataset.ratings['user_id'].nunique():,}",
        f"{dataset.ratings['movie_id'].nunique():,}",
        f"{len(dataset.ratings):,}",
        f"{len(dataset.movies):,}",
    )

    data = split_data(dataset, config)
    encoding, pairs, ratings, labels = data.encoding, data.pairs, data.ratings, data.labels
    part = {name: labels == code for name, code in (("train", TRAIN), ("val", VAL), ("test", TEST))}

    started = time.perf_counter()
    result = train_split(config.model, data, dataset.scale, seed=config.seed, verbose=verbose)
    timings["train"] = time.perf_counter() - started

    started = time.perf_counter()
    evaluated_on = "test" if part["test"].any() else "validation"
    held_out = part["test"] if part["test"].any() else part["val"]
    metrics = evaluate_all(
        config.preset,
        result.model,
        pairs,
        ratings,
        part["train"],
        held_out,
        encoding,
        dataset.scale,
        training_seconds=result.seconds,
    )
    timings["evaluate"] = time.perf_counter() - started
    for row in metrics:
        log.info(
            "%-16s %s RMSE=%.4f MAE=%.4f nDCG@10=%s",
            row.model,
            evaluated_on,
            row.rmse,
            row.mae,
            "n/a" if row.ndcg_at_10 is None else f"{row.ndcg_at_10:.4f}",
        )

    manifest = build_manifest(config, dataset, encoding, result.model, result.history, labels)
    manifest["metrics"] = {"evaluated_on": evaluated_on, "rows": [m.as_dict() for m in metrics]}
    manifest["training_seconds"] = round(result.seconds, 3)
    manifest["timings"] = {k: round(v, 3) for k, v in timings.items()}
    write_train_outputs(
        config.out, manifest, dataset, encoding, result.model, result.history, labels
    )
    return manifest


def evaluate_all(
    name: str,
    model: keras.Model,
    pairs: np.ndarray,
    ratings: np.ndarray,
    train_mask: np.ndarray,
    held_out: np.ndarray,
    encoding: IdEncoding,
    scale: RatingScale,
    training_seconds: float | None = None,
) -> list[Metrics]:
    """Held-out metrics of the model and of the three baselines, all clipped to the scale.

    Rating error (RMSE, MAE; accuracy for the classifier) on the ``held_out`` ratings, and
    ranking metrics among each held-out user's unwatched movies: every movie except those
    the user rated outside ``held_out`` (train and validation) is a candidate, ranked by the
    unclipped predicted rating, ties by training popularity (``evaluate.popularity_order``).
    ``training_seconds`` is the model's; the baselines' are their own fitting times.
    """
    tr_users, tr_movies = pairs[train_mask, 0], pairs[train_mask, 1]
    ho_users, ho_movies = pairs[held_out, 0], pairs[held_out, 1]
    actual = ratings[held_out]
    tr_ratings = ratings[train_mask]
    n_movies = encoding.n_movies
    fitting: dict[str, float] = {}
    started = time.perf_counter()
    global_mean = global_mean_baseline(tr_ratings, n_movies)
    fitting[BASELINE_NAMES[0]] = time.perf_counter() - started
    started = time.perf_counter()
    movie_mean = movie_mean_baseline(tr_movies, tr_ratings, n_movies)
    fitting[BASELINE_NAMES[1]] = time.perf_counter() - started
    started = time.perf_counter()
    biases = fit_biases(tr_users, tr_movies, tr_ratings, encoding.n_users, n_movies)
    fitting[BASELINE_NAMES[2]] = time.perf_counter() - started
    log.info("Average rating in training set is %.2f stars", float(np.mean(tr_ratings)))

    def seconds(value: float | None) -> float | None:
        return None if value is None else round(value, 3)

    model_row = error_metrics(
        name, clip(predict_ratings(model, ho_users, ho_movies), scale), actual
    )
    if getattr(model, "classes", False):
        model_row = replace(
            model_row, accuracy=accuracy(predict_classes(model, ho_users, ho_movies), actual)
        )
    rows = [
        replace(model_row, training_seconds=seconds(training_seconds)),
        error_metrics(BASELINE_NAMES[0], global_mean[ho_movies], actual),
        error_metrics(BASELINE_NAMES[1], movie_mean[ho_movies], actual),
        error_metrics(BASELINE_NAMES[2], clip(biases.predict(ho_users, ho_movies), scale), actual),
    ]
    rows[1:] = [replace(row, training_seconds=seconds(fitting[row.model])) for row in rows[1:]]
    # The user's bias shifts every movie alike, so it cannot change a user's ranking.
    scorers = [
        block_scorer(model, n_movies),
        constant_scorer(global_mean),
        constant_scorer(movie_mean),
        constant_scorer(biases.mean + biases.movie_bias),
    ]
    order = popularity_order(tr_movies, n_movies)
    seen = (pairs[~held_out, 0], pairs[~held_out, 1])
    return [
        row.with_ranking(
            ranking_metrics(scorer, n_movies, seen, (ho_users, ho_movies, actual), order)
        )
        for row, scorer in zip(rows, scorers, strict=True)
    ]


def build_manifest(
    config: Config,
    dataset: Dataset,
    encoding: IdEncoding,
    model: keras.Model,
    history: pd.DataFrame,
    labels: np.ndarray,
) -> dict[str, Any]:
    created = datetime.now(UTC)
    fingerprint = hashlib.sha256(
        (dataset.sha256 + json.dumps(config.to_dict(), sort_keys=True)).encode()
    ).hexdigest()[:8]
    return {
        "run_id": f"{created:%Y%m%dT%H%M%SZ}-{fingerprint}",
        "created_at": created.isoformat(timespec="seconds"),
        "dataset": {
            "name": dataset.name,
            "sha256": dataset.sha256,
            "n_users": encoding.n_users,
            "n_movies": encoding.n_movies,
            "n_rated_movies": int(dataset.ratings["movie_id"].nunique()),
            "n_ratings": len(dataset.ratings),
            "scale": {
                "low": dataset.scale.low,
                "high": dataset.scale.high,
                "step": dataset.scale.step,
            },
            "split": {
                "train": int((labels == TRAIN).sum()),
                "validation": int((labels == VAL).sum()),
                "test": int((labels == TEST).sum()),
            },
        },
        "config": config.to_dict(),
        "model": {
            "preset": config.preset,
            "parameters": trainable_parameters(model),
            "layers": describe_layers(model),
            "epochs_run": len(history),
            "rating_mean": model.rating_mean,
        },
        "history": history.to_dict(orient="records"),
        "versions": versions(),
    }


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


def write_train_outputs(
    out: Path,
    manifest: dict[str, Any],
    dataset: Dataset,
    encoding: IdEncoding,
    model: keras.Model,
    history: pd.DataFrame,
    labels: np.ndarray,
) -> None:
    """Every file atomically; run.json last, so its presence means the stage finished.

    Outputs of later stages from an earlier run in the same folder are removed first: they
    belong to another model and must not be merged or published with this one.
    """
    out.mkdir(parents=True, exist_ok=True)
    for stale in DOWNSTREAM_OUTPUTS:
        path = out / stale
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    with atomic_path(out / MODEL_FILE) as tmp:
        model.save(tmp)
    encoding.save(out / ENCODING_FILE)
    with atomic_path(out / "history.csv") as tmp:
        history.to_csv(tmp, index=False)
    write_json(out / "metrics.json", manifest["metrics"])
    with atomic_path(out / "dataset") as tmp:
        tmp.mkdir()
        dataset.ratings.assign(split=labels).to_parquet(tmp / "ratings.parquet", index=False)
        dataset.movies.to_parquet(tmp / "movies.parquet", index=False)
        dataset.tags.to_parquet(tmp / "tags.parquet", index=False)
    write_json(out / RUN_JSON, manifest)


# ---------------------------------------------------------------------------------------
# The article's "Example Predictions"


@dataclass(frozen=True)
class UserExample:
    user_id: int
    n_rated: int
    mean_rating: float
    top_rated: pd.DataFrame  # movie_id, rating, title, genres
    recommendations: pd.DataFrame  # movie_id, predicted_rating, title, genres


def example_for_user(
    run: TrainedRun, user_id: int, n_top_rated: int = 10, n_recommend: int = 5
) -> UserExample:
    """A user's favourite movies and the model's top picks among the movies they haven't rated."""
    if user_id not in set(run.encoding.user_ids.tolist()):
        raise JobError(
            f"user {user_id} is not in this run's data; pick one of {run.encoding.user_ids[0]}..{run.encoding.user_ids[-1]}"
        )
    rated = run.ratings[run.ratings["user_id"] == user_id]
    titles = run.movies.set_index("movie_id")
    top_rated = (
        rated.sort_values(["rating", "timestamp"], ascending=[False, False])
        .head(n_top_rated)[["movie_id", "rating"]]
        .join(titles, on="movie_id")
    )
    model = run.load_model()
    unrated = np.setdiff1d(
        np.arange(run.encoding.n_movies), run.encoding.encode_movies(rated["movie_id"])
    )
    user_index = np.full(len(unrated), run.encoding.encode_users([user_id])[0])
    predicted = clip(predict_ratings(model, user_index, unrated), run.scale)
    best = np.argsort(-predicted, kind="stable")[:n_recommend]
    recommendations = pd.DataFrame(
        {"movie_id": run.encoding.decode_movies(unrated[best]), "predicted_rating": predicted[best]}
    ).join(titles, on="movie_id")
    return UserExample(
        user_id, len(rated), float(rated["rating"].mean()), top_rated, recommendations
    )


def format_example(example: UserExample) -> str:
    """The article's text layout."""
    lines = [
        f"User #{example.user_id} has rated {example.n_rated} movies (avg. rating = {example.mean_rating:.1f})",
        "Here are some of the top ratings the user had made:",
        "",
        "movie_id\trating\ttitle\tgenre",
    ]
    for row in example.top_rated.itertuples():
        lines.append(
            f"{row.movie_id}\t{row.rating:.1f}\t{row.title}\t{str(row.genres).replace('|', '-')}"
        )
    lines += [
        "",
        f"Showing recommendations for user: {example.user_id}",
        "=" * 36,
        "-" * 32,
        f"Top {len(example.recommendations)} movie recommendations",
        "-" * 32,
    ]
    for row in example.recommendations.itertuples():
        lines.append(
            f"{row.title} : {str(row.genres).replace('|', '-')}  (predicted {row.predicted_rating:.2f})"
        )
    return "\n".join(lines)
