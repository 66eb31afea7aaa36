"""Choosing and checking a preset: a small grid search on the validation set, and seed spread.

python -m bench tune  train every point of ``TUNE_GRID`` and score it on the VALIDATION
                     ratings only (the test ratings are never read); prints a table and
                     writes tune.json. The ``tuned`` preset in job/core/config.py is its winner.
python -m bench seeds  train and evaluate a preset once per seed (each seed its own split,
                     initialisation and shuffling); prints mean ± std of the test
                     metrics of the model and the baselines; writes seeds.json.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from job.core.config import TUNE_BASE, Config, ModelConfig, model_config
from job.core.errors import ConfigError
from job.core.files import write_json
from job.data.features import side_features
from job.data.interactions import SplitData, split_data
from job.data.movielens import Dataset, load_dataset
from job.data.split import TEST, TRAIN, VAL
from job.models.rating import predict_classes, predict_ratings, trainable_parameters
from job.stages.evaluate import HeldOut, accuracy, clip, error_metrics, evaluate
from job.stages.fit import train_split

log = logging.getLogger(__name__)

TUNE_JSON = "tune.json"
SEEDS_JSON = "seeds.json"

# The grid `python -m bench tune` searches, as overrides of the TUNE_BASE preset. Small on
# purpose (16 trainings). Earlier hand runs showed that the DLRM model beats the mlp, that
# dropout, batch size and learning rate change little, and that the embedding size, the top
# MLP (or none) and the L2 (its strength, and whether it pulls every row of the tables or
# only the rows a batch trains) are what move validation error. The 10-class head, an earlier
# winner here, is left out: it never learnt latent-factor data (README).
TUNE_GRID: dict[str, tuple[Any, ...]] = {
    "side_dim": (32, 64),
    "top": ((64, 32), ()),
    "l2_scope": ("tables", "batch"),
    "l2": (1e-3, 3e-2),
}
# The winner is the point with the lowest validation RMSE (the headline metric).
TUNE_SELECT = "val_rmse"


def grid_points(grid: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in declaration order."""
    names = list(grid)
    return [dict(zip(names, values, strict=True)) for values in itertools.product(*grid.values())]


def _with_side(data: SplitData, dataset: Dataset, model: ModelConfig) -> SplitData:
    if model.architecture != "dlrm" or data.side is not None:
        return data
    side = side_features(dataset.movies, dataset.tags, data.encoding, model.n_tags)
    return dataclasses.replace(data, side=side)


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    def cell(column: str, value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, float):
            return (
                f"{value:.1f}"
                if column == "seconds"
                else f"{value:.4g}"
                if column in grid_like
                else f"{value:.4f}"
            )
        return str(value)

    grid_like = {c for c in columns if not c.startswith(("val_", "epochs", "seconds", "best"))}
    cells = [[cell(c, row.get(c, "")) for c in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)) for r in cells]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# tune


@dataclass(frozen=True)
class TuneResult:
    base: str
    grid: dict[str, tuple[Any, ...]]
    rows: list[dict[str, Any]]  # one per point: its overrides, val_rmse, val_mae, ...
    best: dict[str, Any]  # the winning row
    best_config: ModelConfig

    def table(self) -> str:
        columns = [*self.grid, "val_rmse", "val_mae", "val_accuracy", "epochs", "seconds", "best"]
        rows = [{**row, "best": "*" if row is self.best else ""} for row in self.rows]
        return _table(rows, columns)

    def as_dict(self) -> dict[str, Any]:
        return {
            "base": self.base,
            "grid": {k: list(v) for k, v in self.grid.items()},
            "selected_by": TUNE_SELECT,
            "evaluated_on": "validation",
            "rows": self.rows,
            "best": self.best,
            "best_config": dataclasses.asdict(self.best_config),
        }


def tune(
    config: Config,
    grid: Mapping[str, Sequence[Any]] | None = None,
    base: str = TUNE_BASE,
    dataset: Dataset | None = None,
    verbose: int = 0,
) -> TuneResult:
    """Train every grid point on the training ratings and score it on the validation ratings.

    ``grid`` defaults to ``TUNE_GRID``. One split (``config.seed``) is shared by all points.
    Validation ratings drive early stopping and the choice; the test ratings are dropped
    before any training, so nothing here can read them. ``config.model.epochs`` caps every
    point's epochs only if it was set below the base's.
    """
    grid = TUNE_GRID if grid is None else grid
    if not grid:
        raise ConfigError("the tuning grid is empty")
    dataset = dataset or load_dataset(config.data, config.cache_dir)
    data = split_data(dataset, dataclasses.replace(config, model=model_config(base)))
    train_part, val_part = data.mask(TRAIN), data.mask(VAL)
    # Nothing below may see a test rating: keep only the pairs the search is allowed to read.
    data = dataclasses.replace(
        data,
        pairs=data.pairs[train_part | val_part],
        ratings=data.ratings[train_part | val_part],
        labels=data.labels[train_part | val_part],
    )
    assert not data.mask(TEST).any()
    users, movies = data.pairs[data.mask(VAL), 0], data.pairs[data.mask(VAL), 1]
    actual = data.ratings[data.mask(VAL)]
    epochs_cap = config.model.epochs
    rows: list[dict[str, Any]] = []
    configs: list[ModelConfig] = []
    points = grid_points(grid)
    for number, point in enumerate(points, start=1):
        candidate = model_config(base, **point)
        if epochs_cap < candidate.epochs:
            candidate = dataclasses.replace(candidate, epochs=epochs_cap)
        data = _with_side(data, dataset, candidate)
        started = time.perf_counter()
        result = train_split(candidate, data, dataset.scale, seed=config.seed, verbose=verbose)
        seconds = time.perf_counter() - started
        errors = error_metrics(
            "val", clip(predict_ratings(result.model, users, movies), dataset.scale), actual
        )
        row: dict[str, Any] = {
            **point,
            "val_rmse": errors.rmse,
            "val_mae": errors.mae,
            "val_accuracy": (
                accuracy(predict_classes(result.model, users, movies), actual)
                if candidate.output == "classes"
                else None
            ),
            "epochs": result.epochs_run,
            "seconds": round(seconds, 1),
            "parameters": trainable_parameters(result.model),
        }
        log.info(
            "tune %d/%d %s: val RMSE %.4f MAE %.4f (%d epochs, %.0f s)",
            number,
            len(points),
            point,
            errors.rmse,
            errors.mae,
            result.epochs_run,
            seconds,
        )
        rows.append(row)
        configs.append(candidate)
    best_index = min(range(len(rows)), key=lambda i: rows[i][TUNE_SELECT])
    return TuneResult(
        base=base,
        grid={k: tuple(v) for k, v in grid.items()},
        rows=rows,
        best=rows[best_index],
        best_config=configs[best_index],
    )


