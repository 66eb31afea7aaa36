"""What a published run is made of: its files with their checksums, their content types,
and the two entry points (``index.html``, ``latest.json``) that name the newest run."""

from __future__ import annotations

import hashlib
import html
import mimetypes
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from job.core.errors import JobError, PublishError
from job.core.files import read_json
from job.core.layout import (
    DATABASE_FILE,
    PARQUET_DIR,
    PUBLISHED_DIRS,
    PUBLISHED_FILES,
    RUN_JSON,
    SHARED_DIRS,
    SITE_INDEX,
)

# Single-part uploads up to this size, so that a stored ETag is the file's MD5 and a re-run
# can compare it from a listing, without reading object metadata one HEAD at a time.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")

# Explicit types for what the site and data contain: mimetypes' answers depend on the host's
# /etc/mime.types (and know nothing of .parquet or .duckdb), and a wrong type makes a browser
# download a page instead of showing it.
CONTENT_TYPES: dict[str, str] = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".ico": "image/x-icon",
    ".woff": "font/woff",
    ".woff2": "font/woff2",
    ".wasm": "application/wasm",
    ".parquet": "application/vnd.apache.parquet",
    ".duckdb": "application/octet-stream",
    ".csv": "text/csv; charset=utf-8",
    ".tsv": "text/tab-separated-values; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".md": "text/markdown; charset=utf-8",
    ".xml": "application/xml",
    ".keras": "application/octet-stream",
    ".gz": "application/gzip",
    ".zip": "application/zip",
}


