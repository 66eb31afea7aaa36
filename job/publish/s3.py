"""``Storage`` on S3 and S3-compatible stores, through boto3 and its transfer manager.

Credentials come only from the standard AWS chain (environment, profile, web identity/OIDC,
instance role); this module never reads, logs or writes them. Retries are botocore's own
(standard or adaptive mode, exponential backoff with jitter); uploads run in parallel in
s3transfer's thread pool. Every botocore exception becomes one ``PublishError`` line here, at
the edge.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import threading
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from job.core.errors import PublishError
from job.publish import runfiles
from job.publish.runfiles import LocalFile, content_type
from job.publish.storage import Stored
from job.publish.target import PublishTarget

logger = logging.getLogger(__name__)

# botocore's default is 3 attempts; a 10,000-object upload meets the odd 503 and SlowDown.
# Standard mode backs off exponentially with jitter per request, which with 32 parallel
# uploads already lowers the request rate; "adaptive" (AWS_RETRY_MODE=adaptive) adds a
# client-wide rate limiter that, after a burst of SlowDowns early in a run, throttles the
# whole upload far below what the store allows.
DEFAULT_MAX_ATTEMPTS = 10
DEFAULT_RETRY_MODE = "standard"
_DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys
_DENIED = {
    "403",
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
    "AllAccessDisabled",
}


class S3Storage:
    """A bucket and key prefix."""

    def __init__(
        self,
        target: PublishTarget,
        *,
        endpoint_url: str | None = None,
        max_concurrency: int = 32,
        max_attempts: int | None = None,
    ) -> None:
        self.bucket = target.bucket
        self.prefix = target.prefix
        self.endpoint_url = endpoint_url
        self.max_concurrency = max_concurrency
        self.puts = 0
        self._puts_lock = threading.Lock()
        self.session, self.client = _make_client(endpoint_url, max_concurrency, max_attempts)
        # Set by put_files at its first failed upload: from then on no request is sent
        # (this handler raises before the counting one runs).
        self._stop_sending = threading.Event()
        self.client.meta.events.register("before-send.s3", self._refuse_after_failure)
        # Count what a store bills: every HTTP PUT sent, retries and multipart parts included.
        self.client.meta.events.register("before-send.s3", self._count_put)
        # Cleared if the store answers a conditional write with 501 Not Implemented.
        self.conditional_writes = True

    def _count_put(self, request: Any, **kwargs: Any) -> None:
        if request.method == "PUT":
            with self._puts_lock:  # sent from the transfer manager's threads
                self.puts += 1

    # -- naming -----------------------------------------------------------------------------

    def describe(self, key: str = "") -> str:
        return f"s3://{self.bucket}/{self.prefix}{key}".rstrip("/")

    def url(self, key: str) -> str:
        if self.endpoint_url:
            return f"{self.endpoint_url}/{self.bucket}/{self.prefix}{key}"
        region = self.client.meta.region_name or "us-east-1"
        return f"https://{self.bucket}.s3.{region}.amazonaws.com/{self.prefix}{key}"

    # -- Storage ----------------------------------------------------------------------------

    def check(self) -> None:
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
            raise self._translate(exc) from None

    def list_objects(self, prefix: str) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                key = obj["Key"][len(self.prefix) :]
                found[key] = (obj.get("ETag", "").strip('"'), int(obj.get("Size", 0)))
        return found

    def list_folders(self, prefix: str) -> list[str]:
        full = self.prefix + prefix
        names: list[str] = []
        for page in self._pages(prefix, Delimiter="/"):
            names.extend(
                c["Prefix"][len(full) :].rstrip("/") for c in page.get("CommonPrefixes", [])
            )
        return [n for n in names if n]

    def _pages(self, prefix: str, **options: str) -> Any:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            yield from paginator.paginate(
                Bucket=self.bucket, Prefix=self.prefix + prefix, **options
            )
        except Exception as exc:
            raise self._translate(exc) from None

    def read(self, key: str) -> bytes | None:
        found = self.read_versioned(key)
        return None if found is None else found[0]

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        full = self.prefix + key
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=full)
            return bytes(response["Body"].read()), str(response.get("ETag", "")).strip('"')
        except Exception as exc:
            if _error_code(exc) in ("NoSuchKey", "404"):
                return None
            raise self._translate(exc, full) from None

    def last_modified(self, prefix: str) -> float | None:
        newest: float | None = None
        for page in self._pages(prefix):
            for obj in page.get("Contents", []):
                # Unparsed ISO text (see _make_client), e.g. 2026-12-03T09:40:00.000Z.
                stamp = obj.get("LastModified")
                when = (
                    datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
                    if isinstance(stamp, str)
                    else stamp.timestamp()
                )
                newest = when if newest is None else max(newest, when)
        return newest

    def put_files(
        self,
        files: Sequence[tuple[str, LocalFile]],
        cache_control: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        from s3transfer.manager import TransferManager

        failures: list[tuple[str, BaseException]] = []
        stop = self._stop_sending
        subscribers = [_watcher(on_bytes, stop, failures)]
        stop.clear()
        # On a failure the block is left normally: requests already sent finish whole (an S3
        # PUT is all or nothing), every later one is refused before it is sent, and the
        # manager's shutdown waits for its threads. Only then is the failure reported, so no
        # request leaves after it. (Leaving the block by an exception would cancel the
        # transfers, which cuts bodies in flight; that stays the way out for Ctrl-C. And the
        # context manager, not shutdown(cancel=True), which passes its arguments wrongly:
        # boto/s3transfer#143.)
        try:
            with TransferManager(self.client, self._transfer_config()) as manager:
                futures = [
                    manager.upload(
                        str(f.path),
                        self.bucket,
                        self.prefix + key,
                        extra_args={
                            "ContentType": content_type(key),
                            "CacheControl": cache_control,
                            "Metadata": {"sha256": f.sha256},
                        },
                        subscribers=subscribers,
                    )
                    for key, f in files
                ]
                for future in futures:
                    with contextlib.suppress(Exception):  # on_done has recorded it
                        future.result()
        finally:
            stop.clear()
        if failures:
            key, exc = failures[0]
            raise self._translate(exc, key) from None

    def _transfer_config(self) -> Any:
        from s3transfer.manager import TransferConfig

        return TransferConfig(
            multipart_threshold=runfiles.MULTIPART_THRESHOLD,
            multipart_chunksize=runfiles.MULTIPART_CHUNKSIZE,
            max_request_concurrency=self.max_concurrency,
            # Submitting (a stat and a few objects per file) is the bottleneck for many tiny
            # files; more than one submitter keeps the request threads fed.
            max_submission_concurrency=max(4, self.max_concurrency // 4),
        )

    def _refuse_after_failure(self, request: Any, **kwargs: Any) -> None:
        # Writes only (PutObject, UploadPart: PUT; Create/CompleteMultipartUpload: POST): a
        # failed multipart upload's clean-up, AbortMultipartUpload, is a DELETE and goes out.
        if self._stop_sending.is_set() and request.method in ("PUT", "POST"):
            raise _UploadStopped("an earlier upload failed")

    def put_bytes(self, key: str, data: bytes, cache_control: str) -> None:
        try:
            self._put_object(key, data, cache_control)
        except Exception as exc:
            raise self._translate(exc, self.prefix + key) from None

    def _put_object(self, key: str, data: bytes, cache_control: str, **condition: str) -> None:
        self.client.put_object(
            Bucket=self.bucket,
            Key=self.prefix + key,
            Body=data,
            ContentType=content_type(key),
            CacheControl=cache_control,
            Metadata={"sha256": hashlib.sha256(data).hexdigest()},
            **condition,
        )

    def put_if(self, key: str, data: bytes, cache_control: str, expected: str | None) -> bool:
        if not self.conditional_writes:
            self.put_bytes(key, data, cache_control)
            return True
        condition = {"IfMatch": f'"{expected}"'} if expected else {"IfNoneMatch": "*"}
        try:
            self._put_object(key, data, cache_control, **condition)
        except Exception as exc:
            code = _error_code(exc)
            # 412: the object changed (or appeared) since it was read. 409: a concurrent
            # conditional write to the same key; S3 asks to read again and retry. 404: an
            # If-Match on an object deleted since it was read.
            if code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return False
            if code in ("NoSuchKey", "404") and expected:
                return False
            if code in ("NotImplemented", "501"):
                # A store without conditional writes: write, and let the caller read back.
                logger.warning(
                    "%s does not support conditional writes: switching by write and read-back",
                    self.endpoint_url or "the store",
                )
                self.conditional_writes = False
                self.put_bytes(key, data, cache_control)
                return True
            raise self._translate(exc, self.prefix + key) from None
        return True

    def delete(self, prefix: str) -> None:
        keys = [{"Key": self.prefix + key} for key in self.list_objects(prefix)]
        for i in range(0, len(keys), _DELETE_BATCH):
            try:
                response = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": keys[i : i + _DELETE_BATCH], "Quiet": True},
                )
            except Exception as exc:
                raise self._translate(exc, self.prefix + prefix) from None
            if errors := response.get("Errors", []):
                first = errors[0]
                raise PublishError(
                    f"could not delete s3://{self.bucket}/{first.get('Key')}: "
                    f"{first.get('Code')} {_one_line(first.get('Message', ''))}"
                )

    # -- errors -----------------------------------------------------------------------------

    def _translate(self, exc: BaseException, key: str | None = None) -> PublishError:
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

        url = f"s3://{self.bucket}/{key}" if key else self.describe()
        where = self.endpoint_url or "AWS S3"
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
                f"cannot reach the S3 endpoint {where} for {url}: check --endpoint-url "
                "/ AWS_ENDPOINT_URL, the network, and that the server is running"
            )
        if isinstance(exc, HTTPClientError):  # connection dropped, read timeout
            return PublishError(
                f"the S3 endpoint {where} dropped or timed out on {url} after retries "
                f"({_one_line(exc)})"
            )
        if isinstance(exc, ClientError):
            error = exc.response.get("Error", {})
            code = str(error.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code == "NoSuchBucket" or (code == "404" and key is None):
                return PublishError(
                    f"bucket {self.bucket!r} does not exist at {where}: create it or "
                    "fix the bucket in the s3:// URL"
                )
            if code in _DENIED:
                return PublishError(
                    f"access denied to {url} ({code}): check the credentials and that they "
                    "may s3:ListBucket, s3:GetObject, s3:PutObject and s3:DeleteObject on "
                    "this bucket"
                )
            message = _one_line(error.get("Message", "")) or "no message"
            return PublishError(
                f"S3 refused a request for {url}: {code or status} {message} (after retries)"
            )
        if isinstance(exc, OSError):
            return PublishError(f"cannot read a file to upload to {url}: {_one_line(exc)}")
        return PublishError(f"S3 request for {url} failed: {_one_line(exc) or type(exc).__name__}")


@functools.cache
def _service_models() -> Any:
    """botocore's loader of service models: it parses the S3 model (JSON, most of a client's
    set-up) and then only reads it, so one per process serves every publish's clients."""
    import botocore.session

    return botocore.session.get_session().get_component("data_loader")