def run_tune(config: Config, verbose: int = 0) -> TuneResult:
    """``tune`` with ``config.preset`` as the grid's base, then print its table and write
    tune.json into ``config.out``."""
    result = tune(config, base=config.preset, verbose=verbose)
    print(result.table())
    print(f"best by {TUNE_SELECT}: {result.best_config}")
    payload = {"data": config.data, "seed": config.seed, "split": config.split, **result.as_dict()}
    write_json(config.out / TUNE_JSON, payload)
    return result


# ---------------------------------------------------------------------------------------
# seeds


@dataclass(frozen=True)
class SeedsResult:
    preset: str
    seeds: list[int]
    evaluated_on: str
    runs: list[dict[str, Any]]  # per seed: seed, epochs, training seconds, metrics rows
    summary: list[dict[str, Any]]  # per model: mean and std of each metric over seeds

    def table(self) -> str:
        rows = []
        for entry in self.summary:
            row: dict[str, Any] = {"model": entry["model"]}
            for metric in ("rmse", "mae", "ndcg_at_10", "training_seconds"):
                mean, std = entry.get(f"{metric}_mean"), entry.get(f"{metric}_std")
                row[metric] = "n/a" if mean is None else f"{mean:.4f} ± {std:.4f}"
            rows.append(row)
        return _table(rows, ["model", "rmse", "mae", "ndcg_at_10", "training_seconds"])

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


SUMMARISED = (
    "rmse",
    "mae",
    "accuracy",
    "precision_at_10",
    "recall_at_10",
    "ndcg_at_10",
    "coverage_at_10",
    "training_seconds",
)


def summarise(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof=1; 0 for a single seed) per model and metric."""
    by_model: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        by_model.setdefault(str(row["model"]), []).append(row)
    summary = []
    for model, group in by_model.items():
        entry: dict[str, Any] = {"model": model, "n_seeds": len(group)}
        for metric in SUMMARISED:
            values = np.array([r[metric] for r in group if r.get(metric) is not None], "float64")
            if len(values) == 0:
                entry[f"{metric}_mean"] = entry[f"{metric}_std"] = None
                continue
            entry[f"{metric}_mean"] = float(np.mean(values))
            entry[f"{metric}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
        summary.append(entry)
    return summary


def seeds(
    config: Config, seed_list: Sequence[int], dataset: Dataset | None = None, verbose: int = 0
) -> SeedsResult:
    """Train and evaluate ``config``'s preset once per seed, each with its own split."""
    if not seed_list:
        raise ConfigError("give at least one seed, e.g. --seeds 1 2 3")
    dataset = dataset or load_dataset(config.data, config.cache_dir)
    runs: list[dict[str, Any]] = []
    evaluated_on = "test"
    for seed in seed_list:
        seeded = dataclasses.replace(config, seed=int(seed))
        data = split_data(dataset, seeded)
        result = train_split(seeded.model, data, dataset.scale, seed=seeded.seed, verbose=verbose)
        held_out = data.mask(TEST)
        if not held_out.any():
            evaluated_on, held_out = "validation", data.mask(VAL)
        metrics = evaluate(
            config.preset,
            result.model,
            HeldOut(data.rated, data.mask(TRAIN), held_out, dataset.scale, data.timestamps),
            seeded.model,
            seed=seeded.seed,
            training_seconds=result.seconds,
        ).rows
        rows = [m.as_dict() for m in metrics]
        log.info(
            "seed %d: %s RMSE %.4f MAE %.4f (%d epochs, %.0f s)",
            seed,
            evaluated_on,
            rows[0]["rmse"],
            rows[0]["mae"],
            result.epochs_run,
            result.seconds,
        )
        runs.append({"seed": int(seed), "epochs": result.epochs_run, "rows": rows})
    summary = summarise([row for run in runs for row in run["rows"]])
    return SeedsResult(config.preset, [int(s) for s in seed_list], evaluated_on, runs, summary)


def run_seeds(config: Config, seed_list: Sequence[int], verbose: int = 0) -> SeedsResult:
    """``seeds``, then print mean ± std and write seeds.json into ``config.out``."""
    result = seeds(config, seed_list, verbose=verbose)
    print(
        f"preset {result.preset}, seeds {' '.join(map(str, result.seeds))}, "
        f"{result.evaluated_on} set, mean ± std (ddof=1):"
    )
    print(result.table())
    write_json(
        config.out / SEEDS_JSON, {"data": config.data, "split": config.split, **result.as_dict()}
    )
    return result
