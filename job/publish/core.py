"""The publishing algorithm, written once over ``Storage`` (S3 or a local folder).

1. Collect the run's files with their checksums.
2. Upload those missing or changed under ``runs/RUN_ID/`` (immutable, long cache): a re-run
   compares a listing's ETags and sizes and sends only the difference. Then write the run's
   completion marker ``runs/RUN_ID/published.json`` last and list the run again: a run is
   complete when every object and the marker are listed.
3. Switch ``latest.json`` to the run by compare-and-swap, then make ``index.html`` follow it.
4. With ``keep_runs``, delete complete runs beyond the newest N, never the one ``latest.json``
   names nor any created after it.
5. Rebuild the runs index ``runs.json`` from the complete runs' markers (``runsindex``).

Publishers racing to one target (two workflow runs, a re-run of an old one) keep the site
whole by four rules:

- The entry points only move forward: to a complete run created later (run.json's
  ``created_at``) than the one they name. ``latest.json`` is replaced by a conditional write
  on the ETag just read (S3 ``If-Match``, or ``If-None-Match: *`` when there is none; on a
  folder, the compare and the rename under an flock), so of two publishers that read the
  same latest.json one wins and the other reads again and decides again.
- Every switch is read back. That is the whole protection on a store that ignores the
  conditions (or answers them 501): a publisher that finds an older run named writes again,
  one that finds a newer run stops. It narrows the race to the moment between a read and a
  write but cannot close it; publish to such a store one at a time (the workflow's
  concurrency group does).
- ``index.html`` follows ``latest.json``: every publisher, winner or not, ends by writing
  the redirect to whatever latest.json names and reading latest.json again until it stays.
- Pruning removes only complete runs beyond ``keep_runs`` that are older than the run
  latest.json names (it never moves back to them), and runs without a marker that are older
  and untouched for ``STALE_AFTER`` (a killed publisher's leftovers). A run without its
  marker written to recently is another publisher's upload and stays. A complete run is
  removed marker first, so a half-removed run is never taken for a complete one.

A publisher whose run is not the newest says so in one line: its run is uploaded and kept
but not the latest (a warning; ``publish`` returns normally, exit 0), or it is refused
(``PublishRefused``, exit 1) when ``keep_runs`` leaves no room for it: before the upload when
that is already clear, or after it, removing the run again.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from job.core.errors import PublishError, PublishRefused
from job.core.progress import progress
from job.publish.entries import (
    ENTRY_CACHE,
    INDEX_KEY,
    LATEST_KEY,
    SWITCH_ATTEMPTS,
    RunRef,
    read_latest,
    switch_latest,
    sync_index,
)
from job.publish.retention import MARKER, RUNS, prune_runs, refuse_without_room, stored_runs
from job.publish.runfiles import (
    LocalFile,
    collect_files,
    collect_shared_files,
    latest_document,
    read_run,
    run_created,
)
from job.publish.runsindex import (
    MOVIES_FILE,
    RUNS_INDEX,
    TOP_K_FILE,
    changes_document,
    compare_top_k,
    index_entry,
    read_top_k,
    run_summary,
    runs_index,
)
from job.publish.storage import Storage, Stored
from job.publish.target import PublishTarget, parse_target, resolve_endpoint_url

logger = logging.getLogger(__name__)

# Immutable run objects: a run id never changes content, so browsers and CDNs may keep them.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"


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
    latest_run: str = ""  # the run the entry points name now: run_id, unless a newer run won
    shared_objects: int = 0  # objects beside the runs (the SQL page's engine)
    shared_uploaded: int = 0  # of those, sent this time (0 once any run has sent them)

    @property
    def is_latest(self) -> bool:
        return self.latest_run == self.run_id

    def describe(self) -> str:
        """One line: objects, bytes, seconds, URL; and whether the run is the latest."""
        removed = f", removed {len(self.removed_runs)} old run(s)" if self.removed_runs else ""
        entry = "entry points updated" if self.entry_points_written else "entry points unchanged"
        lost = (
            ""
            if self.is_latest
            else f" but not the latest: the entry points name run {self.latest_run}, created "
            f"later; run {self.run_id} is kept under runs/{self.run_id}/"
        )
        shared = (
            f", engine {self.shared_uploaded} of {self.shared_objects} uploaded"
            if self.shared_objects
            else ""
        )
        return (
            f"published run {self.run_id}{lost}: {self.objects} objects "
            f"({self.uploaded} uploaded, {self.skipped} unchanged, {entry}{shared}), "
            f"{_human_bytes(self.bytes_uploaded)} of {_human_bytes(self.bytes_total)} sent "
            f"in {self.seconds:.1f} s, {self.puts} PUTs{removed} -> {self.url}"
        )


def publish(
    out_dir: Path,
    target: str | PublishTarget,
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
        keep_runs: keep only the newest N complete runs under ``runs/`` (never the one
            ``latest.json`` names, nor runs created after it); None keeps every run. At
            least 1: validated once, by ``job.core.config.PublishOptions``, as the CLI passes it.
        max_concurrency: parallel uploads.
        max_attempts: attempts per request, retries included; defaults to
            ``AWS_MAX_ATTEMPTS`` or 10.

    Returns:
        A PublishSummary (objects, bytes, PUTs, seconds, URL, and the run the entry points
        name: another, newer run when this one lost a race; it is then logged as a warning).

    Raises:
        PublishRefused: the run is older than the one the site names and ``keep_runs``
            leaves no room for it.
        PublishError: bad out folder or target, or the store refused or failed; when it
            fails, the entry points were not touched and the previous run still serves.
    """
    if max_concurrency < 1:
        raise PublishError(f"max_concurrency must be at least 1 (got {max_concurrency})")
    # `run` parses its target before training and passes it parsed: parsed once per command.
    parsed = target if isinstance(target, PublishTarget) else parse_target(target)
    started = time.monotonic()
    run_id, created = read_run(Path(out_dir))
    files = collect_files(Path(out_dir))
    shared = collect_shared_files(Path(out_dir))
    storage = open_storage(parsed, endpoint_url, max_concurrency, max_attempts)
    summary = publish_run(
        storage, run_id, files, created=created, keep_runs=keep_runs, shared=shared
    )
    # The whole publish's time: collecting the files and opening the storage included.
    summary = dataclasses.replace(summary, seconds=time.monotonic() - started)
    logger.log(logging.INFO if summary.is_latest else logging.WARNING, "%s", summary.describe())
    return summary


