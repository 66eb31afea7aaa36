"""Publish a finished run's site and data to S3-compatible storage or a local folder.

Layout under the target (``s3://BUCKET/PREFIX`` or a folder)::

    PREFIX/runs/RUN_ID/site/...                    the static site (relative links only)
    PREFIX/runs/RUN_ID/recommendations.duckdb      the site links to ../recommendations.duckdb
    PREFIX/runs/RUN_ID/parquet/*.parquet
    PREFIX/runs/RUN_ID/run.json
    PREFIX/index.html                              redirect to runs/RUN_ID/site/index.html
    PREFIX/latest.json                             {"run_id", "published_at", "site", ...}

Why this shape: everything of a run goes under its own immutable prefix first (long cache);
only when every object is in place are the two small entry points written, ``latest.json``
last. A reader therefore sees either the previous run or the new one, never half of one, and
a failed upload leaves the previous site serving. Re-publishing the same run compares
checksums and uploads only what is missing or changed, so a retry after a failure resumes
cheaply and a repeat is a no-op.

Credentials come only from the standard AWS chain (environment, profile, web identity/OIDC,
instance role); this module never reads, logs or writes them.
"""

from __future__ import annotations

import hashlib
import html
import json
import logging
import mimetypes
import os
import re
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from job.errors import PublishError

logger = logging.getLogger(__name__)

# Immutable run objects: a run id never changes content, so browsers and CDNs may keep them.
IMMUTABLE_CACHE = "public, max-age=31536000, immutable"
# Entry points change with every run: caches must revalidate each time.
ENTRY_CACHE = "no-cache"

# Files and folders of an out folder that make up a published run (relative to OUT).
# Everything else (model.keras, encoding.json, history.csv, parts/, dataset/ ...) stays local.
PUBLISHED_FILES = ("run.json", "recommendations.duckdb")
PUBLISHED_DIRS = ("site", "parquet")
REQUIRED_FILES = ("run.json", "recommendations.duckdb", "site/index.html")

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

# Single-part uploads up to this size, so that a stored ETag is the file's MD5 and a re-run
# can compare it without reading object metadata one HEAD at a time.
MULTIPART_THRESHOLD = 64 * 1024 * 1024
MULTIPART_CHUNKSIZE = 16 * 1024 * 1024
# botocore's default is 3 attempts; a 10,000-object upload meets the odd 503 and SlowDown.
# Standard mode backs off exponentially with jitter per request, which with 32 parallel
# uploads already lowers the request rate; "adaptive" (AWS_RETRY_MODE=adaptive) adds a
# client-wide rate limiter that, after a burst of SlowDowns early in a run, throttles the
# whole upload far below what the store allows.
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_RETRY_MODE = "standard"

_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys


def content_type(path: str | Path) -> str:
    """Content-Type for a file name: the site's own types first, then mimetypes, then bytes."""
    suffix = Path(path).suffix.lower()
    if suffix in CONTENT_TYPES:
        return CONTENT_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(str(path), strict=False)
    return guessed or "application/octet-stream"


