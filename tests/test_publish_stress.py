"""Publishing under stress: a publish process killed (SIGKILL) mid-upload, then run again; and
many publishes in a row with ``--keep-runs``. Against moto's S3 server process on loopback
(through a recording proxy that counts every PUT the server receives) and a local folder.

Each test prints its figures (processes, seconds, objects, PUTs); ``pytest -s`` shows them.
"""

from __future__ import annotations

import hashlib
import json
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from bench.publish import make_synthetic_out
from publish_support import (
    PUBLISHED,
    RUN_A,
    RUN_B,
    FaultProxy,
    Gate,
    get,
    isolate_aws,
    job_process,
    kill,
    list_keys,
    wait_for,
)
from publish_support import make_out as make_small_out
from publish_support import s3 as s3_client

from job.publish import publish, redirect_page
from job.publish.retention import MARKER


@pytest.fixture
def bucket(s3_server: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    isolate_aws(monkeypatch, tmp_path)
    name = f"stress-{tmp_path.name.lower().replace('_', '-')}"[:63]
    s3_client(s3_server).create_bucket(Bucket=name)
    return name


def md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes(), usedforsecurity=False).hexdigest()


def run_files(out: Path) -> dict[str, Path]:
    """The published part of an out folder: key relative to the run -> local file."""
    return {
        p.relative_to(out).as_posix(): p
        for p in out.rglob("*")
        if p.is_file() and p.relative_to(out).parts[0] in ("site", "parquet")
    } | {name: out / name for name in ("run.json", "recommendations.duckdb")}


