"""What makes the job fit large datasets, checked on small ones: the training settings at
scale, and the typed fast path for ratings.csv (same frame as the checked string path)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

import job.data
from job.config import PRESETS, model_config
from job.data import SHIPPED_DIR, _read_csv_layout
from job.synthetic import write_movielens
from job.train import LARGE_TRAINING, MAX_BATCH, training_settings


def test_training_settings_change_nothing_below_the_scale_threshold() -> None:
    for preset in PRESETS.values():
        assert training_settings(preset, 80_000) is preset  # ml-latest-small's train split
        assert training_settings(preset, LARGE_TRAINING - 1) is preset


@pytest.mark.parametrize(("n_train", "batch"), [(8_000_000, 8_192), (20_000_000, MAX_BATCH)])
def test_training_settings_at_scale_grow_the_batch_and_the_learning_rate(
    n_train: int, batch: int
) -> None:
    tuned = model_config("tuned")
    large = training_settings(tuned, n_train)
    assert large.batch_size == batch
    assert large.learning_rate == pytest.approx(
        tuned.learning_rate * math.sqrt(batch / tuned.batch_size)
    )
    assert large.patience == 1 and large.epochs <= 10
    assert (large.side_dim, large.output, large.l2) == (tuned.side_dim, tuned.output, tuned.l2)
    seed = model_config("seed")  # patience 0 stays 0
    assert training_settings(seed, n_train).patience == 0


def _string_path(folder: Path, monkeypatch: pytest.MonkeyPatch) -> pd.DataFrame:
    with monkeypatch.context() as patch:
        patch.setattr(job.data, "_typed_ratings", lambda path: None)
        return _read_csv_layout(folder)[0]


@pytest.mark.parametrize("folder", ["shipped", "synthetic"])
def test_typed_ratings_fast_path_reads_what_the_string_path_reads(
    folder: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = (
        SHIPPED_DIR / "ml-latest-small"
        if folder == "shipped"
        else write_movielens(tmp_path / "data", n_users=20, n_movies=30, per_user=8)
    )
    assert job.data._typed_ratings(path / "ratings.csv") is not None  # the fast path ran
    pd.testing.assert_frame_equal(_read_csv_layout(path)[0], _string_path(path, monkeypatch))


@pytest.mark.parametrize(
    "line", ["abc,10,4.0,1000", "1,10,,1000", "1,10,nan,1000", "1,10.5,4.0,1000", "1,10,4.0"]
)
def test_typed_ratings_leave_anything_unusual_to_the_string_path(line: str, tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "data", n_users=5, n_movies=8, per_user=3)
    path = folder / "ratings.csv"
    lines = path.read_text().splitlines()
    lines[2] = line
    path.write_text("\n".join(lines) + "\n")
    assert job.data._typed_ratings(path) is None
