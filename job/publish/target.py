"""Where a run is published: ``s3://BUCKET/PREFIX``, ``file:///path`` or a folder path."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

from job.core.errors import PublishError

# https://docs.aws.amazon.com/AmazonS3/latest/userguide/bucketnamingrules.html
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


@dataclass(frozen=True)
class PublishTarget:
    """An S3 bucket and key prefix, or a local folder."""

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
        return _parse_s3(target, parsed.netloc, parsed.path, bool(parsed.query or parsed.fragment))
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


def _parse_s3(target: str, bucket: str, path: str, has_query: bool) -> PublishTarget:
    if not bucket:
        raise PublishError(f"invalid S3 URL {target!r}: no bucket name; use s3://BUCKET/PREFIX")
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise PublishError(
            f"invalid bucket name {bucket!r} in {target!r}: S3 bucket names are 3-63 "
            "characters of lowercase letters, digits, dots and hyphens"
        )
    if has_query or "?" in target or "#" in target:
        raise PublishError(
            f"invalid S3 URL {target!r}: no query or fragment allowed; use s3://BUCKET/PREFIX"
        )
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts) or "//" in path.strip("/"):
        raise PublishError(
            f"invalid S3 prefix {path!r} in {target!r}: no empty, '.' or '..' path segments"
        )
    prefix = "/".join(parts) + "/" if parts else ""
    return PublishTarget(kind="s3", bucket=bucket, prefix=prefix)


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
