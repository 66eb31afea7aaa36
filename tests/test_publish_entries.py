"""job.publish.entries: latest.json only moves forward, index.html follows it."""

from __future__ import annotations

import json
from pathlib import Path

from job.publish.entries import (
    INDEX_KEY,
    LATEST_KEY,
    RunRef,
    read_latest,
    switch_latest,
    sync_index,
)
from job.publish.local import LocalStorage
from job.publish.runfiles import redirect_page

OLD = RunRef.of({"run_id": "20270101T000000Z-a"})  # created when its id says
NEW = RunRef.of({"run_id": "20270102T000000Z-b"})


def document(run: RunRef) -> bytes:
    return json.dumps({"run_id": run.run_id}).encode()


def test_latest_moves_to_a_newer_run_and_never_back(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert switch_latest(storage, OLD, document(OLD)) == (OLD, True)
    assert switch_latest(storage, NEW, document(NEW)) == (NEW, True)
    assert switch_latest(storage, OLD, document(OLD)) == (NEW, False)
    assert switch_latest(storage, NEW, document(NEW)) == (NEW, False)  # already named
    latest = read_latest(storage)
    assert latest is not None and latest["run_id"] == NEW.run_id


def test_index_follows_latest_and_is_written_once(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    assert sync_index(storage) is False  # no latest.json: nothing to follow
    switch_latest(storage, NEW, document(NEW))
    assert sync_index(storage) is True
    assert storage.read(INDEX_KEY) == redirect_page(NEW.run_id).encode()
    assert sync_index(storage) is False


def test_a_latest_that_is_not_ours_reads_as_none(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    storage.put_bytes(LATEST_KEY, b"not json", "")
    assert read_latest(storage) is None
    storage.put_bytes(LATEST_KEY, b'{"run": 1}', "")
    assert read_latest(storage) is None
