"""What each stage checks before it starts: a table, one line per refusal, the manifest read once."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from job.core.errors import JobError
from job.runfolder.manifest import read_manifest
from job.runfolder.preflight import CHECKS, STAGES, require, require_new_run


def test_every_stage_after_train_has_checks() -> None:
    assert STAGES[0] == "train" and set(STAGES[1:]) == set(CHECKS)
    assert all(CHECKS[stage] for stage in CHECKS)
    with pytest.raises(ValueError, match="unknown stage 'train'"):
        require(Path("."), "train")


def test_require_returns_the_manifest_it_read(tiny_run: Path) -> None:
    assert require(tiny_run, "recommend") == read_manifest(tiny_run)


@pytest.mark.parametrize("stage", sorted(CHECKS))
def test_no_folder_no_run(stage: str, tmp_path: Path) -> None:
    with pytest.raises(JobError) as info:
        require(tmp_path / "missing", stage)
    assert str(info.value).startswith(f"{tmp_path / 'missing'}: no trained run here")


def test_a_truncated_model_is_named_with_its_fix(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    model = out / "model.keras"
    model.write_bytes(model.read_bytes()[:100])
    with pytest.raises(JobError) as info:
        require(out, "score")
    line = str(info.value)
    assert line.startswith(f"{model}: damaged") and "python -m job train" in line
    assert "\n" not in line


def test_merge_needs_parts_render_needs_the_database(tiny_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    with pytest.raises(JobError, match="no scored parts"):
        require(out, "merge")
    with pytest.raises(JobError, match=r"recommendations\.duckdb: missing"):
        require(out, "render")


def test_a_new_run_needs_a_folder_it_can_write(tmp_path: Path) -> None:
    require_new_run(tmp_path / "new" / "out")  # not made yet: its nearest parent is writable
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(JobError, match="not a folder"):
        require_new_run(blocker / "out")