def test_s3_publish_killed_mid_upload_keeps_previous_site_and_rerun_sends_only_the_rest(
    bucket: str, s3_server: str, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    target = f"s3://{bucket}/site"
    out_a = make_small_out(tmp_path, RUN_A)
    publish(out_a, target, endpoint_url=s3_server)
    run_a_before = {k: (o["ETag"], o["Size"]) for k, o in list_keys(s3_server, bucket).items()}
    entry_before = {k: get(s3_server, bucket, f"site/{k}") for k in ("index.html", "latest.json")}

    n_objects, allow = 400, 120
    out_b = make_synthetic_out(tmp_path / "b", n_objects, run_id=RUN_B)
    gate = Gate(f"/site/runs/{RUN_B}/", allow)
    proxy = make_proxy(gate)
    started = time.monotonic()
    proc = job_process(
        ["publish", str(out_b), target, "--endpoint-url", proxy.endpoint], tmp_path, "killed"
    )
    try:
        # Killed while uploads are in flight: `allow` objects stored, more requests held.
        wait_for(lambda: len(proxy.puts()) >= allow and gate.seen > allow, proc, "uploads")
        kill(proc)
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
    killed_seconds = time.monotonic() - started

    stored = list_keys(s3_server, bucket)
    run_b_prefix = f"site/runs/{RUN_B}/"
    landed = {k: o for k, o in stored.items() if k.startswith(run_b_prefix)}
    assert len(landed) == allow < n_objects
    # The previous site serves on, untouched: entry points and every object of run A.
    assert {k: (o["ETag"], o["Size"]) for k, o in stored.items() if k not in landed} == run_a_before
    for key, body in entry_before.items():
        assert get(s3_server, bucket, f"site/{key}") == body
    assert json.loads(entry_before["latest.json"])["run_id"] == RUN_A
    # What landed of run B is whole (an S3 PUT is all or nothing).
    local_b = run_files(out_b)
    assert len(local_b) == n_objects
    for key, obj in landed.items():
        assert obj["ETag"].strip('"') == md5(local_b[key.removeprefix(run_b_prefix)])

    # The same command again completes, sending only what was missing, then the entry points.
    recorder = make_proxy()
    started = time.monotonic()
    rerun = job_process(
        ["publish", str(out_b), target, "--endpoint-url", recorder.endpoint], tmp_path, "rerun"
    )
    assert rerun.wait(timeout=120) == 0, (tmp_path / "rerun.err").read_text()
    rerun_seconds = time.monotonic() - started
    puts = [p.removeprefix(f"/{bucket}/") for p in recorder.puts()]
    missing = {run_b_prefix + rel for rel in local_b} - set(landed)
    assert len(missing) == n_objects - allow
    assert len(puts) == len(set(puts)) == len(missing) + 4  # no object sent twice
    assert set(puts[:-4]) == missing
    assert puts[-4:] == [
        run_b_prefix + MARKER,
        "site/latest.json",
        "site/index.html",
        "site/runs.json",
    ]
    assert (
        f"({n_objects - allow} uploaded, {allow} unchanged" in (tmp_path / "rerun.err").read_text()
    )
    assert json.loads(get(s3_server, bucket, "site/latest.json"))["run_id"] == RUN_B
    final = list_keys(s3_server, bucket, run_b_prefix)
    assert {k.removeprefix(run_b_prefix): o["ETag"].strip('"') for k, o in final.items()} == {
        rel: md5(path) for rel, path in local_b.items()
    } | {MARKER: final[run_b_prefix + MARKER]["ETag"].strip('"')}
    print(
        f"\nS3 kill: 2 publish processes + 1 server; {n_objects} objects; killed after "
        f"{killed_seconds:.1f} s with {allow} stored and {gate.seen - allow} in flight; re-run "
        f"{rerun_seconds:.1f} s, {len(puts)} PUTs ({len(missing)} objects, marker, 2 entry points)"
    )


def test_s3_publish_interrupted_is_one_line_exit_130_and_previous_site_serves(
    bucket: str, s3_server: str, make_proxy: Callable[..., FaultProxy], tmp_path: Path
) -> None:
    target = f"s3://{bucket}/site"
    publish(make_small_out(tmp_path, RUN_A), target, endpoint_url=s3_server)
    entry_before = {k: get(s3_server, bucket, f"site/{k}") for k in ("index.html", "latest.json")}

    n_objects, allow = 300, 50
    out_b = make_synthetic_out(tmp_path / "b", n_objects, run_id=RUN_B)
    gate = Gate(f"/site/runs/{RUN_B}/", allow)
    proxy = make_proxy(gate)
    args = ["-q", "publish", str(out_b), target, "--endpoint-url", proxy.endpoint]
    proc = job_process(args, tmp_path, "interrupted")
    try:
        wait_for(lambda: len(proxy.puts()) >= allow and gate.seen > allow, proc, "uploads")
        in_flight = gate.seen - allow
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)  # Ctrl-C lands while requests are in flight ...
        gate.release(forward=True)  # ... which then finish; nothing new starts
        assert proc.wait(timeout=60) == 130
    finally:
        gate.release()
        if proc.poll() is None:
            proc.kill()
    assert (tmp_path / "interrupted.err").read_text() == "error: interrupted\n"
    landed = list_keys(s3_server, bucket, f"site/runs/{RUN_B}/")
    assert allow <= len(landed) <= gate.seen < n_objects
    for key, body in entry_before.items():
        assert get(s3_server, bucket, f"site/{key}") == body
    print(
        f"\nS3 Ctrl-C: {n_objects} objects; interrupted with {allow} stored and {in_flight} in "
        f"flight; {len(landed)} stored at exit (130), entry points untouched"
    )


# A publish to a folder, stopped mid-write of one file: half of it is in the temporary when
# the test's SIGKILL arrives. The child waits there (sleeps) so that the kill is the test's.
STOP_MID_COPY = """
import shutil, sys, time
from pathlib import Path
marker, after = Path(sys.argv[1]), int(sys.argv[2])
real_copy, copies = shutil.copyfile, []
def copy(src, dst, **kwargs):
    copies.append(src)
    if len(copies) <= after:
        return real_copy(src, dst, **kwargs)
    data = Path(src).read_bytes()
    Path(dst).write_bytes(data[: len(data) // 2])
    marker.touch()
    time.sleep(600)
shutil.copyfile = copy
from job.cli import main
sys.exit(main(sys.argv[3:]))
"""


