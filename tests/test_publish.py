"""Publishing against a real S3 server (moto's standalone server, a subprocess on loopback).

No in-process mocking of boto3: every test talks HTTP to a server process, some of them
through a small fault-injecting proxy that answers 503 SlowDown / 500 or drops connections,
and records the order in which objects were written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from publish_support import (
    PUBLISHED,
    RUN_A,
    RUN_B,
    RUN_C,
    USER_HTML,
    FaultProxy,
    get,
    isolate_aws,
    list_keys,
    make_out,
    public_read_policy,
    s3,
)

from job.cli import main
from job.errors import PublishError, PublishRefused
from job.publish import (
    ENTRY_CACHE,
    IMMUTABLE_CACHE,
    content_type,
    parse_target,
    publish,
    redirect_page,
)
from job.publish.bench import bench_publish, make_synthetic_out
from job.publish.core import MARKER
from job.publish.motoserver import moto_server

# ------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server in a subprocess on a free loopback port (one per module)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    return isolate_aws(monkeypatch, tmp_path)


_bucket_counter = iter(range(10_000))


@pytest.fixture
def bucket(s3_server: str, aws_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the shared server."""
    name = f"site-{next(_bucket_counter)}"
    s3(s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_proxy(s3_server: str) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def factory(fault: Callable[[str, str, int], str | None] = lambda m, p, a: None) -> FaultProxy:
        proxy = FaultProxy(s3_server, fault)
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        proxy.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """job.cli.main reconfigures logging; put it back for the tests that follow."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    job_level = logging.getLogger("job").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("job").setLevel(job_level)


def cli(argv: list[str]) -> int:
    """``python -m job`` in-process. The out folders here are shaped like a finished run, not
    made by one, so the CLI's run-folder check (preflight.require, tested on real runs in
    test_hardening_folders.py) is skipped."""
    from unittest import mock

    from job.cli import main

    with mock.patch("job.preflight.require"):
        return main(argv)


# ------------------------------------------------------------------------- pure functions


@pytest.mark.parametrize(
    ("target", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/movielens", "my-bucket", "movielens/"),
        ("s3://my.bucket.1/a/b/", "my.bucket.1", "a/b/"),
    ],
)
def test_parse_s3_target(target: str, bucket: str, prefix: str) -> None:
    parsed = parse_target(target)
    assert (parsed.kind, parsed.bucket, parsed.prefix) == ("s3", bucket, prefix)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("s3://", "no bucket name"),
        ("s3:///prefix", "no bucket name"),
        ("s3://My_Bucket/x", "invalid bucket name 'My_Bucket'"),
        ("s3://ab/x", "invalid bucket name 'ab'"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/a?x=1", "no query"),
        ("gs://bucket/x", "unsupported publish target"),
        ("https://example.com/x", "unsupported publish target"),
        ("file://host/x", "only local files"),
        ("", "empty"),
    ],
)
def test_parse_target_rejects_bad_urls(target: str, message: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_target(target)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_local_targets(tmp_path: Path) -> None:
    assert parse_target(str(tmp_path)).path == tmp_path
    assert parse_target(tmp_path.as_uri()).path == tmp_path
    assert parse_target("relative/dir").path == Path("relative/dir")


def test_content_types_cover_the_site() -> None:
    for rel, expected in PUBLISHED.items():
        assert content_type(rel) == expected, rel
    assert content_type("model.keras") == "application/octet-stream"
    assert content_type("notes.TXT") == "text/plain; charset=utf-8"
    assert content_type("blob.unknownext") == "application/octet-stream"


def test_redirect_page_has_meta_refresh_and_link() -> None:
    page = redirect_page(RUN_A)
    href = f"runs/{RUN_A}/site/index.html"
    assert f'<meta http-equiv="refresh" content="0; url={href}">' in page
    assert f'<a href="{href}">' in page


# --------------------------------------------------------------------------- S3 publishing


def test_publish_layout_content_types_and_order(
    bucket: str, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    out = make_out(tmp_path)
    proxy = make_proxy()
    summary = publish(out, f"s3://{bucket}/movielens", endpoint_url=proxy.endpoint)
    endpoint = proxy.upstream.geturl()  # check the server itself, not through the proxy

    run = f"movielens/runs/{RUN_A}/"
    keys = list_keys(endpoint, bucket)
    expected = (
        {run + rel for rel in PUBLISHED}
        | {run + MARKER}
        | {
            "movielens/index.html",
            "movielens/latest.json",
        }
    )
    assert set(keys) == expected  # nothing unpublished (model.keras, parts/ ...) went up
    assert (summary.objects, summary.uploaded, summary.skipped) == (len(PUBLISHED),) * 2 + (0,)
    assert summary.entry_points_written
    assert summary.url == f"{proxy.endpoint}/{bucket}/movielens/index.html"

    client = s3(endpoint)
    for rel, ctype in PUBLISHED.items():
        head = client.head_object(Bucket=bucket, Key=run + rel)
        assert head["ContentType"] == ctype, rel
        assert head["CacheControl"] == IMMUTABLE_CACHE, rel
        assert len(head["Metadata"]["sha256"]) == 64
    for key, ctype in (
        ("movielens/index.html", "text/html; charset=utf-8"),
        ("movielens/latest.json", "application/json"),
    ):
        head = client.head_object(Bucket=bucket, Key=key)
        assert (head["ContentType"], head["CacheControl"]) == (ctype, ENTRY_CACHE)

    latest = json.loads(get(endpoint, bucket, "movielens/latest.json"))
    assert latest["run_id"] == RUN_A
    assert latest["site"] == f"runs/{RUN_A}/site/index.html"
    assert latest["published_at"].endswith("Z")
    assert latest["created_at"] == "2026-11-26T18:10:00Z"  # from the run id: run.json has none
    assert get(endpoint, bucket, "movielens/index.html").decode() == redirect_page(RUN_A)
    marker = json.loads(get(endpoint, bucket, run + MARKER))
    assert {k: v for k, v in marker.items() if k != "published_at"} == {
        k: v for k, v in latest.items() if k != "published_at"
    }

    # Order as the server saw it: every run object, then the run's completion marker, then
    # latest.json (the switch), then index.html (which follows it).
    puts = [p for p in proxy.puts() if not p.endswith(f"/{bucket}")]
    assert puts[-3:] == [
        f"/{bucket}/{run}{MARKER}",
        f"/{bucket}/movielens/latest.json",
        f"/{bucket}/movielens/index.html",
    ]
    assert {p.removeprefix(f"/{bucket}/") for p in puts[:-3]} == {run + r for r in PUBLISHED}
    # ... and as the store's own clock says it.
    newest_run_object = max(o["LastModified"] for k, o in keys.items() if k.startswith(run))
    assert keys["movielens/latest.json"]["LastModified"] >= newest_run_object
    assert keys[run + MARKER]["LastModified"] == newest_run_object


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


def test_rerun_uploads_nothing_then_only_what_changed(
    bucket: str, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    out = make_out(tmp_path)
    first_proxy = make_proxy()
    target = f"s3://{bucket}/p"
    publish(out, target, endpoint_url=first_proxy.endpoint)
    latest_before = get(first_proxy.upstream.geturl(), bucket, "p/latest.json")

    proxy = make_proxy()
    again = publish(out, target, endpoint_url=proxy.endpoint)
    assert (again.uploaded, again.skipped, again.bytes_uploaded) == (0, len(PUBLISHED), 0)
    assert not again.entry_points_written
    assert proxy.puts() == []  # not a single PUT: idempotent and cheap
    assert get(proxy.endpoint, bucket, "p/latest.json") == latest_before

    (out / "site" / "users" / "557.html").write_text(USER_HTML + "<!-- changed -->\n")
    changed = publish(out, target, endpoint_url=proxy.endpoint)
    assert (changed.uploaded, changed.skipped) == (1, len(PUBLISHED) - 1)
    assert proxy.puts() == [f"/{bucket}/p/runs/{RUN_A}/site/users/557.html"]


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
    assert proxy.puts()[-2:] == [f"/{bucket}/r/latest.json", f"/{bucket}/r/index.html"]


def test_hard_failure_leaves_previous_run_serving_and_rerun_resumes(
    bucket: str,
    make_proxy: Callable[..., FaultProxy],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    target = f"s3://{bucket}/site"
    healthy = make_proxy()
    publish(make_out(tmp_path, RUN_A), target, endpoint_url=healthy.endpoint)
    latest_a = get(healthy.endpoint, bucket, "site/latest.json")
    index_a = get(healthy.endpoint, bucket, "site/index.html")

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")  # fail after one retry, to keep this fast
    broken = "users/557.html"
    proxy = make_proxy(lambda m, p, a: "503" if m == "PUT" and p.endswith(broken) else None)
    out_b = make_out(tmp_path, RUN_B)
    with pytest.raises(PublishError) as info:
        publish(out_b, target, endpoint_url=proxy.endpoint, max_concurrency=2)
    message = str(info.value)
    assert "\n" not in message
    assert broken in message and "SlowDown" in message
    assert "previous site is still served" in message
    assert proxy.faults == 2  # the first attempt and one retry
    # The entry points were never touched: readers still get run A.
    assert f"/{bucket}/site/latest.json" not in proxy.puts()
    assert f"/{bucket}/site/index.html" not in proxy.puts()
    assert get(healthy.endpoint, bucket, "site/latest.json") == latest_a
    assert get(healthy.endpoint, bucket, "site/index.html") == index_a

    # Once the store is healthy again, the same command finishes the job, skipping what landed.
    stored = {k for k in list_keys(healthy.endpoint, bucket, f"site/runs/{RUN_B}/")}
    resumed = publish(out_b, target, endpoint_url=healthy.endpoint)
    assert resumed.skipped == len(stored) and resumed.uploaded == len(PUBLISHED) - len(stored)
    assert json.loads(get(healthy.endpoint, bucket, "site/latest.json"))["run_id"] == RUN_B


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
    restore_logging: None,
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
    restore_logging: None,
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


@pytest.mark.parametrize("target", ["s3://", "s3://Bad_Name/x", "ftp://host/x"])
def test_cli_rejects_invalid_urls(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    assert cli(["publish", str(make_out(tmp_path)), target]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")


def test_cli_publishes_with_endpoint_from_environment(
    bucket: str,
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_logging: None,
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3_server)
    out = make_out(tmp_path)
    assert cli(["-q", "publish", str(out), f"s3://{bucket}/env"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() == f"{s3_server}/{bucket}/env/index.html"
    assert captured.err == ""  # -q: no progress, no summary
    assert f"env/runs/{RUN_A}/site/index.html" in list_keys(s3_server, bucket)


def test_keep_runs_removes_old_runs_but_never_the_latest(
    bucket: str, s3_server: str, tmp_path: Path
) -> None:
    target = f"s3://{bucket}/k"
    for run_id in (RUN_A, RUN_B, RUN_C):
        summary = publish(make_out(tmp_path, run_id), target, endpoint_url=s3_server, keep_runs=2)
    assert summary.removed_runs == (RUN_A,)

    def runs() -> set[str]:
        return {k.split("/")[2] for k in list_keys(s3_server, bucket, "k/runs/")}

    assert runs() == {RUN_B, RUN_C}
    # An older run never replaces a newer one on the site. With no room for it under
    # --keep-runs it is refused before anything is uploaded ...
    latest_c = get(s3_server, bucket, "k/latest.json")
    with pytest.raises(PublishRefused, match=rf"^refused: run {RUN_A} .* older than run {RUN_C}"):
        publish(make_out(tmp_path, RUN_A), target, endpoint_url=s3_server, keep_runs=2)
    assert runs() == {RUN_B, RUN_C} and get(s3_server, bucket, "k/latest.json") == latest_c
    # ... and with room, it is uploaded and kept, but not made the latest (exit 0 in the CLI).
    kept = publish(make_out(tmp_path, RUN_A), target, endpoint_url=s3_server)
    assert (kept.is_latest, kept.latest_run, kept.entry_points_written) == (False, RUN_C, False)
    assert f"published run {RUN_A} but not the latest: the entry points name run {RUN_C}" in (
        kept.describe()
    )
    assert runs() == {RUN_A, RUN_B, RUN_C} and get(s3_server, bucket, "k/latest.json") == latest_c
    # The next pruning publish removes the complete runs beyond N, oldest first.
    again = publish(make_out(tmp_path, RUN_C), target, endpoint_url=s3_server, keep_runs=1)
    assert again.removed_runs == (RUN_A, RUN_B) and runs() == {RUN_C}
    # --keep-runs is validated once, with the other options (job.config), before anything
    # is read or sent.
    code = main(["-q", "publish", str(make_out(tmp_path, RUN_A)), target, "--keep-runs", "0"])
    assert code == 2 and runs() == {RUN_C}


def test_progress_summary_and_no_secrets_in_output(
    bucket: str,
    s3_server: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    secret = "sEcReT-do-not-print-42"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    with caplog.at_level(logging.DEBUG, logger="job"):
        summary = publish(make_out(tmp_path), f"s3://{bucket}/q", endpoint_url=s3_server)
    text = caplog.text + "".join(capsys.readouterr())
    n = len(PUBLISHED)
    assert f"publish: {n} of {n} objects to upload to s3://{bucket}/q/runs/{RUN_A}" in text
    assert summary.describe() in text
    assert f"{len(PUBLISHED)} objects" in summary.describe() and summary.url in text
    assert secret not in text and "testing" not in text

    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="job"):
        publish(make_out(tmp_path, RUN_B), f"s3://{bucket}/q", endpoint_url=s3_server)
    assert caplog.text == "" and capsys.readouterr().err == ""


# --------------------------------------------------------------------- the out folder


def test_missing_or_bad_out_folder(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publish(tmp_path / "nope", str(tmp_path / "pub"))
    out = make_out(tmp_path)
    (out / "site" / "index.html").unlink()
    with pytest.raises(PublishError, match=r"site/index\.html is missing"):
        publish(out, str(tmp_path / "pub"))
    (out / "run.json").write_text(json.dumps({"run_id": "../escape"}))
    with pytest.raises(PublishError, match='no valid "run_id"'):
        publish(out, str(tmp_path / "pub"))
    (out / "run.json").write_text("{not json")
    with pytest.raises(PublishError, match=r"run\.json: not valid JSON \(line 1\)"):
        publish(out, str(tmp_path / "pub"))


# ------------------------------------------------------------------------ local folder


def test_local_publish_same_layout_and_idempotent(tmp_path: Path) -> None:
    out = make_out(tmp_path)
    dest = tmp_path / "public"
    summary = publish(out, dest.as_uri())
    run = dest / "runs" / RUN_A
    published = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert published == set(PUBLISHED) | {MARKER}
    for rel in PUBLISHED:
        assert (run / rel).read_bytes() == (out / rel).read_bytes()
    assert (dest / "index.html").read_text() == redirect_page(RUN_A)
    assert json.loads((dest / "latest.json").read_text())["site"] == f"runs/{RUN_A}/site/index.html"
    assert summary.url == (dest / "index.html").resolve().as_uri()
    assert sorted(p.name for p in dest.iterdir()) == ["index.html", "latest.json", "runs"]
    assert [p.name for p in (dest / "runs").iterdir()] == [RUN_A]  # no staging left over

    again = publish(out, str(dest))
    assert (again.uploaded, again.skipped, again.entry_points_written) == (0, len(PUBLISHED), False)
    (out / "site" / "static" / "style.css").write_text("h1 { color: red; }\n")
    changed = publish(out, str(dest))
    assert changed.uploaded == 1
    assert (run / "site/static/style.css").read_text() == "h1 { color: red; }\n"


def test_local_failure_leaves_previous_site_and_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "public"
    publish(make_out(tmp_path, RUN_A), str(dest))
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    real_copy = shutil.copyfile

    def failing_copy(src: Any, dst: Any, **kwargs: Any) -> Any:
        if str(src).endswith("movies/1.html"):
            Path(dst).write_bytes(b"half a pa")  # the disk filled up part way through
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr("job.publish.local.shutil.copyfile", failing_copy)
    out_b = make_out(tmp_path, RUN_B)
    with pytest.raises(PublishError, match="No space left on device") as info:
        publish(out_b, str(dest))
    assert "previous site is still served" in str(info.value) and "\n" not in str(info.value)
    # Run A and the entry points are byte for byte as they were.
    assert {p: p.read_bytes() for p in before} == before
    # Of run B only whole files landed (those before the failure), no temporary.
    landed = sorted(p for p in (dest / "runs" / RUN_B).rglob("*") if p.is_file())
    assert landed and all(
        (out_b / p.relative_to(dest / "runs" / RUN_B)).read_bytes() == p.read_bytes()
        for p in landed
    )
    assert not (dest / "runs" / RUN_B / "site" / "movies" / "1.html").exists()
    assert not [p for p in dest.rglob(".*")]

    monkeypatch.undo()
    resumed = publish(out_b, str(dest))
    assert (resumed.skipped, resumed.uploaded) == (len(landed), len(PUBLISHED) - len(landed))
    assert json.loads((dest / "latest.json").read_text())["run_id"] == RUN_B


def test_local_keep_runs(tmp_path: Path) -> None:
    dest = tmp_path / "public"
    for run_id in (RUN_A, RUN_B, RUN_C):
        summary = publish(make_out(tmp_path, run_id), str(dest), keep_runs=1)
    assert summary.removed_runs == (RUN_B,)
    assert sorted(p.name for p in (dest / "runs").iterdir()) == [RUN_C]  # no trash left


def test_cli_says_in_one_line_when_a_run_is_not_the_latest_or_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    """A run older than the one the site names: uploaded and kept but not the latest (exit 0,
    one warning line even with -q), or, with no room under --keep-runs, refused (exit 1)."""
    dest = str(tmp_path / "public")
    assert cli(["-q", "publish", str(make_out(tmp_path, RUN_C)), dest]) == 0
    capsys.readouterr()
    assert cli(["-q", "publish", str(make_out(tmp_path, RUN_A)), dest]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (tmp_path / "public" / "index.html").resolve().as_uri()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"published run {RUN_A} but not the latest: the entry points name run ")
    assert json.loads((tmp_path / "public" / "latest.json").read_text())["run_id"] == RUN_C

    args = ["-q", "publish", str(make_out(tmp_path, RUN_B)), dest, "--keep-runs", "1"]
    assert cli(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: refused: run {RUN_B} (created 2026-11-27T09:00:00Z) is older")
    assert sorted(p.name for p in (tmp_path / "public" / "runs").iterdir()) == [RUN_A, RUN_C]


def test_local_target_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PublishError, match="is a file"):
        publish(make_out(tmp_path), str(tmp_path / "afile"))


# -------------------------------------------------------------------------- benchmark


def test_bench_publish_runs_at_a_small_size(
    aws_env: dict[str, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The benchmark end to end at a size a unit test can afford; no timing is asserted."""
    assert len([p for p in make_synthetic_out(tmp_path, 25).rglob("*") if p.is_file()]) == 25
    result = bench_publish(30)
    assert (result["objects"], result["first_uploaded"], result["rerun_uploaded"]) == (30, 30, 0)
    # The first sends every object, the run's completion marker and the two entry points; the
    # unchanged re-run sends nothing.
    assert (result["first_puts"], result["rerun_puts"]) == (33, 0)
    table = capsys.readouterr().out
    assert "first" in table and "re-run" in table and "objects/s" in table and "PUTs" in table