def content_type(path: str | Path) -> str:
    """Content-Type for a file name: the site's own types first, then mimetypes, then bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(str(path), strict=False)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class LocalFile:
    """One file of the run: where it is, its key relative to the run, and its checksums."""

    path: Path
    rel: str  # POSIX path relative to the run root, e.g. "site/users/557.html"
    size: int
    sha256: str
    etag: str  # the ETag S3 stores for our upload of it (MD5, or multipart MD5-of-MD5s)


def read_run_id(out_dir: Path) -> str:
    """The run id from OUT/run.json, checked to be safe as one path segment."""
    return read_run(out_dir)[0]


def read_run(out_dir: Path) -> tuple[str, str]:
    """The run id from OUT/run.json (checked to be safe as one path segment) and its creation
    time (``run_created``)."""
    if not out_dir.is_dir():
        raise PublishError(f"out folder {out_dir} does not exist: run the job first")
    run_json = out_dir / RUN_JSON
    try:
        manifest = read_json(run_json, remake="publish needs a finished run's out folder")
    except JobError as exc:
        raise PublishError(str(exc)) from None
    run_id = manifest.get("run_id") if isinstance(manifest, dict) else None
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise PublishError(
            f'{run_json} has no valid "run_id" (got {run_id!r}): it must be letters, digits, '
            "'.', '_' or '-', e.g. 20261126T181000Z-1a2b3c4d"
        )
    assert isinstance(manifest, dict)
    return run_id, run_created(run_id, manifest.get("created_at"))


_ID_TIME_RE = re.compile(r"^(\d{8}T\d{6}Z)")


def run_created(run_id: str, created_at: object) -> str:
    """When a run was created, as ``YYYY-MM-DDTHH:MM:SSZ`` (UTC), the order in which runs
    replace each other on the site: run.json's ``created_at``, else the timestamp a run id
    starts with (train names runs so), else "" (unknown: older than any known time)."""
    if isinstance(created_at, str) and created_at:
        try:
            when = datetime.fromisoformat(created_at.replace("Z", "+00:00"))
        except ValueError:
            pass
        else:
            if when.tzinfo is None:  # the job writes aware times; a naive one is taken as UTC
                when = when.replace(tzinfo=UTC)
            return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    if match := _ID_TIME_RE.match(run_id):
        try:
            when = datetime.strptime(match[1], "%Y%m%dT%H%M%SZ")
        except ValueError:
            return ""
        return when.strftime("%Y-%m-%dT%H:%M:%SZ")
    return ""


def collect_files(out_dir: Path) -> list[LocalFile]:
    """Every file that belongs to the published run, with its checksums, in a stable order."""
    for rel in (RUN_JSON, DATABASE_FILE, SITE_INDEX):
        if not (out_dir / rel).is_file():
            raise PublishError(
                f"{out_dir / rel} is missing: publish needs a finished run "
                "(run the job, or its store and render stages, into this folder first)"
            )
    paths = [out_dir / name for name in PUBLISHED_FILES if (out_dir / name).is_file()]
    for name in PUBLISHED_DIRS:
        paths.extend(p for p in (out_dir / name).rglob("*") if p.is_file())
    return _local_files(out_dir, paths)


def collect_shared_files(out_dir: Path) -> list[LocalFile]:
    """The files published beside the runs (``SHARED_DIRS``: the SQL page's engine), keyed
    relative to the prefix: ``engine/duckdb-wasm-1.32.0/duckdb-eh.wasm``."""
    paths = [p for name in SHARED_DIRS for p in (out_dir / name).rglob("*") if p.is_file()]
    return _local_files(out_dir, paths)


def _local_files(out_dir: Path, paths: list[Path]) -> list[LocalFile]:
    files = []
    for path in sorted(paths):
        try:
            size, sha256, etag = checksums(path)
        except OSError as exc:
            raise PublishError(f"cannot read {path}: {exc.strerror or exc}") from None
        rel = path.relative_to(out_dir).as_posix()
        files.append(LocalFile(path=path, rel=rel, size=size, sha256=sha256, etag=etag))
    return files


def checksums(path: Path) -> tuple[int, str, str]:
    """Size, SHA-256, and the ETag S3 computes for our upload of this file (one read)."""
    from s3transfer.utils import ChunksizeAdjuster

    size = path.stat().st_size
    sha = hashlib.sha256()
    if size < MULTIPART_THRESHOLD:
        md5 = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                sha.update(chunk)
                md5.update(chunk)
        return size, sha.hexdigest(), md5.hexdigest()
    # A multipart upload's ETag is MD5(concat(MD5(part)...))-N with s3transfer's part size.
    chunksize = ChunksizeAdjuster().adjust_chunksize(MULTIPART_CHUNKSIZE, size)
    digests = []
    with path.open("rb") as fh:
        while part := fh.read(chunksize):
            sha.update(part)
            digests.append(hashlib.md5(part, usedforsecurity=False).digest())
    combined = hashlib.md5(b"".join(digests), usedforsecurity=False).hexdigest()
    return size, sha.hexdigest(), f"{combined}-{len(digests)}"


def latest_document(
    run_id: str, files: list[LocalFile], published_at: str, created_at: str = ""
) -> dict[str, Any]:
    """The content of latest.json: where the newest run's site and data are, relative.

    The run's completion marker (``runs/RUN_ID/published.json``) holds the same document,
    ``published_at`` being when the run's last object was stored."""
    run = f"runs/{run_id}/"
    return {
        "run_id": run_id,
        "created_at": created_at,
        "published_at": published_at,
        "site": f"{run}{SITE_INDEX}",
        "run": run,
        "database": f"{run}{DATABASE_FILE}",
        "manifest": f"{run}{RUN_JSON}",
        "parquet": [f"{run}{f.rel}" for f in files if f.rel.startswith(f"{PARQUET_DIR}/")],
        "objects": len(files),
        "bytes": sum(f.size for f in files),
    }


def redirect_page(run_id: str) -> str:
    """The entry index.html: a meta refresh plus a visible link, for browsers without either."""
    href = html.escape(f"runs/{run_id}/{SITE_INDEX}", quote=True)
    title = html.escape(f"MovieLens recommendations, run {run_id}")
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="0; url={href}">\n'
        f'<link rel="canonical" href="{href}">\n'
        # No icon, said so: otherwise a browser asks the bucket's root for /favicon.ico, out
        # of the published prefix, and logs the 404 (or 403) as an error on every visit.
        '<link rel="icon" href="data:,">\n'
        f"<title>{title}</title>\n</head>\n<body>\n"
        f'<p>The latest run is <a href="{href}">{html.escape(run_id)}</a>.</p>\n'
        "</body>\n</html>\n"
    )
