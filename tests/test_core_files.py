"""Atomic writes, dead temporaries, one-line disk errors and JSON reads (job.core.files)."""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from job.core.errors import JobError
from job.core.files import (
    atomic_path,
    atomic_write_text,
    disk_error,
    read_json,
    remove_dead_temporaries,
    retire,
    write_json,
)


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    atomic_write_text(path, "old")
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("writer failed")
    assert path.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_a_folder_is_swapped_whole(tmp_path: Path) -> None:
    folder = tmp_path / "site"
    for text in ("one", "two"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "index.html").write_text(text)
    assert (folder / "index.html").read_text() == "two"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["site"]


def test_only_dead_writers_temporaries_are_removed(tmp_path: Path) -> None:
    # A temporary named by a process that has exited (its pid is free now) is dead; ours is not.
    child = subprocess.run(
        [sys.executable, "-c", "from job.core.files import _owner_tag; print(_owner_tag())"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )
    dead = tmp_path / f".a.txt.{child.stdout.strip()}0000.tmp.txt"
    dead.write_text("x")
    with atomic_path(tmp_path / "b.txt") as alive:
        alive.write_text("y")
        assert remove_dead_temporaries(tmp_path) == [dead]
        assert alive.exists()


def test_retire_moves_a_tree_out_of_the_way(tmp_path: Path) -> None:
    (tmp_path / "parts").mkdir()
    (tmp_path / "parts" / "x").write_text("x")
    moved = retire(tmp_path / "parts")
    assert moved is not None and moved.name.startswith(".parts.") and (moved / "x").exists()
    assert retire(tmp_path / "parts") is None


def test_disk_errors_become_one_line_naming_the_folder(tmp_path: Path) -> None:
    error = disk_error(OSError(errno.ENOSPC, "No space left on device"), tmp_path)
    assert error is not None and str(error).startswith(f"{tmp_path}: cannot write (no space")
    assert disk_error(ValueError("not a disk error"), tmp_path) is None


def test_json_round_trip_and_refusals(tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    write_json(path, {"a": [1, 2], "p": Path("/p")})
    assert read_json(path) == {"a": [1, 2], "p": "/p"}
    with pytest.raises(JobError, match=re.escape(f"{tmp_path / 'no.json'}: not found; remake it")):
        read_json(tmp_path / "no.json", "remake it")
    path.write_text("{")
    with pytest.raises(JobError, match=r"x\.json"):
        read_json(path)
