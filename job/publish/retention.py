"""The runs stored under ``runs/``: which are complete (their marker is there), and which
``--keep-runs`` removes.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from job.core.errors import PublishRefused
from job.publish.entries import LATEST_KEY, RunRef, latest_from, read_latest
from job.publish.runfiles import run_created
from job.publish.storage import Storage

logger = logging.getLogger(__name__)

RUNS = "runs/"
# Written under runs/RUN_ID/ after every other object of the run is stored.
MARKER = "published.json"
# A run without its marker, written to within this long, may be another publisher's upload.
# (An hour: far longer than a stall between two objects of an upload, and any clock skew.)
STALE_AFTER = 3600.0


@dataclass(frozen=True)
class StoredRun:
    """A folder under runs/: complete (its marker is there) or not; for an incomplete one,
    when its newest object was written."""

    run: RunRef
    complete: bool
    last_modified: float | None = None
    marker: dict[str, Any] | None = field(default=None, compare=False)  # a complete run's


def refuse_without_room(storage: Storage, ours: RunRef, named: RunRef, keep_runs: int) -> None:
    """Refuse, before uploading anything, a run that pruning would remove at once: older than
    the run the entry points name, with ``keep_runs`` complete runs newer than it."""
    if not named > ours:
        return
    runs = stored_runs(storage)
    newer = [r.run.run_id for r in runs if r.complete and r.run > ours]
    if len(newer) < keep_runs:
        return
    # What is stored of this run (a killed attempt's part, or a copy beyond --keep-runs) can
    # never be named now: it goes, as pruning would take it.
    leftover = any(r.run.run_id == ours.run_id for r in runs)
    if leftover:
        storage.delete(f"{RUNS}{ours.run_id}/{MARKER}")
        storage.delete(f"{RUNS}{ours.run_id}/")
    raise PublishRefused(
        f"refused: run {ours.run_id} (created {ours.created or 'at an unknown time'}) is "
        f"older than run {named.run_id} that {storage.describe(LATEST_KEY)} names, and "
        f"--keep-runs {keep_runs} keeps only newer runs; nothing was uploaded"
        + (", and the copy of it already stored was removed" if leftover else "")
    )


def stored_runs(storage: Storage) -> list[StoredRun]:
    """Every folder under runs/, complete or not (one read of its marker each)."""
    runs = []
    for run_id in storage.list_folders(RUNS):
        prefix = f"{RUNS}{run_id}/"
        body = storage.read(prefix + MARKER)
        marker = None if body is None else latest_from(storage, body)
        if marker is not None and marker["run_id"] == run_id:
            runs.append(StoredRun(RunRef.of(marker), complete=True, marker=marker))
        else:
            ref = RunRef(run_created(run_id, None), run_id)
            runs.append(StoredRun(ref, complete=False, last_modified=storage.last_modified(prefix)))
    return runs


def prune_runs(storage: Storage, keep_runs: int, now: float) -> list[str]:
    """Delete what ``runs_to_remove`` says; return the ids removed."""
    # Read latest.json now, not before the upload: it only ever moves to newer runs, so
    # whatever is older than the run it names now can never be named again.
    current = read_latest(storage)
    if current is None:
        return []
    removed = runs_to_remove(stored_runs(storage), keep_runs, RunRef.of(current), now)
    for old in removed:
        prefix = f"{RUNS}{old}/"
        storage.delete(prefix + MARKER)  # first: half removed, the run is incomplete
        storage.delete(prefix)
        logger.info("publish: removed old run %s", storage.describe(prefix))
    return removed


def runs_to_remove(
    runs: Sequence[StoredRun],
    keep_runs: int,
    named: RunRef,
    now: float,
    stale_after: float = STALE_AFTER,
) -> list[str]:
    """The runs pruning removes, oldest first: complete runs beyond the newest ``keep_runs``
    complete ones, and incomplete runs untouched for ``stale_after`` seconds; in both cases
    only runs created before ``named``, the run latest.json names."""
    newest_complete = sorted((r.run for r in runs if r.complete), reverse=True)[:keep_runs]
    removed = []
    for stored in sorted(runs, key=lambda r: r.run):
        if stored.run >= named:
            continue  # the named run, and runs that may yet become latest
        if stored.complete:
            if stored.run not in newest_complete:
                removed.append(stored.run.run_id)
        elif stored.last_modified is not None and now - stored.last_modified > stale_after:
            removed.append(stored.run.run_id)
    return removed
