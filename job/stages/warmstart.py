"""Warm start: train from a previous run's model (``train --warm-start PREV_OUT``).

A weekly run over a dataset that grew by a few percent need not learn everything again. The
previous run's weights are carried into the new model before fitting:

- embedding and bias rows of every user and movie both runs know, matched by raw id (the
  encodings differ as soon as one id is added); new users and movies keep their fresh
  initialisation;
- the genre and tag embeddings' rows by genre and tag name (the tag vocabulary is the most
  used tags, which shifts as tags are added);
- every other layer (the dense stacks) as it is.

The previous run must have the same model shape (architecture, output, sizes): anything else
is refused in one line before any training. The split (``job.data.split``) hashes each rating, so
the ratings the previous model trained on are never in this run's validation or test sets.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from job.core.config import ModelConfig
from job.core.errors import JobError
from job.core.layout import ENCODING_FILE, MODEL_FILE
from job.data.features import IdEncoding
from job.data.movielens import RatingScale
from job.models.rating import FactorisedModel, load_model
from job.runfolder.manifest import first_line
from job.runfolder.preflight import WARM_START_FIX, require_previous_run

# ModelConfig fields that decide the weights' shapes; the rest (epochs, learning rate, L2,
# dropout, the ranker...) may change between a run and the next.
SHAPE_FIELDS = (
    "architecture",
    "output",
    "user_dim",
    "movie_dim",
    "hidden",
    "biases",
    "side_dim",
    "bottom",
    "top",
)
# Layers whose rows are one per user or per movie (the rest are copied whole).
USER_ROWS = ("user_embedding", "user_bias")
MOVIE_ROWS = ("movie_embedding", "movie_bias")
# Layers whose kernel rows are one per genre or tag column, and the model attribute naming them.
NAMED_ROWS = {"genre_embedding": "genre_names", "tag_embedding": "tag_names"}


@dataclass(frozen=True)
class PreviousRun:
    """The model and id encoding of the run a warm start begins from."""

    folder: Path
    run_id: str
    model: FactorisedModel
    encoding: IdEncoding


@dataclass(frozen=True)
class WarmStart:
    """What a warm start carried over (run.json's ``warm_start``)."""

    from_run: str
    known_users: int
    new_users: int
    known_movies: int
    new_movies: int

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def load_previous_run(folder: Path) -> PreviousRun:
    """The run at ``folder``, checked whole first (one-line ``JobError`` otherwise)."""
    manifest = require_previous_run(folder)
    try:
        model = load_model(folder)
    except Exception as exc:  # Keras raises many types for an archive it cannot rebuild
        raise JobError(
            f"{folder / MODEL_FILE}: cannot be loaded ({first_line(exc)}); {WARM_START_FIX}"
        ) from None
    if not isinstance(model, FactorisedModel):
        raise JobError(f"{folder / MODEL_FILE}: not a rating model of this job; {WARM_START_FIX}")
    return PreviousRun(folder, manifest.run_id, model, IdEncoding.load(folder / ENCODING_FILE))


def check_shape(previous: PreviousRun, config: ModelConfig) -> None:
    """Refuse, in one line, a previous model whose weights cannot seed ``config``'s."""
    path = previous.folder / MODEL_FILE
    raw = previous.model.model_config
    differ = [
        f"{name} {_plain(raw.get(name))} there, {_plain(getattr(config, name))} here"
        for name in SHAPE_FIELDS
        if _plain(raw.get(name)) != _plain(getattr(config, name))
    ]
    if differ:
        raise JobError(
            f"{path}: a model of another shape ({'; '.join(differ)}); train with the preset it "
            f"was made with, or without --warm-start"
        )


def check_scale(previous: PreviousRun, config: ModelConfig, scale: RatingScale) -> None:
    """Refuse a classifier whose classes are not this dataset's rating scale."""
    before = [float(v) for v in previous.model.rating_values or []]
    after = [float(v) for v in scale.values]
    if config.output == "classes" and before != after:
        raise JobError(
            f"{previous.folder / MODEL_FILE}: its classes are the ratings {before}, this "
            f"dataset's are {after}; train without --warm-start"
        )


def _plain(value: Any) -> Any:
    """Tuples and lists compare equal (run.json and Keras configs hold lists)."""
    return list(value) if isinstance(value, tuple | list) else value


def matching_rows(before: np.ndarray, after: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``after`` whose key ``before`` also holds, and those keys' rows in ``before``.

    ``before`` must be sorted (an ``IdEncoding``'s ids are); ``after`` may be in any order.
    """
    before, after = np.asarray(before), np.asarray(after)
    if len(before) == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    at = np.minimum(np.searchsorted(before, after), len(before) - 1)
    known = before[at] == after
    return np.flatnonzero(known), at[known]


def describe(previous: PreviousRun, encoding: IdEncoding) -> WarmStart:
    """How many of this run's users and movies the previous model knew."""
    users, _ = matching_rows(previous.encoding.user_ids, encoding.user_ids)
    movies, _ = matching_rows(previous.encoding.movie_ids, encoding.movie_ids)
    return WarmStart(
        from_run=previous.run_id,
        known_users=len(users),
        new_users=encoding.n_users - len(users),
        known_movies=len(movies),
        new_movies=encoding.n_movies - len(movies),
    )


def carry_over(previous: PreviousRun, model: FactorisedModel, encoding: IdEncoding) -> None:
    """Copy ``previous``'s weights into ``model`` (built, freshly initialised, same shape)."""
    rows = {
        **dict.fromkeys(USER_ROWS, matching_rows(previous.encoding.user_ids, encoding.user_ids)),
        **dict.fromkeys(MOVIE_ROWS, matching_rows(previous.encoding.movie_ids, encoding.movie_ids)),
    }
    for name, attribute in NAMED_ROWS.items():
        before = list(getattr(previous.model, attribute, []))
        after = list(getattr(model, attribute, []))
        rows[name] = _name_rows(before, after)
    old_layers = _layers(previous.model)
    for name, layer in _layers(model).items():
        old = old_layers.get(name)
        weights = layer.get_weights()
        if old is None or not weights:
            continue
        old_weights = old.get_weights()
        if name in rows:
            new_rows, old_rows = rows[name]
            weights[0][new_rows] = old_weights[0][old_rows]
            layer.set_weights(weights)
            continue
        if [w.shape for w in weights] != [w.shape for w in old_weights]:
            raise JobError(
                f"{previous.folder / MODEL_FILE}: layer {name} has weights of shapes "
                f"{[w.shape for w in old_weights]}, this run's model "
                f"{[w.shape for w in weights]}; train without --warm-start"
            )
        layer.set_weights(old_weights)


def _name_rows(before: list[str], after: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``after``'s names that ``before`` also has, and their rows there."""
    position = {name: i for i, name in enumerate(before)}
    pairs = [(i, position[name]) for i, name in enumerate(after) if name in position]
    if not pairs:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    new_rows, old_rows = zip(*pairs, strict=True)
    return np.asarray(new_rows), np.asarray(old_rows)


def _layers(model: FactorisedModel) -> dict[str, Any]:
    return {
        layer.name: layer for layer in model._flatten_layers(include_self=False, recursive=False)
    }
