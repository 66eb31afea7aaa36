"""``python -m bench warm-start``: what a warm start saves, on a dataset split by time.

Three trainings of one preset, as a weekly job meets them:

1. **before**: the ratings before the ``quantile`` timestamp (the dataset as it was);
2. **cold**: every rating, from scratch;
3. **warm**: every rating, from the *before* run's model (``train --warm-start``).

The split hashes each rating (``job.data.split``), so *before*'s training ratings are never in the
later runs' validation or test sets, and *cold* and *warm* share theirs. The table gives each
run's training time, epochs, validation RMSE (what early stopping judged) and test metrics.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from job.core.config import Config
from job.data.movielens import Dataset, load_dataset
from job.runfolder.manifest import Manifest
from job.stages.train import train_stage

DEFAULT_QUANTILE = 0.9


# The warm run has reached the cold run once its validation RMSE is within this of the cold's.
REACHED_WITHIN = 0.005


@dataclass(frozen=True)
class WarmRow:
    run: str
    train_ratings: int
    epochs: int
    training_seconds: float
    validation_rmse: float
    test_rmse: float
    test_ndcg_at_10: float | None
    epoch_rmse: tuple[float, ...]  # each epoch's validation RMSE (regression presets: val_loss)
    epoch_seconds: tuple[float, ...]  # seconds of fit at each epoch's end

    @classmethod
    def of(cls, run: str, manifest: Manifest) -> WarmRow:
        training: dict[str, Any] = manifest.extra.get("training", {})
        model = manifest.metrics["rows"][0]
        regression = (manifest.config.get("model") or {}).get("output") == "regression"
        return cls(
            run=run,
            train_ratings=manifest.dataset.split["train"],
            epochs=manifest.model.epochs_run,
            training_seconds=manifest.training_seconds,
            validation_rmse=float(training["validation_rmse"]),
            test_rmse=float(model["rmse"]),
            test_ndcg_at_10=model.get("ndcg_at_10"),
            # The unclipped MSE of the centred rating is a regression model's val_loss.
            epoch_rmse=tuple(math.sqrt(row["val_loss"]) for row in manifest.history if regression),
            epoch_seconds=tuple(training.get("epoch_seconds", ())),
        )


def seconds_to_reach(warm: WarmRow, cold: WarmRow) -> float | None:
    """When the warm run's validation RMSE first came within REACHED_WITHIN of the cold
    run's best (None where the preset's val_loss is not a squared error, or it never did)."""
    if not warm.epoch_rmse or not cold.epoch_rmse:
        return None
    target = min(cold.epoch_rmse) + REACHED_WITHIN
    for rmse, seconds in zip(warm.epoch_rmse, warm.epoch_seconds, strict=False):
        if rmse <= target:
            return seconds
    return None


def write_earlier(dataset: Dataset, quantile: float, folder: Path) -> int:
    """A MovieLens folder of ``dataset``'s ratings (and tags) before its ``quantile``
    timestamp, with the whole catalogue; returns that timestamp."""
    cutoff = int(dataset.ratings["timestamp"].quantile(quantile))
    folder.mkdir(parents=True, exist_ok=True)
    ratings = dataset.ratings[dataset.ratings["timestamp"] < cutoff]
    ratings.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        folder / "ratings.csv", index=False
    )
    dataset.movies[["movie_id", "title", "genres"]].rename(columns={"movie_id": "movieId"}).to_csv(
        folder / "movies.csv", index=False
    )
    tags = dataset.tags
    if "timestamp" in tags:
        tags = tags[tags["timestamp"] < cutoff]
    tags.rename(columns={"user_id": "userId", "movie_id": "movieId"}).to_csv(
        folder / "tags.csv", index=False
    )
    return cutoff


def run_warm_bench(
    config: Config, quantile: float = DEFAULT_QUANTILE, verbose: int = 0
) -> list[WarmRow]:
    """Train *before*, *cold* and *warm* under ``config.out``; one row each."""
    dataset = load_dataset(config.data, config.cache_dir)
    earlier = config.out / "earlier-data"
    write_earlier(dataset, quantile, earlier)
    runs = {
        "before": dataclasses.replace(config, data=str(earlier), out=config.out / "before"),
        "cold": dataclasses.replace(config, out=config.out / "cold"),
        "warm": dataclasses.replace(
            config, out=config.out / "warm", warm_start=config.out / "before"
        ),
    }
    return [WarmRow.of(name, train_stage(run, verbose).manifest) for name, run in runs.items()]


def format_table(rows: list[WarmRow]) -> str:
    """The runs side by side, then the warm run against the cold one."""
    shown = [
        {
            k: v
            for k, v in dataclasses.asdict(row).items()
            if k not in ("epoch_rmse", "epoch_seconds")
        }
        for row in rows
    ]
    lines = [pd.DataFrame(shown).to_string(index=False, float_format=lambda x: f"{x:.4f}")]
    by_run = {row.run: row for row in rows}
    if {"cold", "warm"} <= by_run.keys():
        cold, warm = by_run["cold"], by_run["warm"]
        lines.append(
            f"warm against cold: {warm.training_seconds / cold.training_seconds:.2f}x the "
            f"training time, validation RMSE {warm.validation_rmse - cold.validation_rmse:+.4f}"
        )
        reached = seconds_to_reach(warm, cold)
        if reached is not None:
            lines.append(
                f"the warm run was within {REACHED_WITHIN} of the cold run's best validation "
                f"RMSE after {reached:.1f} s of fit, {reached / cold.training_seconds:.2f}x the "
                "cold run's training time"
            )
    return "\n".join(lines)