def open_storage(
    target: PublishTarget,
    endpoint_url: str | None = None,
    max_concurrency: int = 32,
    max_attempts: int | None = None,
) -> Storage:
    """The storage a parsed target names: an S3 bucket's prefix or a folder."""
    if target.kind == "s3":
        from job.publish.s3 import S3Storage

        return S3Storage(
            target,
            endpoint_url=resolve_endpoint_url(endpoint_url),
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
    from job.publish.local import LocalStorage

    assert target.path is not None
    return LocalStorage(target.path)


def publish_run(
    storage: Storage,
    run_id: str,
    files: list[LocalFile],
    *,
    created: str = "",
    keep_runs: int | None = None,
    clock: Callable[[], float] = time.time,
    shared: Sequence[LocalFile] = (),
) -> PublishSummary:
    """Steps 2-4 of the module docstring on any storage.

    ``created`` is the run's creation time (``runfiles.run_created``; by default read from
    the run id); ``clock`` tells pruning how old an incomplete run's last write is.
    ``shared`` (the SQL page's engine) goes beside the runs, before the run's own objects,
    so that a complete run never names an engine that is not there yet.
    """
    started = time.monotonic()
    ours = RunRef(created or run_created(run_id, None), run_id)
    storage.check()
    _check_previous(storage, ours, keep_runs)
    shared_uploaded, _ = upload_shared(storage, shared)
    uploaded, sent, marker_listed = upload_run(storage, run_id, files)
    # What the runs index says of this run, made once: when its marker is first written.
    facts = {} if marker_listed else run_facts(storage, ours, files)
    complete_run(
        storage, ours, files, uploaded=uploaded > 0, marker_listed=marker_listed, facts=facts
    )
    named, entry_points_written = switch_entry_points(storage, ours, files)
    removed = prune_runs(storage, keep_runs, clock()) if keep_runs is not None else []
    sync_runs_index(storage)
    if run_id in removed:
        raise PublishRefused(
            f"refused: run {run_id} was uploaded, but run {named.run_id} that "
            f"{storage.describe(LATEST_KEY)} names was created later and --keep-runs "
            f"{keep_runs} has no room for an older run, so it was removed again"
        )
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
        entry_points_written=entry_points_written,
        removed_runs=tuple(removed),
        puts=storage.puts,
        latest_run=named.run_id,
        shared_objects=len(shared),
        shared_uploaded=shared_uploaded,
    )


