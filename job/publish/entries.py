"""The site's entry points: ``latest.json`` names the run, ``index.html`` redirects to it.

They only move forward, to a run created later than the one they name, by compare-and-swap
on the ETag just read, and every switch is read back (``job.publish.core`` tells the whole
algorithm).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

from job.core.errors import PublishError
from job.publish.runfiles import redirect_page, run_created
from job.publish.storage import Storage

logger = logging.getLogger(__name__)

# Entry points change with every run: caches must revalidate each time.
ENTRY_CACHE = "no-cache"
INDEX_KEY = "index.html"
LATEST_KEY = "latest.json"
# Rounds of read-compare-write before a switch gives up: each lost round means another
# publisher moved latest.json in between, so this is only reached by a storm of them.
SWITCH_ATTEMPTS = 20


@dataclass(frozen=True, order=True)
class RunRef:
    """A run where the entry points' order needs it: by creation time, then id."""

    created: str  # YYYY-MM-DDTHH:MM:SSZ (UTC), "" when unknown (before any known time)
    run_id: str

    @classmethod
    def of(cls, document: dict[str, Any]) -> RunRef:
        """The run a latest.json or a completion marker names."""
        return cls(run_created(document["run_id"], document.get("created_at")), document["run_id"])


def switch_latest(storage: Storage, ours: RunRef, document: bytes) -> tuple[RunRef, bool]:
    """Make latest.json name our run unless it names a newer one; return the run it names
    and whether we wrote it.

    Read, compare, write on the condition that nothing changed since the read, and read
    back: a lost condition, or a store that ignored it, sends us round again.
    """
    wrote = False
    for _ in range(SWITCH_ATTEMPTS):
        found = storage.read_versioned(LATEST_KEY)
        current = latest_from(storage, found[0]) if found else None
        if current is not None:
            named = RunRef.of(current)
            if named.run_id == ours.run_id:
                return ours, wrote
            if named > ours:
                logger.info("publish: %s names newer run %s", LATEST_KEY, named.run_id)
                return named, wrote
        if storage.put_if(LATEST_KEY, document, ENTRY_CACHE, found[1] if found else None):
            wrote = True
        else:
            logger.info("publish: %s changed since it was read; reading again", LATEST_KEY)
    raise PublishError(
        f"{storage.describe(LATEST_KEY)} changed {SWITCH_ATTEMPTS} times while this publish "
        f"tried to switch it; run {ours.run_id} is uploaded and complete: re-run the same "
        "command to switch"
    )


def sync_index(storage: Storage) -> bool:
    """Make index.html redirect to the run latest.json names, until a read of latest.json
    after the write finds it unchanged; return whether we wrote it."""
    wrote = False
    for _ in range(SWITCH_ATTEMPTS):
        current = read_latest(storage)
        if current is None:
            return wrote
        page = redirect_page(current["run_id"]).encode("utf-8")
        if storage.read(INDEX_KEY) == page:
            return wrote
        storage.put_bytes(INDEX_KEY, page, ENTRY_CACHE)
        wrote = True
    raise PublishError(
        f"{storage.describe(LATEST_KEY)} changed {SWITCH_ATTEMPTS} times while this publish "
        "wrote index.html after it; re-run the same command"
    )


def read_latest(storage: Storage) -> dict[str, Any] | None:
    """The current latest.json, or None when there is none (or it is not ours)."""
    body = storage.read(LATEST_KEY)
    return None if body is None else latest_from(storage, body)


def latest_from(storage: Storage, body: bytes) -> dict[str, Any] | None:
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is not JSON; replacing it", storage.describe(LATEST_KEY))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        return None
    return data
