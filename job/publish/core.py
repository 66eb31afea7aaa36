"""The publishing algorithm, written once over ``Storage`` (S3 or a local folder).

1. Collect the run's files with their checksums.
2. Upload those missing or changed under ``runs/RUN_ID/`` (immutable, long cache): a re-run
   compares a listing's ETags and sizes and sends only the difference.
3. Write ``index.html``, then ``latest.json`` (no-cache), only when every run object is in
   place: a reader sees the previous run or the new one, never half of one.
4. With ``keep_runs``, delete the oldest runs, never the one ``latest.json`` names.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from job.errors import PublishError
from job.progress import progress
from job.publish.runfiles import (
    LocalFile,
    collect_files,
    latest_document,
    read_run_id,
    redirect_page,
)
from job.publish.storage import Storage
from job.publish.target import parse_target, resolve_endpoint_url

logger = logging.getLogger(__name__)

# Immutable run objects: a run id never changes content, so browsers and CDNs may keep them.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# Entry points change with every run: caches must revalidate each time.
ENTRY_CACHE = "no-cache"
INDEX_KEY = "index.html"
LATEST_KEY = "latest.json"
RUNS = "runs/"


@dataclass(frozen=True)
class PublishSummary:
    """What a publish did, for the CLI's last line and for the workflow's job summary."""

    run_id: str
    target: str  # s3://bucket/prefix or the folder
    url: str  # the entry page a browser opens
    objects: int  # objects of the run: uploaded + skipped
    uploaded: int  # run objects sent this time
    skipped: int  # run objects already stored unchanged
    bytes_total: int
    bytes_uploaded: int  # of the run objects
    seconds: float
    entry_points_written: bool  # False on a re-run that found them already pointing here
    removed_runs: tuple[str, ...] = ()
    puts: int = 0  # write requests, entry points and retries included (what a store bills)

    def describe(self) -> str:
        """One line: objects, bytes, seconds, URL."""
        removed = f", removed {len(self.removed_runs)} old run(s)" if self.removed_runs else ""
        entry = "entry points updated" if self.entry_points_written else "entry points unchanged"
        return (
            f"published run {self.run_id}: {self.objects} objects "
            f"({self.uploaded} uploaded, {self.skipped} unchanged, {entry}), "
            f"{_human_bytes(self.bytes_uploaded)} of {_human_bytes(self.bytes_total)} sent "
            f"in {self.seconds:.1f} s, {self.puts} PUTs{removed} -> {self.url}"
        )


def publish(
    out_dir: Path,
    target: str,
    *,
    endpoint_url: str | None = None,
    keep_runs: int | None = None,
    max_concurrency: int = 32,
    max_attempts: int | None = None,
) -> PublishSummary:
    """Publish OUT's site, database, Parquet files and run.json, then the entry points.

    Args:
        out_dir: a finished run's out folder (has run.json, recommendations.duckdb, site/).
        target: ``s3://BUCKET/PREFIX``, ``file:///path`` or a folder path.
        endpoint_url: an S3-compatible endpoint (MinIO, R2, Ceph ...); defaults to
            ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL``, else AWS S3.
        keep_runs: keep only the newest N runs under ``runs/`` (never the one
            ``latest.json`` points to); None keeps every run. At least 1: validated once,
            by ``job.config.PublishOptions``, as the CLI passes it.
        max_concurrency: parallel uploads.
        max_attempts: attempts per request, retries included; defaults to
            ``AWS_MAX_ATTEMPTS`` or 10.

    Returns:
        A PublishSummary (objects, bytes, PUTs, seconds, URL).

    Raises:
        PublishError: bad out folder or target, or the store refused or failed; when it
            fails, the entry points were not touched and the previous run still serves.
    """
    if max_concurrency < 1:
        raise PublishError(f"max_concurrency must be at least 1 (got {max_concurrency})")
    parsed = parse_target(target)
    started = time.monotonic()
    run_id = read_run_id(Path(out_dir))
    files = collect_files(Path(out_dir))
    storage: Storage
    if parsed.kind == "s3":
        from job.publish.s3 import S3Storage

        storage = S3Storage(
            parsed,
            endpoint_url=resolve_endpoint_url(endpoint_url),
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
    else:
        from job.publish.local import LocalStorage

        assert parsed.path is not None
        storage = LocalStorage(parsed.path)
    summary = publish_run(storage, run_id, files, keep_runs=keep_runs, started=started)
    logger.info("%s", summary.describe())
    return summary


def publish_run(
    storage: Storage,
    run_id: str,
    files: list[LocalFile],
    *,
    keep_runs: int | None = None,
    started: float | None = None,
) -> PublishSummary:
    """Steps 2-4 of the module docstring on any storage."""
    started = time.monotonic() if started is None else started
    storage.check()
    previous = read_latest(storage)
    if previous:
        logger.info(
            "publish: %s points to run %s", storage.describe(LATEST_KEY), previous["run_id"]
        )
    uploaded, sent = upload_run(storage, run_id, files)

    # Entry points last, latest.json very last: only now is every run object in place.
    page = redirect_page(run_id).encode("utf-8")
    same_run = previous is not None and previous["run_id"] == run_id
    entry_written = not (same_run and storage.read(INDEX_KEY) == page)
    if entry_written:
        latest = json.dumps(latest_document(run_id, files, _now_iso()), indent=2) + "\n"
        storage.put_bytes(INDEX_KEY, page, ENTRY_CACHE)
        storage.put_bytes(LATEST_KEY, latest.encode("utf-8"), ENTRY_CACHE)

    removed = prune_runs(storage, run_id, keep_runs) if keep_runs is not None else []
    return PublishSummary(
        run_id=run_id,
        target=storage.describe(),
        url=storage.url(INDEX_KEY),
        objects=len(files),
        uploaded=uploaded,
        skipped=len(files) - uploaded,
        bytes_total=sum(f.size for f in files),
        bytes_uploaded=sent,
        seconds=time.monotonic() - started,
        entry_points_written=entry_written,
        removed_runs=tuple(removed),
        puts=storage.puts,
    )


def upload_run(storage: Storage, run_id: str, files: list[LocalFile]) -> tuple[int, int]:
    """Upload what is missing or changed; return (objects uploaded, bytes uploaded)."""
    run_prefix = f"{RUNS}{run_id}/"
    existing = storage.list_objects(run_prefix)
    todo = [
        (run_prefix + f.rel, f)
        for f in files
        if existing.get(run_prefix + f.rel) != (f.etag, f.size)
    ]
    logger.info(
        "publish: %d of %d objects to upload to %s (%d unchanged)",
        len(todo),
        len(files),
        storage.describe(run_prefix),
        len(files) - len(todo),
    )
    if not todo:
        return 0, 0
    total = sum(f.size for _, f in todo)
    lock = threading.Lock()  # the transfer manager reports from its worker threads
    with progress(total, "publish", unit="B", unit_scale=True) as bar:

        def advance(n: int) -> None:
            with lock:
                bar.update(n)

        try:
            storage.put_files(todo, IMMUTABLE_CACHE, advance)
        except PublishError as exc:
            raise PublishError(
                f"{exc}; the previous site is still served, re-run the same command to resume"
            ) from None
    return len(todo), total


def read_latest(storage: Storage) -> dict[str, Any] | None:
    """The current latest.json, or None when there is none (or it is not ours)."""
    body = storage.read(LATEST_KEY)
    if body is None:
        return None
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        logger.warning("%s is not JSON; replacing it", storage.describe(LATEST_KEY))
        return None
    if not isinstance(data, dict) or not isinstance(data.get("run_id"), str):
        return None
    return data


def prune_runs(storage: Storage, run_id: str, keep_runs: int) -> list[str]:
    """Delete runs beyond the newest ``keep_runs``; return the ids removed."""
    # Re-read: another publisher may have moved latest.json since; never delete whatever it
    # names, nor the run just published.
    pointer = read_latest(storage)
    protected = {run_id} | ({pointer["run_id"]} if pointer else set())
    removed = runs_to_remove(storage.list_folders(RUNS), keep_runs, protected)
    for old in removed:
        storage.delete(f"{RUNS}{old}/")
        logger.info("publish: removed old run %s", storage.describe(f"{RUNS}{old}/"))
    return removed


def runs_to_remove(run_ids: Iterable[str], keep_runs: int, protected: set[str]) -> list[str]:
    """Runs beyond the newest ``keep_runs``; run ids start with a UTC timestamp, so name order
    is age order. Protected runs (the one just published, the one latest.json names) stay."""
    ordered = sorted(set(run_ids))
    keep = set(ordered[-keep_runs:]) | protected
    return [r for r in ordered if r not in keep]


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_bytes(n: float) -> str:
    if abs(n) < 1024:
        return f"{n:.0f} B"
    for unit in ("KB", "MB"):
        n /= 1024
        if abs(n) < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} GB"
