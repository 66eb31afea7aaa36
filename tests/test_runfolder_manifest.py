"""run.json, typed: a round trip, refusals that name the file and the fix, one write per stage."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from job.core.config import Config
from job.core.errors import JobError
from job.data.movielens import HALF_STARS
from job.runfolder.manifest import (
    RUN_FORMAT,
    DatasetInfo,
    Manifest,
    ModelInfo,
    StageRecord,
    read_manifest,
    train_command,
    with_stage,
    write_manifest,
)


def manifest(**config: object) -> Manifest:
    return Manifest(
        run_id="20260101T000000Z-abcdef12",
        created_at="2026-01-01T00:00:00+00:00",
        dataset=DatasetInfo("tiny", "0" * 64, 3, 4, 4, 9, HALF_STARS, {"train": 9}),
        config=dict(config),
        model=ModelInfo("seed", 10, ["user_embedding: Embedding(3, 8)"], 2, 3.5),
        history=[{"epoch": 1, "loss": 1.0}],
        versions={"python": "3.11"},
        metrics={"evaluated_on": "test", "rows": []},
        training_seconds=1.5,
    )


def test_round_trip_keeps_every_field_and_extra_keys(tmp_path: Path) -> None:
    written = with_stage(manifest(preset="seed"), "merge", 1.23456, merged_rows={"top_k": 5})
    write_manifest(tmp_path, written)
    raw = json.loads((tmp_path / "run.json").read_text())
    assert raw["format"] == RUN_FORMAT and raw["merged_rows"] == {"top_k": 5}
    assert raw["timings"] == {"merge": 1.235}
    assert read_manifest(tmp_path) == written


@pytest.mark.parametrize(
    ("change", "says"),
    [
        ({"format": 1}, "written by another version"),
        ({"run_id": ""}, "incomplete or damaged manifest"),
        ({"config": []}, "incomplete or damaged manifest"),
    ],
)
def test_refusals_name_the_file_and_the_fix(tmp_path: Path, change: dict, says: str) -> None:
    raw = {**manifest().to_dict(), **change}
    (tmp_path / "run.json").write_text(json.dumps(raw, default=str))
    with pytest.raises(JobError) as info:
        read_manifest(tmp_path)
    assert str(info.value).startswith(f"{tmp_path / 'run.json'}: ") and says in str(info.value)
    assert f"python -m job train --out {tmp_path}" in str(info.value)


def test_stage_record_is_written_once_with_the_stage_time(tmp_path: Path) -> None:
    before = manifest()
    write_manifest(tmp_path, before)
    StageRecord(before, {"scoring": {"shards": 2}}).write(tmp_path, "render", 2.0)
    after = read_manifest(tmp_path)
    assert after.timings == {"render": 2.0} and after.extra == {"scoring": {"shards": 2}}
    assert dataclasses.replace(after, timings={}, extra={}) == before


def test_ranker_is_a_typed_field() -> None:
    assert manifest(model={"ranker": "ease"}).ranker == "ease"
    assert manifest().ranker == "rating"  # runs that predate the choice
    with pytest.raises(JobError, match="unknown ranker 'best'"):
        _ = manifest(model={"ranker": "best"}).ranker


def test_train_command_names_only_what_differs_from_configs_defaults() -> None:
    out = Path("/r")
    defaults = {f.name: f.default for f in dataclasses.fields(Config)}
    same = manifest(
        data="d", preset="seed", seed=7, test_fraction=defaults["test_fraction"], split="random"
    )
    assert (
        train_command(out, same)
        == "run `python -m job train --out /r --data d --preset seed --seed 7`"
    )
    other = manifest(preset="seed", test_fraction=0.2, split="temporal", model={"epochs": 3})
    command = train_command(out, other)
    assert "--epochs 3" in command and "--test-fraction 0.2" in command
    assert "--split temporal" in command and "--val-fraction" not in command
    assert train_command(out) == "run `python -m job train --out /r`"