@dataclass(frozen=True)
class PublishTarget:
    """Where a run goes: an S3 bucket and key prefix, or a local folder."""

    kind: str  # "s3" or "local"
    bucket: str = ""
    prefix: str = ""  # "" or "a/b/" (always ends with "/")
    path: Path | None = None

    def __str__(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return str(self.path)


def parse_target(target: str) -> PublishTarget:
    """Parse ``s3://BUCKET/PREFIX``, ``file:///path`` or a plain path.

    Raises:
        PublishError: the URL is not one of those, or names an invalid bucket or prefix.
    """
    if not target or not target.strip():
        raise PublishError("publish target is empty: give s3://BUCKET/PREFIX or a folder path")
    parsed = urlparse(target)
    scheme = parsed.scheme.lower()
    if scheme == "s3":
        bucket = parsed.netloc
        if not bucket:
            raise PublishError(f"invalid S3 URL {target!r}: no bucket name; use s3://BUCKET/PREFIX")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise PublishError(
                f"invalid bucket name {bucket!r} in {target!r}: S3 bucket names are 3-63 "
                "characters of lowercase letters, digits, dots and hyphens"
            )
        if parsed.query or parsed.fragment or "?" in target or "#" in target:
            raise PublishError(
                f"invalid S3 URL {target!r}: no query or fragment allowed; use s3://BUCKET/PREFIX"
            )
        parts = [p for p in parsed.path.split("/") if p]
        if any(p in (".", "..") for p in parts) or "//" in parsed.path.strip("/"):
            raise PublishError(
                f"invalid S3 prefix {parsed.path!r} in {target!r}: no empty, '.' or '..' "
                "path segments"
            )
        prefix = "/".join(parts) + "/" if parts else ""
        return PublishTarget(kind="s3", bucket=bucket, prefix=prefix)
    if scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise PublishError(
                f"invalid file URL {target!r}: only local files (file:///path) are supported"
            )
        return PublishTarget(kind="local", path=Path(unquote(parsed.path)))
    # One-letter "schemes" are Windows drive letters (C:\out), i.e. plain paths.
    if scheme and len(scheme) > 1:
        raise PublishError(
            f"unsupported publish target {target!r}: use s3://BUCKET/PREFIX, "
            "file:///path or a folder path"
        )
    return PublishTarget(kind="local", path=Path(target))


@dataclass(frozen=True)
class LocalFile:
    """One file of the run: where it is, its key relative to the run, and its checksums."""

    path: Path
    rel: str  # POSIX path relative to the run root, e.g. "site/users/557.html"
    size: int
    sha256: str
    etag: str  # the ETag S3 stores for our upload of it (MD5, or multipart MD5-of-MD5s)


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

    def describe(self) -> str:
        """One line: objects, bytes, seconds, URL."""
        removed = f", removed {len(self.removed_runs)} old run(s)" if self.removed_runs else ""
        entry = "entry points updated" if self.entry_points_written else "entry points unchanged"
        return (
            f"published run {self.run_id}: {self.objects} objects "
            f"({self.uploaded} uploaded, {self.skipped} unchanged, {entry}), "
            f"{_human_bytes(self.bytes_uploaded)} of {_human_bytes(self.bytes_total)} sent "
            f"in {self.seconds:.1f} s{removed} -> {self.url}"
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
            ``latest.json`` points to); None keeps every run.
        max_concurrency: parallel uploads.
        max_attempts: attempts per request, retries included; defaults to
            ``AWS_MAX_ATTEMPTS`` or 10.

    Returns:
        A PublishSummary (objects, bytes, seconds, URL).

    Raises:
        PublishError: bad out folder or target, or the store refused or failed; when it
            fails, the entry points were not touched and the previous run still serves.
    """
    if keep_runs is not None and keep_runs < 1:
        raise PublishError(f"--keep-runs must be at least 1 (got {keep_runs})")
    if max_concurrency < 1:
        raise PublishError(f"max_concurrency must be at least 1 (got {max_concurrency})")
    parsed = parse_target(target)
    out_dir = Path(out_dir)
    run_id = read_run_id(out_dir)
    started = time.monotonic()
    files = collect_files(out_dir)
    if parsed.kind == "s3":
        publisher: _Publisher = S3Publisher(
            parsed,
            endpoint_url=resolve_endpoint_url(endpoint_url),
            max_concurrency=max_concurrency,
            max_attempts=max_attempts,
        )
    else:
        publisher = LocalPublisher(parsed)
    summary = publisher.publish(run_id, files, keep_runs=keep_runs, started=started)
    logger.info("%s", summary.describe())
    return summary


def resolve_endpoint_url(endpoint_url: str | None) -> str | None:
    """The explicit endpoint, else the standard AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL."""
    url = (
        endpoint_url or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    )
    if not url:
        return None
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise PublishError(
            f"invalid endpoint URL {url!r}: use http(s)://HOST[:PORT], e.g. http://127.0.0.1:9000"
        )
    return url.rstrip("/")


def read_run_id(out_dir: Path) -> str:
    """The run id from OUT/run.json, checked to be safe as one path segment."""
    run_json = out_dir / "run.json"
    if not out_dir.is_dir():
        raise PublishError(f"out folder {out_dir} does not exist: run the job first")
    try:
        manifest = json.loads(run_json.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PublishError(
            f"{run_json} is missing: publish needs a finished run's out folder"
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PublishError(f"{run_json} is not readable JSON ({exc}): re-run the job") from None
    run_id = manifest.get("run_id") if isinstance(manifest, dict) else None
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise PublishError(
            f'{run_json} has no valid "run_id" (got {run_id!r}): it must be letters, digits, '
            "'.', '_' or '-', e.g. 20261126T181000Z-1a2b3c4d"
        )
    return run_id


def collect_files(out_dir: Path) -> list[LocalFile]:
    """Every file that belongs to the published run, with its checksums, in a stable order."""
    for rel in REQUIRED_FILES:
        if not (out_dir / rel).is_file():
            raise PublishError(
                f"{out_dir / rel} is missing: publish needs a finished run "
                "(run the job, or its store and render stages, into this folder first)"
            )
    paths: list[Path] = [out_dir / name for name in PUBLISHED_FILES if (out_dir / name).is_file()]
    for name in PUBLISHED_DIRS:
        root = out_dir / name
        if root.is_dir():
            paths.extend(p for p in root.rglob("*") if p.is_file())
    files = []
    for path in sorted(paths):
        rel = path.relative_to(out_dir).as_posix()
        try:
            size, sha256, etag = _checksums(path)
        except OSError as exc:
            raise PublishError(f"cannot read {path}: {exc.strerror or exc}") from None
        files.append(LocalFile(path=path, rel=rel, size=size, sha256=sha256, etag=etag))
    return files


def _checksums(path: Path) -> tuple[int, str, str]:
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


def latest_document(run_id: str, files: list[LocalFile], published_at: str) -> dict[str, Any]:
    """The content of latest.json: where the newest run's site and data are, relative."""
    run = f"runs/{run_id}/"
    return {
        "run_id": run_id,
        "published_at": published_at,
        "site": f"{run}site/index.html",
        "run": run,
        "database": f"{run}recommendations.duckdb",
        "manifest": f"{run}run.json",
        "parquet": [f"{run}{f.rel}" for f in files if f.rel.startswith("parquet/")],
        "objects": len(files),
        "bytes": sum(f.size for f in files),
    }


def redirect_page(run_id: str) -> str:
    """The entry index.html: a meta refresh plus a visible link, for browsers without either."""
    href = html.escape(f"runs/{run_id}/site/index.html", quote=True)
    title = html.escape(f"MovieLens recommendations, run {run_id}")
    return (
        "<!doctype html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta http-equiv="refresh" content="0; url={href}">\n'
        f'<link rel="canonical" href="{href}">\n'
        f"<title>{title}</title>\n</head>\n<body>\n"
        f'<p>The latest run is <a href="{href}">{html.escape(run_id)}</a>.</p>\n'
        "</body>\n</html>\n"
    )


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"  # pragma: no cover - the loop always returns


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class Progress:
    """Files and bytes done, to stderr, only while this module's logger shows INFO.

    On a terminal one line is redrawn in place a few times a second; elsewhere (CI logs) an
    INFO line every few seconds, so a 10,000-object upload does not flood the log.
    """

    def __init__(self, total_files: int, total_bytes: int, label: str = "publish") -> None:
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.label = label
        self.files = 0
        self.bytes = 0
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._last = 0.0
        self.enabled = logger.isEnabledFor(logging.INFO) and total_files > 0
        self._tty = self.enabled and sys.stderr.isatty()
        self._interval = 0.2 if self._tty else 5.0

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes += n
        self._maybe_show()

    def file_done(self) -> None:
        with self._lock:
            self.files += 1
        self._maybe_show()

    def line(self) -> str:
        elapsed = max(time.monotonic() - self._started, 1e-6)
        return (
            f"{self.label}: {self.files}/{self.total_files} files, "
            f"{_human_bytes(self.bytes)}/{_human_bytes(self.total_bytes)}, "
            f"{self.files / elapsed:.0f} files/s, {_human_bytes(self.bytes / elapsed)}/s"
        )

    def _maybe_show(self, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        with self._lock:
            if not force and now - self._last < self._interval:
                return
            self._last = now
            text = self.line()
        if self._tty:
            sys.stderr.write("\r" + text + "\x1b[K")
            sys.stderr.flush()
        else:
            logger.info("%s", text)

    def close(self) -> None:
        self._maybe_show(force=True)
        if self._tty:
            sys.stderr.write("\n")
            sys.stderr.flush()


class _Publisher:
    """The two publishers differ only in how they put bytes somewhere and list what is there."""

    def publish(
        self, run_id: str, files: list[LocalFile], *, keep_runs: int | None, started: float
    ) -> PublishSummary:
        raise NotImplementedError


def _runs_to_remove(run_ids: Iterable[str], keep_runs: int, protected: set[str]) -> list[str]:
    """Runs beyond the newest ``keep_runs``; run ids start with a UTC timestamp, so name order
    is age order. Protected runs (the one just published, the one latest.json names) stay."""
    ordered = sorted(set(run_ids))
    keep = set(ordered[-keep_runs:]) | protected
    return [r for r in ordered if r not in keep]


# --------------------------------------------------------------------------------------- S3


class S3Publisher(_Publisher):
    """Uploads through boto3's transfer manager: a thread pool, retries, checksum skipping."""

    def __init__(
        self,
        target: PublishTarget,
        *,
        endpoint_url: str | None,
        max_concurrency: int,
        max_attempts: int | None,
    ) -> None:
        self.bucket = target.bucket
        self.prefix = target.prefix
        self.target = target
        self.endpoint_url = endpoint_url
        self.max_concurrency = max_concurrency
        self.client = self._make_client(max_attempts)
        self.uploads_started = False

    def _make_client(self, max_attempts: int | None) -> Any:
        import boto3
        import botocore.session
        from botocore.config import Config

        if max_attempts is None:
            env = os.environ.get("AWS_MAX_ATTEMPTS")
            try:
                max_attempts = int(env) if env else DEFAULT_MAX_ATTEMPTS
            except ValueError:
                raise PublishError(
                    f"AWS_MAX_ATTEMPTS must be a whole number (got {env!r})"
                ) from None
        if max_attempts < 1:
            raise PublishError(f"max attempts must be at least 1 (got {max_attempts})")
        mode = os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
        if mode not in ("standard", "adaptive", "legacy"):
            raise PublishError(
                f"AWS_RETRY_MODE must be standard, adaptive or legacy (got {mode!r})"
            )
        s3_options: dict[str, Any] = {}
        if self.endpoint_url:
            # S3-compatible stores (MinIO, Ceph, a server on an IP) serve path-style URLs;
            # virtual-hosted ones need DNS for BUCKET.HOST that they rarely have.
            s3_options["addressing_style"] = "path"
        retries: Any = {"total_max_attempts": max_attempts, "mode": mode}
        config = Config(
            retries=retries,
            max_pool_connections=self.max_concurrency + 4,
            connect_timeout=10,
            read_timeout=60,
            s3=s3_options or None,  # type: ignore[arg-type]
        )
        try:
            core = botocore.session.get_session()
            # Listings return a timestamp per object, which this module never reads; parsing
            # them with dateutil is most of the CPU of listing a 10,000-object run. (botocore's
            # credential providers accept the unparsed ISO text for STS expirations.)
            core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
            self.session = boto3.session.Session(botocore_session=core)
            return self.session.client("s3", endpoint_url=self.endpoint_url, config=config)
        except Exception as exc:  # profile not found, bad region, bad config file ...
            raise PublishError(f"cannot set up an S3 client: {_one_line(exc)}") from None

    # -- error translation at the edge ------------------------------------------------------

    def _where(self) -> str:
        return self.endpoint_url or "AWS S3"

    def translate(self, exc: BaseException, key: str | None = None) -> PublishError:
        """A botocore/transfer exception as one line that names the thing and the fix."""
        from botocore.exceptions import (
            ClientError,
            CredentialRetrievalError,
            HTTPClientError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
        )
        from botocore.exceptions import ConnectionError as BotoConnectionError

        url = f"s3://{self.bucket}/{key}" if key else str(self.target)
        after = ""
        if self.uploads_started:
            after = "; the previous site is still served, re-run the same command to resume"
        if isinstance(exc, PublishError):
            return exc
        if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
            return PublishError(
                f"no AWS credentials for {url}: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, AWS_PROFILE, or a role (OIDC in GitHub Actions)"
            )
        if isinstance(exc, ProfileNotFound):
            return PublishError(f"{_one_line(exc)}: fix AWS_PROFILE or ~/.aws/config")
        if isinstance(exc, CredentialRetrievalError):
            return PublishError(
                f"could not get AWS credentials for {url} ({_one_line(exc)}): check the "
                "profile or role configuration"
            )
        if isinstance(exc, BotoConnectionError):  # refused, unresolvable, connect timeout
            return PublishError(
                f"cannot reach the S3 endpoint {self._where()} for {url}: check --endpoint-url "
                f"/ AWS_ENDPOINT_URL, the network, and that the server is running{after}"
            )
        if isinstance(exc, HTTPClientError):  # connection dropped, read timeout
            return PublishError(
                f"the S3 endpoint {self._where()} dropped or timed out on {url} after retries "
                f"({_one_line(exc)}){after}"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in ("NoSuchBucket",) or (code == "404" and key is None):
                return PublishError(
                    f"bucket {self.bucket!r} does not exist at {self._where()}: create it or "
                    "fix the bucket in the s3:// URL"
                )
            if code in (
                "403",
                "AccessDenied",
                "InvalidAccessKeyId",
                "SignatureDoesNotMatch",
                "ExpiredToken",
                "InvalidToken",
                "AllAccessDisabled",
            ):
                return PublishError(
                    f"access denied to {url} ({code}): check the credentials and that they "
                    "may s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on "
                    f"this bucket{after}"
                )
            message = _one_line(error.get("Message", "")) or "no message"
            return PublishError(
                f"S3 refused a request for {url}: {code or status} {message} (after retries){after}"
            )
        if isinstance(exc, OSError):
            return PublishError(f"cannot read a file to upload to {url}: {_one_line(exc)}{after}")
        return PublishError(
            f"S3 upload to {url} failed: {_one_line(exc) or type(exc).__name__}{after}"
        )

    # -- the protocol -----------------------------------------------------------------------

    def site_url(self) -> str:
        key = f"{self.prefix}index.html"
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.bucket}/{key}"
        region = self.client.meta.region_name or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{key}"

    def check_bucket(self) -> None:
        """Fail fast, before any upload, on a wrong bucket, endpoint or credentials."""
        from botocore.config import Config

        # Few attempts here: a refused connection at the start is a configuration error,
        # not a blip; the upload client itself keeps its patient retries.
        quick = self.client.meta.config.merge(
            Config(retries={"total_max_attempts": 2, "mode": "standard"})
        )
        try:
            probe = self.session.client("s3", endpoint_url=self.endpoint_url, config=quick)
            # A listing under the prefix, not HeadBucket: IAM authorises HeadBucket as a
            # ListBucket with no prefix, which a prefix-scoped role is right to refuse.
            probe.list_objects_v2(Bucket=self.bucket, Prefix=self.prefix, MaxKeys=1)
        except Exception as exc:
            raise self.translate(exc) from None

    def list_run(self, run_id: str) -> dict[str, tuple[str, int]]:
        """Key -> (ETag, size) of what is already stored under the run's prefix (one listing)."""
        found: dict[str, tuple[str, int]] = {}
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._run_prefix(run_id)):
                for obj in page.get("Contents", []):
                    found[obj["Key"]] = (obj.get("ETag", "").strip('"'), int(obj.get("Size", 0)))
        except Exception as exc:
            raise self.translate(exc) from None
        return found

    def _run_prefix(self, run_id: str) -> str:
        return f"{self.prefix}runs/{run_id}/"

    def read_latest(self) -> dict[str, Any] | None:
        """The current latest.json, or None when there is none (or it is not ours)."""
        from botocore.exceptions import ClientError

        try:
            body = self.client.get_object(Bucket=self.bucket, Key=f"{self.prefix}latest.json")
            data = json.loads(body["Body"].read())
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.translate(exc, f"{self.prefix}latest.json") from None
        except (ValueError, UnicodeDecodeError):
            logger.warning(
                "s3://%s/%slatest.json is not JSON; replacing it", self.bucket, self.prefix
            )
            return None
        except Exception as exc:
            raise self.translate(exc, f"{self.prefix}latest.json") from None
        return data if isinstance(data, dict) else None

    def _etag(self, key: str) -> str | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise self.translate(exc, key) from None
        except Exception as exc:
            raise self.translate(exc, key) from None
        return str(head.get("ETag", "")).strip('"')

    def upload_run(self, run_id: str, files: list[LocalFile]) -> tuple[int, int]:
        """Upload what is missing or changed; return (objects uploaded, bytes uploaded)."""
        from s3transfer.manager import TransferConfig, TransferManager
        from s3transfer.subscribers import BaseSubscriber

        existing = self.list_run(run_id)
        run_prefix = self._run_prefix(run_id)
        todo = [f for f in files if existing.get(run_prefix + f.rel) != (f.etag, f.size)]
        logger.info(
            "publish: %d of %d objects to upload to s3://%s/%s (%d unchanged)",
            len(todo),
            len(files),
            self.bucket,
            run_prefix,
            len(files) - len(todo),
        )
        if not todo:
            return 0, 0
        progress = Progress(len(todo), sum(f.size for f in todo))

        class _Subscriber(BaseSubscriber):
            def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
                progress.add_bytes(bytes_transferred)

            def on_done(self, future: Any, **kwargs: Any) -> None:
                progress.file_done()

        subscriber = _Subscriber()
        config = TransferConfig(
            multipart_threshold=MULTIPART_THRESHOLD,
            multipart_chunksize=MULTIPART_CHUNKSIZE,
            max_request_concurrency=self.max_concurrency,
            # Submitting (a stat and a few objects per file) is the bottleneck for many tiny
            # files; more than one submitter keeps the request threads fed.
            max_submission_concurrency=max(4, self.max_concurrency // 4),
        )
        self.uploads_started = True
        futures: list[tuple[LocalFile, Any]] = []
        failure: tuple[BaseException, str] | None = None
        cancel = ""
        manager = TransferManager(self.client, config)
        try:
            for f in todo:
                extra = {
                    "ContentType": content_type(f.rel),
                    "CacheControl": IMMUTABLE_CACHE,
                    "Metadata": {"sha256": f.sha256},
                }
                future = manager.upload(
                    str(f.path),
                    self.bucket,
                    run_prefix + f.rel,
                    extra_args=extra,
                    subscribers=[subscriber],
                )
                futures.append((f, future))
            for f, future in futures:
                try:
                    future.result()
                except Exception as exc:  # first failure: stop the rest, report this one
                    failure = (exc, run_prefix + f.rel)
                    cancel = "another upload failed"
                    break
        except BaseException:  # Ctrl-C while submitting or waiting
            cancel = "interrupted"
            raise
        finally:
            # Cancel what has not started; wait for requests in flight either way, so no
            # thread writes to the bucket after publish() has returned or raised.
            manager.shutdown(cancel=bool(cancel), cancel_msg=cancel)
            progress.close()
        if failure is not None:
            error, key = failure
            raise self.translate(error, key) from None
        return len(todo), sum(f.size for f in todo)

    def put_small(self, key: str, body: bytes, ctype: str) -> None:
        try:
            self.client.put_object(
                Bucket=self.bucket,
                Key=key,
                Body=body,
                ContentType=ctype,
                CacheControl=ENTRY_CACHE,
                Metadata={"sha256": hashlib.sha256(body).hexdigest()},
            )
        except Exception as exc:
            raise self.translate(exc, key) from None

    def list_run_ids(self) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        runs_prefix = f"{self.prefix}runs/"
        ids = []
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=runs_prefix, Delimiter="/"):
                for common in page.get("CommonPrefixes", []):
                    ids.append(common["Prefix"][len(runs_prefix) :].rstrip("/"))
        except Exception as exc:
            raise self.translate(exc) from None
        return [i for i in ids if i]

    def delete_run(self, run_id: str) -> None:
        prefix = self._run_prefix(run_id)
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                for i in range(0, len(keys), _DELETE_BATCH):
                    response = self.client.delete_objects(
                        Bucket=self.bucket,
                        Delete={"Objects": keys[i : i + _DELETE_BATCH], "Quiet": True},
                    )
                    errors = response.get("Errors", [])
                    if errors:
                        first = errors[0]
                        raise PublishError(
                            f"could not delete s3://{self.bucket}/{first.get('Key')} of old run "
                            f"{run_id}: {first.get('Code')} {_one_line(first.get('Message', ''))}"
                        )
        except PublishError:
            raise
        except Exception as exc:
            raise self.translate(exc, prefix) from None

    def publish(
        self, run_id: str, files: list[LocalFile], *, keep_runs: int | None, started: float
    ) -> PublishSummary:
        self.check_bucket()
        previous = self.read_latest()
        if previous:
            logger.info(
                "publish: s3://%s/%slatest.json now points to run %s",
                self.bucket,
                self.prefix,
                previous.get("run_id"),
            )
        uploaded, sent = self.upload_run(run_id, files)

        # Entry points last, latest.json very last: only now is every run object in place.
        page = redirect_page(run_id).encode("utf-8")
        page_md5 = hashlib.md5(page, usedforsecurity=False).hexdigest()
        same_run = bool(previous) and previous.get("run_id") == run_id  # type: ignore[union-attr]
        entry_written = False
        if not (same_run and self._etag(f"{self.prefix}index.html") == page_md5):
            latest = json.dumps(latest_document(run_id, files, _now_iso()), indent=2) + "\n"
            self.put_small(f"{self.prefix}index.html", page, CONTENT_TYPES[".html"])
            self.put_small(
                f"{self.prefix}latest.json", latest.encode("utf-8"), CONTENT_TYPES[".json"]
            )
            entry_written = True

        removed: list[str] = []
        if keep_runs is not None:
            # Re-read: another publisher may have moved latest.json since; never delete
            # whatever it names, nor the run just published.
            pointer = self.read_latest()
            protected = {run_id}
            if pointer and isinstance(pointer.get("run_id"), str):
                protected.add(pointer["run_id"])
            for old in _runs_to_remove(self.list_run_ids(), keep_runs, protected):
                self.delete_run(old)
                removed.append(old)
                logger.info(
                    "publish: removed old run s3://%s/%s", self.bucket, self._run_prefix(old)
                )
        return PublishSummary(
            run_id=run_id,
            target=str(self.target),
            url=self.site_url(),
            objects=len(files),
            uploaded=uploaded,
            skipped=len(files) - uploaded,
            bytes_total=sum(f.size for f in files),
            bytes_uploaded=sent,
            seconds=time.monotonic() - started,
            entry_points_written=entry_written,
            removed_runs=tuple(removed),
        )


# ------------------------------------------------------------------------------ local folder


class LocalPublisher(_Publisher):
    """The same layout in a folder: a new run appears by one directory rename, entry points
    by atomic file renames (index.html, then latest.json), so a reader of the folder sees
    the same all-or-nothing behaviour as a reader of the bucket."""

    def __init__(self, target: PublishTarget) -> None:
        assert target.path is not None
        self.root = target.path
        self.target = target

    def _fail(self, what: str, exc: OSError) -> PublishError:
        return PublishError(f"cannot {what}: {exc.strerror or exc}; the previous site is intact")

    def publish(
        self, run_id: str, files: list[LocalFile], *, keep_runs: int | None, started: float
    ) -> PublishSummary:
        if self.root.exists() and not self.root.is_dir():
            raise PublishError(f"publish target {self.root} is a file: give a folder")
        runs = self.root / "runs"
        try:
            runs.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise self._fail(f"create {runs}", exc) from None
        final = runs / run_id
        if final.is_dir():
            uploaded, sent = self._update_run(final, files)
        else:
            uploaded, sent = self._new_run(runs, final, files)

        page = redirect_page(run_id).encode("utf-8")
        previous = self._read_latest()
        same_run = previous is not None and previous.get("run_id") == run_id
        entry_written = False
        index = self.root / "index.html"
        if not (same_run and index.is_file() and index.read_bytes() == page):
            latest = json.dumps(latest_document(run_id, files, _now_iso()), indent=2) + "\n"
            self._write_atomic(index, page)
            self._write_atomic(self.root / "latest.json", latest.encode("utf-8"))
            entry_written = True

        removed: list[str] = []
        if keep_runs is not None:
            pointer = self._read_latest()
            protected = {run_id}
            if pointer and isinstance(pointer.get("run_id"), str):
                protected.add(pointer["run_id"])
            existing = [p.name for p in runs.iterdir() if p.is_dir() and not p.name.startswith(".")]
            for old in _runs_to_remove(existing, keep_runs, protected):
                self._remove_run(runs / old)
                removed.append(old)
                logger.info("publish: removed old run %s", runs / old)
        return PublishSummary(
            run_id=run_id,
            target=str(self.root),
            url=(self.root / "index.html").resolve().as_uri(),
            objects=len(files),
            uploaded=uploaded,
            skipped=len(files) - uploaded,
            bytes_total=sum(f.size for f in files),
            bytes_uploaded=sent,
            seconds=time.monotonic() - started,
            entry_points_written=entry_written,
            removed_runs=tuple(removed),
        )

    def _new_run(self, runs: Path, final: Path, files: list[LocalFile]) -> tuple[int, int]:
        """Copy into a hidden temporary folder, then rename it into place in one step."""
        try:
            staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=runs))
        except OSError as exc:
            raise self._fail(f"create a staging folder in {runs}", exc) from None
        progress = Progress(len(files), sum(f.size for f in files))
        try:
            for f in files:
                dest = staging / f.rel
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(f.path, dest)
                progress.add_bytes(f.size)
                progress.file_done()
            os.replace(staging, final)  # atomic on one filesystem
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise self._fail(f"copy the run into {final}", exc) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        finally:
            progress.close()
        return len(files), sum(f.size for f in files)

    def _update_run(self, final: Path, files: list[LocalFile]) -> tuple[int, int]:
        """Re-run of a published run: replace only missing or changed files, each atomically."""
        todo = [f for f in files if not _same_file(final / f.rel, f)]
        progress = Progress(len(todo), sum(f.size for f in todo))
        try:
            for f in todo:
                self._write_atomic(final / f.rel, f.path)
                progress.add_bytes(f.size)
                progress.file_done()
        finally:
            progress.close()
        return len(todo), sum(f.size for f in todo)

    def _write_atomic(self, dest: Path, source: bytes | Path) -> None:
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            if isinstance(source, Path):
                shutil.copyfile(source, tmp)
            else:
                tmp.write_bytes(source)
            os.replace(tmp, dest)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise self._fail(f"write {dest}", exc) from None

    def _read_latest(self) -> dict[str, Any] | None:
        try:
            data = json.loads((self.root / "latest.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def _remove_run(self, path: Path) -> None:
        """Rename out of sight first, so a reader never finds half a deleted run."""
        trash = path.with_name(f".trash-{path.name}-{os.getpid()}")
        try:
            os.replace(path, trash)
        except OSError as exc:
            raise self._fail(f"remove old run {path}", exc) from None
        shutil.rmtree(trash, ignore_errors=True)


def _same_file(path: Path, f: LocalFile) -> bool:
    try:
        if path.stat().st_size != f.size:
            return False
        sha = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                sha.update(chunk)
    except OSError:
        return False
    return sha.hexdigest() == f.sha256
