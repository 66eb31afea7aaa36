"""Shared by the publishing tests: a synthetic finished run, a client to check what the S3
server holds, and a fault-injecting proxy that records the requests it passes on."""

from __future__ import annotations

import http.client
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import urlsplit

import boto3
import pytest
from bench.motoserver import FAKE_CREDENTIALS

from job.cli import main

REPO = Path(__file__).resolve().parent.parent

RUN_A = "20261126T181000Z-aaaaaaaa"
RUN_B = "20261127T090000Z-bbbbbbbb"
RUN_C = "20261128T120000Z-cccccccc"

# The published part of the synthetic run, relative to the run root.
PUBLISHED = {
    "run.json": "application/json",
    "recommendations.duckdb": "application/octet-stream",
    "parquet/predictions.parquet": "application/vnd.apache.parquet",
    "parquet/top_k.parquet": "application/vnd.apache.parquet",
    "site/index.html": "text/html; charset=utf-8",
    "site/users/557.html": "text/html; charset=utf-8",
    "site/movies/1.html": "text/html; charset=utf-8",
    "site/static/style.css": "text/css; charset=utf-8",
    "site/static/app.js": "text/javascript; charset=utf-8",
    "site/chart.svg": "image/svg+xml",
    "site/logo.png": "image/png",
    "site/search/users.json": "application/json",
    "site/data/history.csv": "text/csv; charset=utf-8",
    "site/robots.txt": "text/plain; charset=utf-8",
    "model.keras": "application/octet-stream",
    "encoding.json": "application/json",
}
NOT_PUBLISHED = (
    "history.csv",
    "parts/part-0.parquet",
    "dataset/ratings.csv",
)

INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Recommendations</title>
<link rel="stylesheet" href="static/style.css"><script src="static/app.js" defer></script>
</head><body><h1>MovieLens recommendations — ★ ünïcode</h1>
<img id="chart" src="chart.svg" alt="error over epochs">
<a id="user" href="users/557.html">user 557</a>
<a id="db" href="../recommendations.duckdb">database</a>
</body></html>
"""
USER_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>User 557</title>
<link rel="stylesheet" href="../static/style.css"></head>
<body><h1 id="who">User 557</h1><a href="../movies/1.html">Toy Story (1995)</a></body></html>
"""
SVG = (
    '<svg xmlns="http://www.w3.org/2000/svg" width="40" height="20">'
    '<rect width="40" height="20" fill="#36c"/></svg>\n'
)
# A 1x1 PNG.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c489"
    "0000000d49444154789c6360f8cfc0f01f0005000201a5b1e6a80000000049454e44ae426082"
)


def _top_k_parquet() -> bytes:
    """A real top_k Parquet file (publish compares each run's top 10s with the previous run's)."""
    import io

    import pandas as pd

    buffer = io.BytesIO()
    frame = pd.DataFrame({"user_id": [557, 557, 1], "rank": [1, 2, 1], "movie_id": [1, 2, 1]})
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


_TOP_K = _top_k_parquet()


