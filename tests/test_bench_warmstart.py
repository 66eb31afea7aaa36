"""bench-warm-start: the earlier folder holds exactly the ratings before the cut; the three
runs train, the warm one from the earlier one, and the table compares warm with cold."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from bench.warmstart import WarmRow, format_table, run_warm_bench, seconds_to_reach, write_earlier
from synth import write_movielens

from job.core.config import build_config
from job.data.movielens import load_dataset


def test_the_earlier_folder_is_the_ratings_before_the_quantile(tmp_path: Path) -> None:
    data = write_movielens(tmp_path / "data", n_users=30, n_movies=40, per_user=10, seed=1)
    dataset = load_dataset(str(data), tmp_path / "cache")
    cutoff = write_earlier(dataset, 0.75, tmp_path / "earlier")
    earlier = load_dataset(str(tmp_path / "earlier"), tmp_path / "cache")

    stamps = dataset.ratings["timestamp"].to_numpy()
    assert cutoff == int(np.quantile(stamps, 0.75))
    expected = dataset.ratings[stamps < cutoff].reset_index(drop=True)
    got = earlier.ratings.reset_index(drop=True)
    assert got[["user_id", "movie_id", "timestamp"]].equals(
        expected[["user_id", "movie_id", "timestamp"]]
    )
    np.testing.assert_allclose(got["rating"], expected["rating"])
    assert earlier.movies["movie_id"].tolist() == dataset.movies["movie_id"].tolist()


def test_three_runs_and_the_warm_one_starts_from_the_earlier(tmp_path: Path) -> None:
    data = write_movielens(tmp_path / "data", n_users=30, n_movies=40, per_user=10, seed=2)
    config = build_config(data=str(data), out=tmp_path / "bench", preset="seed", epochs=2)
    rows = run_warm_bench(config, 0.8)

    assert [row.run for row in rows] == ["before", "cold", "warm"]
    before, cold, warm = rows
    assert before.train_ratings < cold.train_ratings == warm.train_ratings
    assert cold.validation_rmse > 0 and warm.validation_rmse > 0
    manifests = {
        run: json.loads((tmp_path / "bench" / run / "run.json").read_text())
        for run in ("before", "warm")
    }
    assert manifests["warm"]["warm_start"]["from_run"] == manifests["before"]["run_id"]
    table = format_table(rows)
    assert "warm against cold:" in table and "validation RMSE" in table


def _row(run: str, rmse: tuple[float, ...], seconds: tuple[float, ...]) -> WarmRow:
    return WarmRow(
        run, 100, len(rmse), sum(seconds), min(rmse, default=0.9), 0.9, None, rmse, seconds
    )


def test_seconds_to_reach_is_the_first_epoch_within_the_margin_of_the_cold_best() -> None:
    cold = _row("cold", (0.95, 0.90, 0.86, 0.87), (3.0, 5.0, 7.0, 9.0))
    assert seconds_to_reach(_row("warm", (0.88, 0.864, 0.87), (2.5, 4.0, 5.5)), cold) == 4.0
    assert seconds_to_reach(_row("warm", (0.85,), (2.0,)), cold) == 2.0
    assert seconds_to_reach(_row("warm", (0.9, 0.88), (2.0, 3.0)), cold) is None
    assert seconds_to_reach(_row("warm", (), ()), cold) is None  # no squared-error val_loss