def _check_previous(storage: Storage, ours: RunRef, keep_runs: int | None) -> None:
    """Say which run the site names now, and refuse ours before any upload when
    ``keep_runs`` leaves it no room."""
    previous = read_latest(storage)
    if previous:
        logger.info(
            "publish: %s points to run %s", storage.describe(LATEST_KEY), previous["run_id"]
        )
        if keep_runs is not None:
            refuse_without_room(storage, ours, RunRef.of(previous), keep_runs)


def switch_entry_points(
    storage: Storage, ours: RunRef, files: Sequence[LocalFile]
) -> tuple[RunRef, bool]:
    """Step 3: latest.json to our run (unless it names a newer one), then index.html after it;
    return the run they name and whether we wrote either."""
    latest = latest_document(ours.run_id, list(files), _now_iso(), ours.created)
    named, latest_written = switch_latest(
        storage, ours, (json.dumps(latest, indent=2) + "\n").encode("utf-8")
    )
    index_written = sync_index(storage)
    return named, latest_written or index_written


def upload_run(storage: Storage, run_id: str, files: list[LocalFile]) -> tuple[int, int, bool]:
    """Upload what is missing or changed; return (objects uploaded, bytes uploaded, whether
    the run's completion marker was already listed)."""
    run_prefix = f"{RUNS}{run_id}/"
    existing = storage.list_objects(run_prefix)
    keyed = [(run_prefix + f.rel, f) for f in files]
    sent, total = _upload_changed(storage, keyed, existing, storage.describe(run_prefix))
    return sent, total, run_prefix + MARKER in existing


def upload_shared(storage: Storage, files: Sequence[LocalFile]) -> tuple[int, int]:
    """Upload the objects kept beside the runs (``PREFIX/engine/...``) that are missing or
    changed; return (objects, bytes) sent. Their keys carry their version, so once any run
    has sent them every later run finds them listed and sends nothing. Pruning never
    removes them (it removes only under runs/)."""
    if not files:
        return 0, 0
    prefixes = sorted({f.rel.split("/", 1)[0] + "/" for f in files})
    existing = {k: v for p in prefixes for k, v in storage.list_objects(p).items()}
    keyed = [(f.rel, f) for f in files]
    return _upload_changed(storage, keyed, existing, f"{storage.describe()} beside the runs")


