"""`python -m bench tune` and `python -m bench seeds` on a tiny synthetic dataset."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import bench.tune
import numpy as np
import pytest
from bench.__main__ import main
from bench.tune import TUNE_GRID, grid_points, seeds, summarise, tune
from synth import write_movielens

from job.core.config import PRESETS, TUNE_BASE, build_config, model_config
from job.data.split import TEST

# Over the mlp (quick to build) rather than TUNE_BASE: the search is the same code either way.
TINY_BASE = "seed"
TINY_GRID = {"user_dim": (4, 8), "output": ("regression",)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens(
        tmp_path_factory.mktemp("tune") / "data", n_users=30, n_movies=40, per_user=12
    )


def test_grid_points_cover_every_combination() -> None:
    points = grid_points({"a": (1, 2), "b": ("x", "y", "z")})
    assert len(points) == 6 and points[0] == {"a": 1, "b": "x"} and points[-1] == {"a": 2, "b": "z"}
    assert len(grid_points(TUNE_GRID)) <= 16  # minutes on 2 cores, as documented


def test_tuned_preset_is_a_point_of_the_declared_grid() -> None:
    """`tuned` must be what `tune` can choose: the base preset with one grid point applied."""
    tuned = PRESETS["tuned"]
    assert any(model_config(TUNE_BASE, **point) == tuned for point in grid_points(TUNE_GRID))


def test_tune_never_reads_the_test_ratings(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen_labels: list[np.ndarray] = []
    real_train_split = bench.tune.train_split

    def spy(config: Any, data: Any, *args: Any, **kwargs: Any) -> Any:
        seen_labels.append(data.labels.copy())
        return real_train_split(config, data, *args, **kwargs)

    monkeypatch.setattr(bench.tune, "train_split", spy)
    config = build_config(data=str(folder), preset=TINY_BASE, epochs=2, seed=3)
    result = tune(config, grid=TINY_GRID, base=TINY_BASE)
    assert len(seen_labels) == 2 and not any((labels == TEST).any() for labels in seen_labels)
    assert [row["user_dim"] for row in result.rows] == [4, 8]
    assert result.best is min(result.rows, key=lambda r: r["val_rmse"])
    best_point = {k: result.best[k] for k in TINY_GRID}
    assert result.best_config == dataclasses.replace(
        model_config(TINY_BASE, **best_point), epochs=2
    )
    assert "val_rmse" in result.table().splitlines()[0]


def test_tune_command_writes_tune_json(
    folder: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(bench.tune, "TUNE_GRID", TINY_GRID)
    out = tmp_path / "out"
    assert (
        main(
            [
                "-q",
                "tune",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--preset",
                TINY_BASE,
                "--epochs",
                "1",
            ]
        )
        == 0
    )
    report = json.loads((out / "tune.json").read_text())
    assert report["base"] == TINY_BASE and report["evaluated_on"] == "validation"
    assert len(report["rows"]) == 2 and report["best"] in report["rows"]
    assert "best by val_rmse" in capsys.readouterr().out


def test_seeds_reports_mean_and_spread(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(
            [
                "-q",
                "seeds",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--preset",
                "seed",
                "--epochs",
                "1",
                "--seeds",
                "1",
                "2",
            ]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "±" in printed and "user+movie bias" in printed
    report = json.loads((out / "seeds.json").read_text())
    assert report["seeds"] == [1, 2] and len(report["runs"]) == 2
    model = next(s for s in report["summary"] if s["model"] == "seed")
    rmses = [run["rows"][0]["rmse"] for run in report["runs"]]
    assert model["rmse_mean"] == pytest.approx(np.mean(rmses))
    assert model["rmse_std"] == pytest.approx(np.std(rmses, ddof=1))
    assert rmses[0] != rmses[1]  # each seed its own split and initialisation


def test_seeds_needs_a_seed(folder: Path) -> None:
    from job.core.errors import ConfigError

    with pytest.raises(ConfigError, match="seed"):
        seeds(build_config(data=str(folder)), [])


def test_summarise_skips_missing_values() -> None:
    rows = [
        {"model": "a", "rmse": 1.0, "mae": 0.5, "accuracy": None},
        {"model": "a", "rmse": 3.0, "mae": 0.5, "accuracy": None},
    ]
    (entry,) = summarise(rows)
    assert entry["rmse_mean"] == 2.0 and entry["rmse_std"] == pytest.approx(np.sqrt(2))
    assert entry["accuracy_mean"] is None and entry["n_seeds"] == 2


def test_new_commands_have_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("tune", "seeds"):
        with pytest.raises(SystemExit) as exit_:
            main([command, "--help"])
        assert exit_.value.code == 0
    assert "--seeds" in capsys.readouterr().out
