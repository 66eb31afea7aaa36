"""Warm starts: rows carried over by raw id and by genre and tag name (against a brute-force
loop), new ids left fresh, other shapes and scales refused, damaged previous runs one line."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from hardening import one_error_line, truncate
from publish_support import restored_logging

from job.cli import main
from job.core.config import PRESETS, model_config
from job.core.errors import JobError
from job.data.features import IdEncoding, SideFeatures
from job.data.movielens import HALF_STARS, WHOLE_STARS
from job.models.rating import build_model
from job.stages.warmstart import (
    PreviousRun,
    carry_over,
    check_scale,
    check_shape,
    describe,
    matching_rows,
)


def test_matching_rows_is_a_lookup_by_key() -> None:
    rng = np.random.default_rng(0)
    before = np.unique(rng.integers(0, 200, 80))
    after = rng.permutation(np.unique(rng.integers(0, 200, 90)))
    new_rows, old_rows = matching_rows(before, after)
    expected = [
        (i, int(np.flatnonzero(before == key)[0])) for i, key in enumerate(after) if key in before
    ]
    assert list(zip(new_rows.tolist(), old_rows.tolist(), strict=True)) == expected
    assert [len(a) for a in matching_rows(np.array([], "int64"), after)] == [0, 0]


def _side(n_movies: int, genres: list[str], tags: list[str]) -> SideFeatures:
    rng = np.random.default_rng(n_movies)
    return SideFeatures(
        genres=(rng.random((n_movies, len(genres))) < 0.5).astype("float32"),
        years=np.zeros((n_movies, 2), "float32"),
        tags=np.full((n_movies, len(tags)), 1 / len(tags), "float32"),
        genre_names=tuple(genres),
        tag_names=tuple(tags),
    )


def _weights(model: object) -> dict[str, list[np.ndarray]]:
    return {
        layer.name: [w.copy() for w in layer.get_weights()]
        for layer in model._flatten_layers(include_self=False, recursive=False)  # type: ignore[attr-defined]
    }


@pytest.mark.parametrize("preset", ["seed", "dlrm"])
def test_carry_over_copies_known_rows_and_keeps_new_ones_fresh(preset: str) -> None:
    config = PRESETS[preset]
    before = IdEncoding(np.array([10, 20, 30, 40]), np.array([1, 2, 3]))
    after = IdEncoding(np.array([20, 40, 50]), np.array([1, 3, 4, 5]))
    old_side = _side(3, ["Action", "Drama"], ["funny", "sad"])
    new_side = _side(4, ["Action", "Comedy", "Drama"], ["sad", "slow"])
    dlrm = config.architecture == "dlrm"
    old = build_model(config, 4, 3, 3.5, seed=1, side=old_side if dlrm else None)
    new = build_model(config, 3, 4, 3.6, seed=2, side=new_side if dlrm else None)
    fresh, previous = _weights(new), _weights(old)

    carry_over(PreviousRun(Path("prev"), "r1", old, before), new, after)
    got = _weights(new)

    def by_key(name: str, old_keys: list, new_keys: list) -> np.ndarray:
        rows = []
        for i, key in enumerate(new_keys):  # the brute-force answer, one row at a time
            rows.append(
                previous[name][0][old_keys.index(key)] if key in old_keys else fresh[name][0][i]
            )
        return np.stack(rows)

    users, movies = before.user_ids.tolist(), before.movie_ids.tolist()
    for name, layer in got.items():
        if name in ("user_embedding", "user_bias"):
            np.testing.assert_array_equal(layer[0], by_key(name, users, after.user_ids.tolist()))
        elif name in ("movie_embedding", "movie_bias"):
            np.testing.assert_array_equal(layer[0], by_key(name, movies, after.movie_ids.tolist()))
        elif name == "genre_embedding":
            expected = by_key(name, list(old_side.genre_names), list(new_side.genre_names))
            np.testing.assert_array_equal(layer[0], expected)
        elif name == "tag_embedding":
            expected = by_key(name, list(old_side.tag_names), list(new_side.tag_names))
            np.testing.assert_array_equal(layer[0], expected)
        else:
            for mine, theirs in zip(layer, previous[name], strict=True):
                np.testing.assert_array_equal(mine, theirs)
    # The side-feature tables are this run's data, not carried over.
    if dlrm:
        np.testing.assert_array_equal(np.asarray(new.genre_table), new_side.genres)
    facts = describe(PreviousRun(Path("prev"), "r1", old, before), after)
    assert (facts.known_users, facts.new_users, facts.known_movies, facts.new_movies) == (
        2,
        1,
        2,
        2,
    )


def test_another_shape_or_scale_is_refused_in_one_line() -> None:
    encoding = IdEncoding(np.array([1, 2]), np.array([1, 2, 3]))
    old = build_model(PRESETS["seed"], 2, 3, 3.5, seed=1)
    previous = PreviousRun(Path("prev"), "r1", old, encoding)
    check_shape(previous, model_config("seed", epochs=3, learning_rate=0.01))  # not shapes
    with pytest.raises(
        JobError,
        match=r"prev/model.keras: a model of another shape \(architecture mlp there, dlrm here",
    ):
        check_shape(previous, PRESETS["dlrm"])
    with pytest.raises(JobError, match="user_dim 8 there, 32 here"):
        check_shape(previous, model_config("seed", user_dim=32))

    classes = model_config("seed", output="classes")
    old = build_model(classes, 2, 3, 3.5, seed=1, scale=HALF_STARS)
    previous = PreviousRun(Path("prev"), "r1", old, encoding)
    check_scale(previous, classes, HALF_STARS)
    with pytest.raises(JobError, match=r"its classes are the ratings \[0.5, 1.0"):
        check_scale(previous, classes, WHOLE_STARS)


def _train(argv: list[str]) -> int:
    with restored_logging():
        return main(["-q", "train", *argv])


def test_train_warm_starts_from_a_run_folder(tiny_run: Path, tmp_path: Path) -> None:
    data = tiny_run.parent / "data"
    out = tmp_path / "warm"
    argv = ["--data", str(data), "--preset", "seed", "--epochs", "1", "--out", str(out)]
    assert _train([*argv, "--warm-start", str(tiny_run)]) == 0
    manifest = json.loads((out / "run.json").read_text())
    before = json.loads((tiny_run / "run.json").read_text())
    assert manifest["warm_start"] == {
        "from_run": before["run_id"],
        "known_users": before["dataset"]["n_users"],
        "new_users": 0,
        "known_movies": before["dataset"]["n_movies"],
        "new_movies": 0,
    }
    assert manifest["config"]["warm_start"] == str(tiny_run)
    assert manifest["training"]["validation_rmse"] > 0


def _without(name: str) -> Callable[[Path], None]:
    return lambda run: (run / name).unlink()


@pytest.mark.parametrize(
    ("case", "damage", "message"),
    [
        ("no folder", lambda run: shutil.rmtree(run), "no run to start from (no such folder)"),
        ("no run.json", _without("run.json"), "no run to start from (no run.json)"),
        ("no model", _without("model.keras"), "model.keras: missing"),
        ("truncated model", lambda run: truncate(run / "model.keras"), "not a whole Keras archive"),
        (
            "another run's encoding",
            lambda run: (run / "encoding.json").write_text('{"user_ids": [1], "movie_ids": [2]}'),
            "1 users and 1 movies, but run.json says",
        ),
    ],
)
def test_a_damaged_previous_run_is_one_line_and_writes_nothing(
    case: str,
    damage: object,
    message: str,
    tiny_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    previous = tmp_path / "previous"
    shutil.copytree(tiny_run, previous)
    damage(previous)  # type: ignore[operator]
    out = tmp_path / "out"
    argv = ["--data", str(tiny_run.parent / "data"), "--preset", "seed", "--out", str(out)]
    assert _train([*argv, "--warm-start", str(previous)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert message in line and "--warm-start" in line, case
    assert not out.exists()


def test_a_previous_run_of_another_preset_is_refused_before_training(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    argv = ["--data", str(tiny_run.parent / "data"), "--preset", "dlrm", "--out", str(out)]
    assert _train([*argv, "--warm-start", str(tiny_run)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert "a model of another shape (architecture mlp there, dlrm here" in line
    assert not out.exists()