@contextmanager
def restored_logging() -> Iterator[None]:
    """job.cli.main reconfigures logging; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    job_level = logging.getLogger("job").level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("job").setLevel(job_level)


def cli(argv: list[str]) -> int:
    """``python -m job`` in-process, with the logging set up as it was before. The out folders
    here are shaped like a finished run, not made by one, so the CLI's run-folder check
    (preflight.require, tested on real runs in test_hardening_folders.py) is skipped."""
    with restored_logging(), mock.patch("job.runfolder.preflight.require"):
        return main(argv)


def make_out(root: Path, run_id: str = RUN_A, *, variant: str = "") -> Path:
    """A small out folder shaped like a finished run (published and unpublished files)."""
    out = root / f"out-{run_id}"
    files: dict[str, bytes | str] = {
        "run.json": json.dumps({"run_id": run_id, "seed": 42, "metrics": {"mae": 0.68}}),
        "recommendations.duckdb": b"DUCK" + bytes(range(256)) * 8 + variant.encode(),
        "parquet/predictions.parquet": b"PAR1" + b"\x00" * 300 + b"PAR1",
        "parquet/top_k.parquet": _TOP_K,
        "site/index.html": INDEX_HTML.replace("</h1>", f"</h1><p>{run_id}{variant}</p>"),
        "site/users/557.html": USER_HTML,
        "site/movies/1.html": USER_HTML.replace("User 557", "Toy Story"),
        "site/static/style.css": "h1 { color: rgb(1, 2, 3); }\n",
        "site/static/app.js": "document.documentElement.dataset.ok = 'yes';\n",
        "site/chart.svg": SVG,
        "site/logo.png": PNG,
        "site/search/users.json": json.dumps([557, 1, 2]),
        "site/data/history.csv": "epoch,mae\n1,0.9\n2,0.7\n",
        "site/robots.txt": "User-agent: *\n",
        "model.keras": b"PK\x03\x04 a model",
        "encoding.json": "{}",
        "history.csv": "epoch,mae\n",
        "parts/part-0.parquet": b"PAR1 part PAR1",
        "dataset/ratings.csv": "userId,movieId,rating,timestamp\n",
    }
    for rel, content in files.items():
        path = out / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return out


def isolate_aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    """Fake credentials in the environment, and nothing of this machine's AWS set-up."""
    for key in (
        "AWS_PROFILE",
        "AWS_DEFAULT_PROFILE",
        "AWS_ENDPOINT_URL",
        "AWS_ENDPOINT_URL_S3",
        "AWS_MAX_ATTEMPTS",
        "AWS_RETRY_MODE",
        "AWS_ROLE_ARN",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_CA_BUNDLE",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
    ):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    # No instance-metadata lookups: they would make a missing-credentials test wait.
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    return dict(FAKE_CREDENTIALS)


def s3(endpoint: str) -> Any:
    """A plain client for checking what the server holds (not the code under test)."""
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )


def list_keys(endpoint: str, bucket: str, prefix: str = "") -> dict[str, dict[str, Any]]:
    found = {}
    for page in (
        s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    ):
        for obj in page.get("Contents", []):
            found[obj["Key"]] = obj
    return found


def get(endpoint: str, bucket: str, key: str) -> bytes:
    return bytes(s3(endpoint).get_object(Bucket=bucket, Key=key)["Body"].read())