def _upload_changed(
    storage: Storage,
    keyed: Sequence[tuple[str, LocalFile]],
    existing: dict[str, Stored],
    where: str,
) -> tuple[int, int]:
    """Upload the files whose key is missing from ``existing`` or listed with another ETag
    or size; return (objects, bytes) sent."""
    todo = [(key, f) for key, f in keyed if existing.get(key) != (f.etag, f.size)]
    logger.info(
        "publish: %d of %d objects to upload to %s (%d unchanged)",
        len(todo),
        len(keyed),
        where,
        len(keyed) - len(todo),
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


def complete_run(
    storage: Storage,
    ours: RunRef,
    files: Sequence[LocalFile],
    *,
    uploaded: bool,
    marker_listed: bool,
    facts: dict[str, Any] | None = None,
) -> None:
    """Write the run's completion marker last, then list the run: every object and the marker
    must be there before the entry points may name it. ``facts`` (``run_facts``) go into the
    marker, for the runs index."""
    prefix = f"{RUNS}{ours.run_id}/"
    if marker_listed and not uploaded:
        return  # the listing before the upload found every object and the marker
    if not marker_listed:
        marker = latest_document(ours.run_id, list(files), _now_iso(), ours.created)
        marker |= facts or {}
        storage.put_bytes(
            prefix + MARKER, (json.dumps(marker, indent=2) + "\n").encode("utf-8"), ENTRY_CACHE
        )
    listed = storage.list_objects(prefix)
    missing = [f.rel for f in files if listed.get(prefix + f.rel) != (f.etag, f.size)]
    missing += [] if prefix + MARKER in listed else [MARKER]
    if missing:
        if not marker_listed:
            storage.delete(prefix + MARKER)  # the marker may only ever stand for a whole run
        raise PublishError(
            f"{len(missing)} object(s) of run {ours.run_id} are not in "
            f"{storage.describe(prefix)} after the upload (first: {missing[0]}): another "
            "publisher removed them? The entry points were not touched; re-run the same command"
        )


def run_facts(storage: Storage, ours: RunRef, files: Sequence[LocalFile]) -> dict[str, Any]:
    """What the runs index says of our run: its summary (from its run.json) and what changed
    against the newest complete run created before it (``changes``: None for the first run).

    What changed is extra: a previous run whose top_k cannot be read, or that is on another
    dataset, gets a one-line reason instead of figures, and the publish goes on.
    """
    local = {f.rel: f.path for f in files}
    try:
        manifest = json.loads(local["run.json"].read_bytes()) if "run.json" in local else {}
    except (OSError, ValueError):
        manifest = {}
    summary = run_summary(manifest)
    older = [r for r in stored_runs(storage) if r.complete and r.run < ours]
    if not older:
        return {"summary": summary, "changes": None}
    newest = max(older, key=lambda r: r.run)
    previous, before = newest.run, (newest.marker or {}).get("summary") or {}
    if before.get("dataset") and before.get("dataset") != summary["dataset"]:
        reason = (
            f"the previous run is on another dataset ({before['dataset']}), so their "
            "recommendations are not compared"
        )
        return {
            "summary": summary,
            "changes": changes_document(previous.run_id, previous.created, reason=reason),
        }
    body = storage.read(f"{RUNS}{previous.run_id}/{TOP_K_FILE}")
    try:
        if body is None or TOP_K_FILE not in local:
            raise ValueError(f"no {TOP_K_FILE} in {'this' if body else 'the previous'} run")
        compared = compare_top_k(read_top_k(body), read_top_k(local[TOP_K_FILE].read_bytes()))
        titles = _titles(local.get(MOVIES_FILE), compared.new_movie_users)
    except Exception as exc:  # pyarrow and pandas raise many kinds for a damaged file
        reason = f"cannot compare the top 10s: {_first_line(exc)}"
        logger.warning("publish: run %s: %s", ours.run_id, reason)
        return {
            "summary": summary,
            "changes": changes_document(previous.run_id, previous.created, reason=reason),
        }
    return {
        "summary": summary,
        "changes": changes_document(previous.run_id, previous.created, compared, titles),
    }


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _titles(movies: Path | None, wanted: Any) -> dict[int, str]:
    """The titles (as pages show them) of the movies ``wanted``, from the run's movies.parquet."""
    if movies is None or not wanted:
        return {}
    import pandas as pd

    from job.data.movielens import natural_title

    frame = pd.read_parquet(movies, columns=["movie_id", "title"])
    frame = frame[frame["movie_id"].isin(list(wanted))]
    pairs = zip(frame["movie_id"], frame["title"], strict=True)
    return {int(m): natural_title(str(t)) for m, t in pairs}


def sync_runs_index(storage: Storage) -> bool:
    """Write runs.json from the complete runs' markers, by compare-and-swap on the ETag read
    before the listing, until a read after the write finds what the listing makes; return
    whether we wrote it. (A run published before markers held a summary gets one from its
    stored run.json.)"""
    wrote = False
    for _ in range(SWITCH_ATTEMPTS):
        found = storage.read_versioned(RUNS_INDEX)
        entries = []
        for stored in stored_runs(storage):
            if not stored.complete or stored.marker is None:
                continue
            summary = stored.marker.get("summary")
            if not isinstance(summary, dict):
                body = storage.read(f"{RUNS}{stored.run.run_id}/run.json")
                try:
                    summary = run_summary(json.loads(body) if body else {})
                except ValueError:
                    summary = run_summary({})
            entries.append(index_entry(stored.marker, summary))
        document = (json.dumps(runs_index(entries), indent=1) + "\n").encode("utf-8")
        if found is not None and found[0] == document:
            return wrote
        if storage.put_if(RUNS_INDEX, document, ENTRY_CACHE, found[1] if found else None):
            wrote = True
        else:
            logger.info("publish: %s changed since it was read; reading again", RUNS_INDEX)
    raise PublishError(
        f"{storage.describe(RUNS_INDEX)} changed {SWITCH_ATTEMPTS} times while this publish "
        "rebuilt it; re-run the same command"
    )


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