def _make_client(
    endpoint_url: str | None, max_concurrency: int, max_attempts: int | None
) -> tuple[Any, Any]:
    """A boto3 session and S3 client with botocore's retries and a connection per upload."""
    import boto3
    import botocore.session
    from botocore.config import Config

    if max_attempts is None:
        env = os.environ.get("AWS_MAX_ATTEMPTS")
        try:
            max_attempts = int(env) if env else DEFAULT_MAX_ATTEMPTS
        except ValueError:
            raise PublishError(f"AWS_MAX_ATTEMPTS must be a whole number (got {env!r})") from None
    if max_attempts < 1:
        raise PublishError(f"max attempts must be at least 1 (got {max_attempts})")
    mode = os.environ.get("AWS_RETRY_MODE") or DEFAULT_RETRY_MODE
    if mode not in ("standard", "adaptive", "legacy"):
        raise PublishError(f"AWS_RETRY_MODE must be standard, adaptive or legacy (got {mode!r})")
    retries: Any = {"total_max_attempts": max_attempts, "mode": mode}
    config = Config(
        retries=retries,
        max_pool_connections=max_concurrency + 4,
        connect_timeout=10,
        read_timeout=60,
        # S3-compatible stores (MinIO, Ceph, a server on an IP) serve path-style URLs;
        # virtual-hosted ones need DNS for BUCKET.HOST that they rarely have.
        s3={"addressing_style": "path"} if endpoint_url else None,
    )
    try:
        core = botocore.session.get_session()
        core.register_component("data_loader", _service_models())
        # Listings return a timestamp per object, which publishing never reads; parsing them
        # with dateutil is most of the CPU of listing a 10,000-object run. (botocore's
        # credential providers accept the unparsed ISO text for STS expirations.)
        core.get_component("response_parser_factory").set_parser_defaults(timestamp_parser=str)
        session = boto3.session.Session(botocore_session=core)
        return session, session.client("s3", endpoint_url=endpoint_url, config=config)
    except Exception as exc:  # profile not found, bad region, bad config file ...
        raise PublishError(f"cannot set up an S3 client: {_one_line(exc)}") from None