def test_local_publish_killed_mid_copy_keeps_previous_folder_and_rerun_completes(
    tmp_path: Path,
) -> None:
    dest = tmp_path / "public"
    publish(make_small_out(tmp_path, RUN_A), str(dest))
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    n_objects, allow = 200, 80
    out_b = make_synthetic_out(tmp_path / "b", n_objects, run_id=RUN_B)
    marker = tmp_path / "mid-copy"
    started = time.monotonic()
    proc = job_process(
        [str(marker), str(allow), "publish", str(out_b), str(dest)],
        tmp_path,
        "killed",
        code=STOP_MID_COPY,
    )
    try:
        wait_for(marker.exists, proc, "the copy to stop half way")
        kill(proc)
    finally:
        if proc.poll() is None:
            proc.kill()
    killed_seconds = time.monotonic() - started

    # The previous published folder is byte for byte as it was.
    assert {p: p.read_bytes() for p in before} == before
    run_b = dest / "runs" / RUN_B
    landed = [p for p in run_b.rglob("*") if p.is_file() and not p.name.startswith(".")]
    assert len(landed) == allow
    temporaries = [p for p in dest.rglob(".*") if p.is_file()]
    assert len(temporaries) == 1  # the file being written when the kill came, half written

    started = time.monotonic()
    rerun = job_process(["publish", str(out_b), str(dest)], tmp_path, "rerun")
    assert rerun.wait(timeout=120) == 0, (tmp_path / "rerun.err").read_text()
    rerun_seconds = time.monotonic() - started
    assert (
        f"({n_objects - allow} uploaded, {allow} unchanged" in (tmp_path / "rerun.err").read_text()
    )
    assert json.loads((dest / "latest.json").read_text())["run_id"] == RUN_B
    assert (dest / "index.html").read_text() == redirect_page(RUN_B)
    published = {
        p.relative_to(run_b).as_posix(): p.read_bytes() for p in run_b.rglob("*") if p.is_file()
    }
    assert published.pop(MARKER)  # written last, after every file of the run
    assert published == {rel: p.read_bytes() for rel, p in run_files(out_b).items()}
    assert not list(dest.rglob(".*"))  # nothing stale: the temporary is gone
    print(
        f"\nlocal kill: 2 publish processes; {n_objects} objects; killed after "
        f"{killed_seconds:.1f} s mid-copy of object {allow + 1}; re-run {rerun_seconds:.1f} s, "
        f"{n_objects - allow} files, the marker and 2 entry points written"
    )


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_repeated_publishes_keep_three_runs_and_leave_no_orphans(
    kind: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    n_runs, keep = 8, 3  # the pruning cycle five times over
    run_ids = [f"20260101T{i:02d}0000Z-{i:08x}" for i in range(n_runs)]
    if kind == "s3":
        bucket = request.getfixturevalue("bucket")
        server = request.getfixturevalue("s3_server")
        recorder = request.getfixturevalue("make_proxy")()
        target, endpoint = f"s3://{bucket}/p", recorder.endpoint

        def stored() -> set[str]:
            return {k.removeprefix("p/") for k in list_keys(server, bucket)}

        def latest() -> bytes:
            return get(server, bucket, "p/latest.json")
    else:
        dest = tmp_path / "public"
        target, endpoint = str(dest), None

        def stored() -> set[str]:
            return {p.relative_to(dest).as_posix() for p in dest.rglob("*") if not p.is_dir()}

        def latest() -> bytes:
            return (dest / "latest.json").read_bytes()

    puts = 0
    started = time.monotonic()
    for i, run_id in enumerate(run_ids):
        out = make_small_out(tmp_path, run_id, variant=str(i))
        summary = publish(out, target, endpoint_url=endpoint, keep_runs=keep)
        puts += summary.puts
        kept = run_ids[max(0, i + 1 - keep) : i + 1]
        assert summary.removed_runs == ((run_ids[i - keep],) if i >= keep else ())
        # Exactly the newest runs, each complete, and the two entry points; nothing else.
        assert stored() == {f"runs/{r}/{rel}" for r in kept for rel in [*PUBLISHED, MARKER]} | {
            "index.html",
            "latest.json",
            "runs.json",
        }
        assert json.loads(latest())["run_id"] == run_id
    seconds = time.monotonic() - started
    assert puts == n_runs * (len(PUBLISHED) + 4)  # objects, marker, entry points, runs index
    if kind == "s3":
        assert len(recorder.puts()) == puts  # what the server received, counted outside
        deletes = [m for m, p, code in recorder.log if m == "POST" and code == 200]
        # Two DeleteObjects requests per removed run: its marker first, then its objects.
        assert len(deletes) == 2 * (n_runs - keep)
    print(
        f"\n{kind}: {n_runs} publishes in 1 process, {seconds:.1f} s; {n_runs * len(PUBLISHED)} "
        f"objects and {puts} PUTs in all; {keep} runs x {len(PUBLISHED)} objects + 2 kept"
    )
