"""job.publish.s3: the S3 store (retries, multipart uploads, the first failure stopping new
uploads, one-line errors for a wrong endpoint, bucket or credentials).

No in-process mocking of boto3: every test talks HTTP to moto's standalone server, a
subprocess on loopback, some of them through a small fault-injecting proxy
(publish_support.FaultProxy) that answers 503 SlowDown / 500 or drops connections and
records the order in which objects were written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from bench.motoserver import moto_server
from bench.publish import make_synthetic_out
from publish_support import (
    PUBLISHED,
    RUN_A,
    FaultProxy,
    cli,
    get,
    list_keys,
    make_out,
    public_read_policy,
    s3,
)

from job.core.errors import PublishError
from job.publish import publish


@pytest.mark.browser
def test_site_from_bucket_is_byte_identical_and_opens_in_chromium(
    bucket: str, s3_server: str, tmp_path: Path, browser: Any
) -> None:
    out = make_out(tmp_path)
    # A site bucket is public-read through its bucket policy (as infra/ sets it up);
    # the browser below fetches anonymously, like a visitor.
    s3(s3_server).put_bucket_policy(
        Bucket=bucket,
        Policy=public_read_policy(bucket),
    )
    publish(out, f"s3://{bucket}/web", endpoint_url=s3_server)

    prefix = f"web/runs/{RUN_A}/"
    downloaded = tmp_path / "downloaded"
    for key in list_keys(s3_server, bucket, prefix):
        dest = downloaded / key.removeprefix(prefix)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(get(s3_server, bucket, key))
    local = sorted(p.relative_to(out / "site") for p in (out / "site").rglob("*") if p.is_file())
    remote = sorted(
        p.relative_to(downloaded / "site") for p in (downloaded / "site").rglob("*") if p.is_file()
    )
    assert remote == local
    for rel in local:
        assert (downloaded / "site" / rel).read_bytes() == (out / "site" / rel).read_bytes(), rel
    assert (downloaded / "recommendations.duckdb").read_bytes() == (
        out / "recommendations.duckdb"
    ).read_bytes()

    page = browser.new_page()
    try:
        page.set_default_timeout(15_000)
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        # The entry point, served by the bucket, redirects to the run's site.
        page.goto(f"{s3_server}/{bucket}/web/index.html")
        page.wait_for_url(f"**/web/runs/{RUN_A}/site/index.html", timeout=15_000)
        assert page.title() == "Recommendations"
        assert "ünïcode" in page.inner_text("h1")
        assert page.eval_on_selector("h1", "e => getComputedStyle(e).color") == "rgb(1, 2, 3)"
        page.wait_for_function("document.documentElement.dataset.ok === 'yes'")
        page.wait_for_function("document.getElementById('chart').complete")
        assert page.eval_on_selector("#chart", "e => e.naturalWidth") == 40
        db = page.evaluate(
            "fetch('../recommendations.duckdb')"
            ".then(r => [r.status, r.headers.get('content-type')])"
        )
        assert db == [200, "application/octet-stream"]
        page.click("#user")
        page.wait_for_url("**/site/users/557.html")
        assert page.inner_text("#who") == "User 557"
        assert errors == []
    finally:
        page.close()


def test_rerun_skips_multipart_uploads_too(
    bucket: str,
    s3_server: str,
    make_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A big database goes up in parts; its ETag is then MD5-of-parts, which must still match."""
    mib = 1024 * 1024
    monkeypatch.setattr("job.publish.runfiles.MULTIPART_THRESHOLD", 5 * mib)  # S3's smallest part
    monkeypatch.setattr("job.publish.runfiles.MULTIPART_CHUNKSIZE", 5 * mib)
    out = make_out(tmp_path)
    (out / "recommendations.duckdb").write_bytes(bytes(range(256)) * (21 * mib // 256 // 4))
    publish(out, f"s3://{bucket}/m", endpoint_url=s3_server)
    key = f"m/runs/{RUN_A}/recommendations.duckdb"
    etag = list_keys(s3_server, bucket, key)[key]["ETag"]
    assert etag.strip('"').endswith("-2")  # really a multipart upload: 5 MiB + 0.25 MiB

    proxy = make_proxy()
    again = publish(out, f"s3://{bucket}/m", endpoint_url=proxy.endpoint)
    assert again.uploaded == 0 and proxy.puts() == []


@pytest.mark.parametrize("kind", ["503", "500", "drop"])
def test_transient_failures_are_retried(
    kind: str, bucket: str, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    out = make_out(tmp_path)
    # Every run object's first PUT fails; the retry goes through.
    proxy = make_proxy(lambda m, p, a: kind if m == "PUT" and "/runs/" in p and a == 1 else None)
    summary = publish(out, f"s3://{bucket}/r", endpoint_url=proxy.endpoint, max_concurrency=16)
    assert proxy.faults == len(PUBLISHED) + 1  # every object's first PUT, and the marker's
    assert summary.uploaded == len(PUBLISHED)
    keys = list_keys(proxy.endpoint, bucket)
    assert {f"r/runs/{RUN_A}/{rel}" for rel in PUBLISHED} <= set(keys)
    assert json.loads(get(proxy.endpoint, bucket, "r/latest.json"))["run_id"] == RUN_A
    assert proxy.puts()[-3:] == [
        f"/{bucket}/r/latest.json",
        f"/{bucket}/r/index.html",
        f"/{bucket}/r/runs.json",
    ]


def test_first_failed_upload_stops_new_ones_and_lets_those_in_flight_finish(
    bucket: str,
    make_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Uploads in flight when one fails for good: they finish whole, no new one starts, and
    only then is the failure reported, so no request reaches the store after it.

    The order is fixed by events, not by timing: the fifth PUT fails, answered only once
    the other three workers each hold a request at the proxy; those go through only once
    the publisher has logged that it saw the failure. So exactly 4 + 1 + 3 PUTs reach the
    proxy, whatever the threads' interleaving.
    """
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    workers, before_failure = 4, 4
    out = make_synthetic_out(tmp_path, 300)
    seen = threading.Event()  # the publisher logged the failure
    others_held = threading.Event()
    lock = threading.Lock()
    arrivals: list[str] = []  # PUT paths, in the order the proxy read them
    held: list[str] = []
    stuck: list[str] = []

    class SeenFailure(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "first failed upload seen" in record.getMessage():
                seen.set()

    s3_logger = logging.getLogger("job.publish.s3")
    handler, level = SeenFailure(), s3_logger.level
    s3_logger.addHandler(handler)
    s3_logger.setLevel(logging.DEBUG)

    def fault(method: str, path: str, attempt: int) -> str | None:
        if method != "PUT":
            return None
        with lock:
            arrivals.append(path)
            n = len(arrivals)
            if n > before_failure + 1:
                held.append(path)
                if len(held) == workers - 1:
                    others_held.set()
        if n <= before_failure:
            return None
        if n == before_failure + 1:  # the failing one: answer when the others are in flight
            if not others_held.wait(60):
                stuck.append("the other workers never sent a request")
            return "503"
        if not seen.wait(60):
            stuck.append("the publisher never logged the failure")
        return None

    proxy = make_proxy(fault)
    threads_before = set(threading.enumerate())
    try:
        with pytest.raises(PublishError) as info:
            publish(out, f"s3://{bucket}/c", endpoint_url=proxy.endpoint, max_concurrency=workers)
    finally:
        s3_logger.removeHandler(handler)
        s3_logger.setLevel(level)
    assert stuck == []
    failed = arrivals[before_failure]
    message = str(info.value)
    assert "\n" not in message and f"{failed.removeprefix('/' + bucket + '/')}: SlowDown" in message
    # Four before, the failure, the three in flight: no new upload started after it.
    assert len(arrivals) == before_failure + 1 + workers - 1 == 8
    assert held == arrivals[before_failure + 1 :]
    # Every request that reached the proxy was answered before publish() returned (nothing
    # was cut off or is still being sent), and no thread of the publisher is left running.
    answered = [path for method, path, code in proxy.log if method == "PUT"]
    assert sorted(answered) == sorted(arrivals)
    assert sorted(proxy.puts()) == sorted(p for p in arrivals if p != failed)
    # (s3transfer's workers are concurrent.futures threads; the proxy's and tqdm's are not.)
    leftover = set(threading.enumerate()) - threads_before
    assert [t for t in leftover if t.name.startswith("ThreadPoolExecutor")] == []
    # What landed is whole: the 7 objects answered 200, each with its file's MD5.
    stored = list_keys(proxy.upstream.geturl(), bucket, "c/")
    assert {f"/{bucket}/{k}" for k in stored} == set(proxy.puts())
    local = {p.relative_to(out).as_posix(): p for p in out.rglob("*") if p.is_file()}
    for key, obj in stored.items():
        rel = key.split("/", 3)[3]
        expected = hashlib.md5(local[rel].read_bytes(), usedforsecurity=False).hexdigest()
        assert obj["ETag"].strip('"') == expected


def test_server_stopped_before_upload_is_one_line_error(
    aws_env: dict[str, str],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = make_out(tmp_path)
    with moto_server() as endpoint:
        s3(endpoint).create_bucket(Bucket="gone")
    # The server process has exited: nothing listens on that port any more.
    with pytest.raises(PublishError, match=r"^cannot reach the S3 endpoint") as info:
        publish(out, "s3://gone/p", endpoint_url=endpoint)
    assert endpoint in str(info.value) and "\n" not in str(info.value)

    assert cli(["publish", str(out), "s3://gone/p", "--endpoint-url", endpoint]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: cannot reach the S3 endpoint")


def test_wrong_bucket_is_one_line_error(
    s3_server: str, aws_env: dict[str, str], tmp_path: Path
) -> None:
    with pytest.raises(PublishError) as info:
        publish(make_out(tmp_path), "s3://no-such-bucket/p", endpoint_url=s3_server)
    assert str(info.value).startswith("bucket 'no-such-bucket' does not exist")
    assert "\n" not in str(info.value)


def test_missing_credentials_is_one_line_error(
    s3_server: str,
    aws_env: dict[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    s3(s3_server).create_bucket(Bucket="creds")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(key)
    out = make_out(tmp_path)
    with pytest.raises(PublishError, match=r"^no AWS credentials for s3://creds/p: set"):
        publish(out, "s3://creds/p", endpoint_url=s3_server)
    assert cli(["publish", str(out), "s3://creds/p", "--endpoint-url", s3_server]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no AWS credentials")


def test_cli_publishes_with_endpoint_from_environment(
    bucket: str,
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    out = make_out(tmp_path)
    assert cli(["-q", "publish", str(out), f"s3://{bucket}/env"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{s3_server}/{bucket}/env/index.html"
    assert captured.err == ""  # -q: no progress, no summary
    assert f"env/runs/{RUN_A}/site/index.html" in list_keys(s3_server, bucket)