class _UploadStopped(Exception):
    """Raised before sending a request once an earlier upload of the same batch failed."""


def _error_code(exc: BaseException) -> str | None:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code")
    return None if code is None else str(code)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _watcher(
    on_bytes: Callable[[int], None],
    stop: threading.Event,
    failures: list[tuple[str, BaseException]],
) -> Any:
    """The transfer manager's subscriber: progress to ``on_bytes``, and each failed upload
    into ``failures``; the first one sets ``stop``."""
    from s3transfer.subscribers import BaseSubscriber

    failures_lock = threading.Lock()

    class Progress(BaseSubscriber):
        def on_progress(self, future: Any, bytes_transferred: int, **kwargs: Any) -> None:
            on_bytes(bytes_transferred)

        def on_done(self, future: Any, **kwargs: Any) -> None:
            # Called in the worker thread as each transfer ends. The first real failure
            # stops new requests at once (before-send, _refuse_after_failure), not when
            # put_files would reach it in list order.
            try:
                future.result()
            except _UploadStopped:
                pass
            except Exception as exc:
                with failures_lock:
                    failures.append((future.meta.call_args.key, exc))
                if not stop.is_set():
                    stop.set()
                    logger.debug(
                        "publish: first failed upload seen (%s); no new upload starts",
                        future.meta.call_args.key,
                    )

    return Progress()