class FaultProxy:
    """An HTTP proxy in front of the S3 server that can fail requests and records the order.

    ``fault(method, path, attempt)`` returns None to forward, or "503" (SlowDown), "500"
    (InternalError) or "drop" (close the connection without an answer). ``attempt`` counts
    the requests seen so far for that method and path, from 1. ``log`` records each request
    once answered, with its status (0 for a 5xx fault, -1 dropped, -2 cut off by the client
    before its body was complete: not forwarded, as a store would not store it).
    """

    def __init__(self, upstream: str, fault: Callable[[str, str, int], str | None]) -> None:
        self.upstream = urlsplit(upstream)
        self.fault = fault
        self.log: list[tuple[str, str, int]] = []  # (method, path, status), in answer order
        self.faults = 0
        self._seen: dict[tuple[str, str], int] = {}
        self._lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            upstream_conn: http.client.HTTPConnection | None = None

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _relay(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                path = urlsplit(self.path).path
                if len(body) < length:
                    # The client gave up mid-body. A store drops such a request; forwarding
                    # the part as a whole object would store what no client sent.
                    with proxy._lock:
                        proxy.log.append((self.command, path, -2))
                    self.close_connection = True
                    return
                with proxy._lock:
                    attempt = proxy._seen.get((self.command, path), 0) + 1
                    proxy._seen[(self.command, path)] = attempt
                kind = proxy.fault(self.command, path, attempt)
                if kind is not None:
                    with proxy._lock:
                        proxy.faults += 1
                        proxy.log.append((self.command, path, -1 if kind == "drop" else 0))
                    self._fail(kind)
                    return
                if self.upstream_conn is None:
                    self.upstream_conn = http.client.HTTPConnection(
                        proxy.upstream.hostname or "127.0.0.1", proxy.upstream.port, timeout=30
                    )
                skip = {
                    "connection",
                    "keep-alive",
                    "expect",
                    "transfer-encoding",
                    "proxy-connection",
                    "content-length",
                }
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                headers["Content-Length"] = str(len(body))
                self.upstream_conn.request(self.command, self.path, body=body, headers=headers)
                response = self.upstream_conn.getresponse()
                data = response.read()
                with proxy._lock:
                    proxy.log.append((self.command, path, response.status))
                self.send_response(response.status)
                for key, value in response.getheaders():
                    if key.lower() not in skip:
                        self.send_header(key, value)
                if self.command == "HEAD":
                    declared = response.getheader("Content-Length")
                    if declared is not None:
                        self.send_header("Content-Length", declared)
                else:
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _fail(self, kind: str) -> None:
                if kind == "drop":
                    self.close_connection = True
                    return
                code, status = ("SlowDown", 503) if kind == "503" else ("InternalError", 500)
                payload = (
                    '<?xml version="1.0" encoding="UTF-8"?>\n'
                    f"<Error><Code>{code}</Code><Message>injected by the test</Message>"
                    "<RequestId>fault</RequestId></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _relay

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def puts(self, status: int = 200) -> list[str]:
        """Paths of PUTs that reached the server with this status, in order."""
        return [path for method, path, code in self.log if method == "PUT" and code == status]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def public_read_policy(bucket: str) -> str:
    """A bucket policy letting anyone GET (and HEAD) its objects, as a website bucket's does
    (infra/ sets one up); moto, like S3, answers anonymous GETs only under such a policy.

    S3 authorizes a HEAD by s3:GetObject; moto asks for an "s3:HeadObject" instead, named
    here so that anonymous HEADs work as on S3 (DuckDB-Wasm sizes the SQL page's database
    with one)."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Sid": "PublicRead",
                    "Effect": "Allow",
                    "Principal": "*",
                    "Action": ["s3:GetObject", "s3:HeadObject"],
                    "Resource": f"arn:aws:s3:::{bucket}/*",
                }
            ],
        }
    )


class Gate:
    """A proxy fault: lets the first ``allow`` PUTs under ``marker`` through, then holds every
    further one (the upload is in flight) until ``release``; then drops them, or forwards
    them with ``forward=True``."""

    def __init__(self, marker: str, allow: int) -> None:
        self.marker, self.allow = marker, allow
        self.seen = 0
        self.forward = False
        self._lock = threading.Lock()
        self._released = threading.Event()

    def __call__(self, method: str, path: str, attempt: int) -> str | None:
        if method != "PUT" or self.marker not in path:
            return None
        with self._lock:
            self.seen += 1
            if self.seen <= self.allow:
                return None
        self._released.wait(60)
        return None if self.forward else "drop"

    def release(self, *, forward: bool = False) -> None:
        self.forward = forward
        self._released.set()


def job_process(
    args: list[str], tmp_path: Path, name: str, *, code: str | None = None
) -> subprocess.Popen[bytes]:
    """``python -m job ARGS`` (or ``python -c CODE ARGS``) as a child process running this
    checkout's ``job``, with its stdout and stderr in files beside the test."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, *(["-c", code] if code else ["-m", "job"]), *args]
    with (tmp_path / f"{name}.out").open("wb") as out, (tmp_path / f"{name}.err").open("wb") as err:
        return subprocess.Popen(command, env=env, cwd=REPO, stdout=out, stderr=err)


def wait_for(
    condition: Callable[[], bool], proc: subprocess.Popen[bytes], what: str, timeout: float = 60
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the publish exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.01)


def kill(proc: subprocess.Popen[bytes]) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=30) == -signal.SIGKILL
