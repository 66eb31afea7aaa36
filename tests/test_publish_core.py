"""job.publish.core: the publishing algorithm (the layout, the order of writes, re-runs,
recovery from a failure, --keep-runs), against a real S3 server.

No in-process mocking of boto3: every test talks HTTP to moto's standalone server, a
subprocess on loopback, some of them through a small fault-injecting proxy
(publish_support.FaultProxy) that answers 503 SlowDown / 500 or drops connections and
records the order in which objects were written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest
from publish_support import (
    PUBLISHED,
    RUN_A,
    RUN_B,
    RUN_C,
    USER_HTML,
    FaultProxy,
    get,
    list_keys,
    make_out,
    s3,
)

from job.cli import main
from job.core.errors import PublishError, PublishRefused
from job.publish import ENTRY_CACHE, IMMUTABLE_CACHE, publish, redirect_page
from job.publish.retention import MARKER


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
            "movielens/runs.json",
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
    # The marker also holds what the runs index says of the run (job.publish.runsindex).
    assert marker.pop("changes") is None  # the first run: nothing to compare with
    assert marker.pop("summary")["rmse"] is None  # the synthetic run.json has no metrics rows
    assert {k: v for k, v in marker.items() if k != "published_at"} == {
        k: v for k, v in latest.items() if k != "published_at"
    }

    # Order as the server saw it: every run object, then the run's completion marker, then
    # latest.json (the switch), then index.html (which follows it), then the runs index.
    puts = [p for p in proxy.puts() if not p.endswith(f"/{bucket}")]
    assert puts[-4:] == [
        f"/{bucket}/{run}{MARKER}",
        f"/{bucket}/movielens/latest.json",
        f"/{bucket}/movielens/index.html",
        f"/{bucket}/movielens/runs.json",
    ]
    assert {p.removeprefix(f"/{bucket}/") for p in puts[:-4]} == {run + r for r in PUBLISHED}
    # ... and as the store's own clock says it.
    newest_run_object = max(o["LastModified"] for k, o in keys.items() if k.startswith(run))
    assert keys["movielens/latest.json"]["LastModified"] >= newest_run_object
    assert keys[run + MARKER]["LastModified"] == newest_run_object


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
    # --keep-runs is validated once, with the other options (job.core.config), before anything
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


def test_the_engine_goes_beside_the_runs_once(bucket: str, s3_server: str, tmp_path: Path) -> None:
    """The SQL page's engine (OUT/engine/...) is published at PREFIX/engine/..., outside the
    runs: the first run uploads it, a later run uploads nothing for it, and pruning the
    first run leaves it."""
    engine = {
        "engine/duckdb-wasm-9.9.9/e.wasm": b"\0asm" + bytes(5000),
        "engine/duckdb-wasm-9.9.9/w.js": b"1;",
    }
    outs = []
    for run_id in (RUN_A, RUN_B):
        out = make_out(tmp_path, run_id)
        for rel, content in engine.items():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_bytes(content)
        outs.append(out)
    first = publish(outs[0], f"s3://{bucket}/k", endpoint_url=s3_server)
    assert (first.shared_objects, first.shared_uploaded) == (2, 2)
    assert "engine 2 of 2 uploaded" in first.describe()
    second = publish(outs[1], f"s3://{bucket}/k", endpoint_url=s3_server, keep_runs=1)
    assert (second.shared_objects, second.shared_uploaded) == (2, 0)
    assert second.removed_runs == (RUN_A,)
    keys = list_keys(s3_server, bucket, "k/")
    assert {f"k/{rel}" for rel in engine} <= set(keys)
    assert not [k for k in keys if k.startswith("k/runs/") and "/engine/" in k]
    head = s3(s3_server).head_object(Bucket=bucket, Key="k/engine/duckdb-wasm-9.9.9/e.wasm")
    assert (head["ContentType"], head["CacheControl"]) == ("application/wasm", IMMUTABLE_CACHE)
    assert get(s3_server, bucket, "k/engine/duckdb-wasm-9.9.9/w.js") == b"1;"
