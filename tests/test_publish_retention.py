"""job.publish.retention: which stored runs are complete, and which --keep-runs removes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from job.core.errors import PublishRefused
from job.publish.entries import RunRef
from job.publish.local import LocalStorage
from job.publish.retention import (
    MARKER,
    STALE_AFTER,
    StoredRun,
    refuse_without_room,
    runs_to_remove,
    stored_runs,
)

# The pure rule of --keep-runs: which stored runs go.


def stored(run_id: str, complete: bool = True, last_modified: float | None = None) -> StoredRun:
    return StoredRun(RunRef(run_id[:16], run_id), complete, last_modified)


RECENT, STALE = 1000.0, 1000.0 - STALE_AFTER - 1  # last writes, seen at time 1000


@pytest.mark.parametrize(
    ("runs", "keep", "named", "removed"),
    [
        # Complete runs beyond the newest N go, oldest first ...
        ([stored("20270101T000000Z-a"), stored("20270102T000000Z-b")], 1, "20270102T000000Z-b",
         ["20270101T000000Z-a"]),
        # ... but never the named run nor a newer one, even beyond N: it may yet be named.
        ([stored("20270101T000000Z-a"), stored("20270102T000000Z-b"),
          stored("20270103T000000Z-c")], 1, "20270101T000000Z-a", []),
        ([stored("20270101T000000Z-a"), stored("20270102T000000Z-b"),
          stored("20270103T000000Z-c")], 1, "20270102T000000Z-b", ["20270101T000000Z-a"]),
        ([stored("20270101T000000Z-a"), stored("20270102T000000Z-b"),
          stored("20270103T000000Z-c")], 2, "20270103T000000Z-c", ["20270101T000000Z-a"]),
        # An incomplete older run: kept while recent (someone may be uploading it) ...
        ([stored("20270101T000000Z-a", False, RECENT), stored("20270102T000000Z-b")], 1,
         "20270102T000000Z-b", []),
        # ... removed once stale; an incomplete newer one never, stale or not.
        ([stored("20270101T000000Z-a", False, STALE), stored("20270102T000000Z-b"),
          stored("20270103T000000Z-c", False, STALE)], 1, "20270102T000000Z-b",
         ["20270101T000000Z-a"]),
    ],
)  # fmt: skip
def test_runs_to_remove(runs: list[StoredRun], keep: int, named: str, removed: list[str]) -> None:
    assert runs_to_remove(runs, keep, RunRef(named[:16], named), now=1000.0) == removed


def marker(run_id: str) -> bytes:
    return json.dumps({"run_id": run_id}).encode()


def test_stored_runs_are_complete_only_with_their_own_marker(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes(f"runs/20270101T000000Z-a/{MARKER}", marker("20270101T000000Z-a"), "")
    storage.put_bytes("runs/20270102T000000Z-b/index.html", b"<p>", "")
    storage.put_bytes(f"runs/20270103T000000Z-c/{MARKER}", marker("20270101T000000Z-a"), "")
    found = {r.run.run_id: r.complete for r in stored_runs(storage)}
    assert found == {
        "20270101T000000Z-a": True,
        "20270102T000000Z-b": False,
        "20270103T000000Z-c": False,  # a marker naming another run stands for nothing
    }


def test_an_older_run_without_room_is_refused_and_its_copy_removed(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    newer = "20270102T000000Z-b"
    storage.put_bytes(f"runs/{newer}/{MARKER}", marker(newer), "")
    ours = RunRef.of({"run_id": "20270101T000000Z-a"})
    storage.put_bytes(f"runs/{ours.run_id}/index.html", b"<p>", "")
    with pytest.raises(PublishRefused, match="keeps only newer runs; nothing was uploaded, and"):
        refuse_without_room(storage, ours, RunRef.of({"run_id": newer}), keep_runs=1)
    assert [r.run.run_id for r in stored_runs(storage)] == [newer]
    refuse_without_room(storage, ours, RunRef.of({"run_id": newer}), keep_runs=2)  # room: no error
