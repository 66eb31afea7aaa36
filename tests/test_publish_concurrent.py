"""Publishes racing to one target (issue 22): the entry points only ever name the newest
complete run, every object of it is there, and pruning leaves no more than --keep-runs.

Against moto's S3 server on loopback (and a local folder, which holds to the same rules).
The interleavings are fixed by the test, never by timing: each publisher runs in a thread
over a store that stops at named points (``Paused``) until the test lets it go on, and the
publisher killed mid-upload is a real ``python -m job publish`` whose uploads a proxy holds
(``Gate``) until it has been sent SIGKILL. Each case prints its row of the table (``-s``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from bench.publish import make_synthetic_out
from publish_support import (
    FaultProxy,
    Gate,
    get,
    isolate_aws,
    job_process,
    kill,
    list_keys,
    make_out,
    wait_for,
)
from publish_support import s3 as s3_client

from job.core.errors import PublishRefused
from job.publish import publish, redirect_page
from job.publish.core import PublishSummary, publish_run
from job.publish.entries import LATEST_KEY
from job.publish.local import LocalStorage
from job.publish.retention import MARKER, STALE_AFTER
from job.publish.runfiles import LocalFile, collect_files, read_run
from job.publish.s3 import S3Storage
from job.publish.storage import Storage, Stored
from job.publish.target import parse_target

# A run already on the site, then three runs in the order they were created.
R0 = "20270101T000000Z-00000000"
RUNS = ("20270102T000000Z-11111111", "20270103T000000Z-22222222", "20270104T000000Z-33333333")
WAIT = 60  # seconds: only reached when something is broken (a deadlock), never a verdict


# ------------------------------------------------------------------------------ the store


class Paused:
    """A ``Storage`` that stops the first time it reaches a named point until ``go(point)``:

    - ``mid-upload``: half the run's objects stored, the other half not yet;
    - ``before-switch``: latest.json read and compared, the conditional write not yet sent;
    - ``after-switch``: that write done, its read-back not yet made.

    ``ignore_conditions`` makes ``put_if`` write unconditionally, as a store without
    conditional writes does. ``switches`` records what each ``put_if`` returned.
    """

    def __init__(
        self, inner: Storage, stops: Sequence[str] = (), *, ignore_conditions: bool = False
    ) -> None:
        self.inner = inner
        self.ignore_conditions = ignore_conditions
        self.switches: list[bool] = []
        self._reached = {name: threading.Event() for name in stops}
        self._go = {name: threading.Event() for name in stops}
        self._passed: set[str] = set()

    # -- the test's side
    def wait_reached(self, point: str) -> None:
        assert self._reached[point].wait(WAIT), f"the publisher never reached {point}"

    def go(self, point: str) -> None:
        self._go[point].set()

    def go_all(self) -> None:
        for event in self._go.values():
            event.set()

    def _stop(self, point: str) -> None:
        if point in self._reached and point not in self._passed:
            self._passed.add(point)
            self._reached[point].set()
            assert self._go[point].wait(WAIT), f"the test never let {point} go on"

    # -- Storage
    @property
    def puts(self) -> int:
        return self.inner.puts

    def describe(self, key: str = "") -> str:
        return self.inner.describe(key)

    def url(self, key: str) -> str:
        return self.inner.url(key)

    def check(self) -> None:
        self.inner.check()

    def list_objects(self, prefix: str) -> dict[str, Stored]:
        return self.inner.list_objects(prefix)

    def list_folders(self, prefix: str) -> list[str]:
        return self.inner.list_folders(prefix)

    def read(self, key: str) -> bytes | None:
        return self.inner.read(key)

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        return self.inner.read_versioned(key)

    def last_modified(self, prefix: str) -> float | None:
        return self.inner.last_modified(prefix)

    def put_files(
        self,
        files: Sequence[tuple[str, LocalFile]],
        cache_control: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        half = len(files) // 2
        self.inner.put_files(files[:half], cache_control, on_bytes)
        self._stop("mid-upload")
        self.inner.put_files(files[half:], cache_control, on_bytes)

    def put_bytes(self, key: str, data: bytes, cache_control: str) -> None:
        self.inner.put_bytes(key, data, cache_control)

    def put_if(self, key: str, data: bytes, cache_control: str, expected: str | None) -> bool:
        if key != LATEST_KEY:  # the runs index's compare-and-swap: not the switch
            return self.inner.put_if(key, data, cache_control, expected)
        self._stop("before-switch")
        if self.ignore_conditions:
            self.inner.put_bytes(key, data, cache_control)
            done = True
        else:
            done = self.inner.put_if(key, data, cache_control, expected)
        self.switches.append(done)
        self._stop("after-switch")
        return done

    def delete(self, prefix: str) -> None:
        self.inner.delete(prefix)


class Publisher:
    """One publish of ``out`` in a thread, through a ``Paused`` store."""

    def __init__(self, store: Paused, out: Path, keep_runs: int | None) -> None:
        self.store, self.out = store, out
        self.run_id, self.created = read_run(out)
        self.files = collect_files(out)
        self.keep_runs = keep_runs
        self.result: PublishSummary | None = None
        self.error: Exception | None = None
        self.thread = threading.Thread(target=self._run, name=f"publish-{self.run_id}")

    def _run(self) -> None:
        try:
            self.result = publish_run(
                cast(Storage, self.store),
                self.run_id,
                self.files,
                created=self.created,
                keep_runs=self.keep_runs,
            )
        except Exception as exc:  # the test reads it: a refusal is an outcome, not a crash
            self.error = exc

    def start(self, until: str) -> Publisher:
        self.thread.start()
        self.store.wait_reached(until)
        return self

    def finish(self) -> str:
        """Let it run to the end; return its outcome: latest, kept or refused."""
        self.store.go_all()
        self.thread.join(WAIT)
        assert not self.thread.is_alive(), f"publish of {self.run_id} never finished"
        return outcome(self.result, self.error)


def outcome(result: PublishSummary | None, error: Exception | None) -> str:
    if isinstance(error, PublishRefused):
        return "refused"
    assert error is None, f"publish failed: {error}"
    assert result is not None
    return "latest" if result.is_latest else "kept"


# ------------------------------------------------------------------------------ fixtures


@dataclass
class Site:
    """One target seen from the test: a bucket prefix or a folder."""

    kind: str
    target: str
    endpoint: str | None
    new_storage: Callable[[], Storage]
    keys: Callable[[], dict[str, str]]  # every key under the target -> its ETag
    read: Callable[[str], bytes]

    def latest_run(self) -> str:
        return str(json.loads(self.read(LATEST_KEY))["run_id"])

    def runs(self) -> dict[str, bool]:
        """Each run folder -> whether its completion marker is there."""
        found: dict[str, bool] = {}
        for key in self.keys():
            if key.startswith("runs/"):
                run_id, rest = key.split("/", 2)[1:]
                found[run_id] = found.get(run_id, False) or rest == MARKER
        return found


@pytest.fixture(params=["s3", "local"])
def site(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Site:
    if request.param == "local":
        root = tmp_path / "public"

        def local_keys() -> dict[str, str]:
            storage = LocalStorage(root)
            return {k: etag for k, (etag, _) in storage.list_objects("").items()}

        return Site(
            "local",
            str(root),
            None,
            lambda: LocalStorage(root),
            local_keys,
            lambda key: (root / key).read_bytes(),
        )
    server = request.getfixturevalue("s3_server")
    isolate_aws(monkeypatch, tmp_path)
    bucket = f"race-{tmp_path.name.lower().replace('_', '-')}"[:63].rstrip("-")
    s3_client(server).create_bucket(Bucket=bucket)
    return Site(
        "s3",
        f"s3://{bucket}/site",
        server,
        lambda: S3Storage(parse_target(f"s3://{bucket}/site"), endpoint_url=server),
        lambda: {
            k.removeprefix("site/"): o["ETag"].strip('"')
            for k, o in list_keys(server, bucket, "site/").items()
        },
        lambda key: get(server, bucket, f"site/{key}"),
    )


# ------------------------------------------------------------------ the rules, as a model


def expected(finish_order: Sequence[str], keep: int) -> tuple[str, set[str], dict[str, str]]:
    """What the issue's rules say, publishers finishing one after another from R0 alone:
    (the run the entry points name, the complete runs left, each publisher's outcome)."""
    latest, complete, outcomes = R0, {R0}, {}
    for run in finish_order:  # run ids sort by creation time here
        newer = [c for c in complete if c > run]
        if run > latest:
            latest, outcomes[run] = run, "latest"
            complete.add(run)
        elif len(newer) >= keep:
            outcomes[run] = "refused"
        else:
            outcomes[run] = "kept"
            complete.add(run)
        kept = set(sorted(complete)[-keep:])
        complete = {c for c in complete if c in kept or c >= latest}
    return latest, complete, outcomes


def check_site(site: Site, outs: dict[str, Path], latest: str, complete: set[str]) -> int:
    """The entry points name ``latest``, every object of it is there, the complete runs are
    ``complete``; return how many objects the named run has."""
    assert site.latest_run() == latest
    assert site.read("index.html") == redirect_page(latest).encode()
    runs = site.runs()
    assert {r for r, done in runs.items() if done} == complete
    # The runs index, rebuilt by every publisher after its prune, lists exactly those.
    index = json.loads(site.read("runs.json"))
    assert [r["run_id"] for r in index["runs"]] == sorted(complete)
    keys = site.keys()
    files = collect_files(outs[latest])
    for f in files:
        assert keys.get(f"runs/{latest}/{f.rel}") == f.etag, f.rel
    return len(files)


# ------------------------------------------------------------------------------ the cases


@pytest.mark.parametrize(
    ("site", "killed"),
    [("s3", False), ("s3", True), ("local", False)],  # the folder's kill: test_publish_stress
    ids=["s3-all-finish", "s3-first-killed", "local-all-finish"],
    indirect=["site"],
)
@pytest.mark.parametrize("keep", [1, 2], ids=["keep1", "keep2"])
@pytest.mark.parametrize("order", ["newest-first", "oldest-first"])
@pytest.mark.parametrize("n", [2, 3], ids=["2-publishers", "3-publishers"])
def test_concurrent_publishes_leave_the_newest_complete_run_live(
    n: int,
    order: str,
    keep: int,
    killed: bool,
    site: Site,
    tmp_path: Path,
    make_proxy: Callable[..., FaultProxy],
) -> None:
    """``n`` publishes start one after another, each stopped half way through its upload
    before the next starts; then they finish one by one in the order they started. With
    ``killed``, the first to start is a ``python -m job publish`` process, killed with
    SIGKILL while its uploads are in flight (after the others have started), and run again
    once the others are done."""
    runs = list(RUNS[:n])
    start_order = runs[::-1] if order == "newest-first" else runs
    outs = {R0: make_out(tmp_path, R0)}
    publish(outs[R0], site.target, endpoint_url=site.endpoint)

    process = gate = None
    publishers: dict[str, Publisher] = {}
    first = start_order[0]
    if killed:
        outs[first] = make_synthetic_out(tmp_path / "killed", 30, run_id=first)
        gate = Gate(f"/runs/{first}/", allow=10)
        proxy = make_proxy(gate)
        args = ["publish", str(outs[first]), site.target, "--keep-runs", str(keep)]
        process = job_process([*args, "--endpoint-url", proxy.endpoint], tmp_path, "killed")
        wait_for(lambda: len(proxy.puts()) >= 10 and gate.seen > 10, process, "uploads held")
    for run in start_order[1:] if killed else start_order:
        outs[run] = make_out(tmp_path, run)
        store = Paused(site.new_storage(), ["mid-upload"])
        publishers[run] = Publisher(store, outs[run], keep).start(until="mid-upload")
    if process is not None and gate is not None:
        kill(process)
        gate.release()  # the held requests are dropped: the process is gone

    outcomes = {run: publishers[run].finish() for run in start_order if run in publishers}
    finished = [r for r in start_order if r in publishers]
    latest, complete, model = expected(finished, keep)
    assert outcomes == model
    objects = check_site(site, outs, latest, complete)
    leftover = {r for r, done in site.runs().items() if not done}
    assert leftover == ({first} if killed else set())  # a killed upload, kept while recent
    while_killed = f"{latest[-8:]} (killed run incomplete, kept), then " if killed else ""

    if killed:  # the same command again, as its user would: it completes or is refused
        try:
            result: PublishSummary | None = publish(
                outs[first], site.target, endpoint_url=site.endpoint, keep_runs=keep
            )
            error = None
        except PublishRefused as exc:
            result, error = None, exc
        outcomes[first] = outcome(result, error)
        latest, complete, model = expected([*finished, first], keep)
        assert outcomes == model
        objects = check_site(site, outs, latest, complete)
        assert {r for r, done in site.runs().items() if not done} == set()
    # Once all have finished, nothing beyond --keep-runs is left.
    assert len(complete) <= keep
    print(
        f"\n| {n} | {order} | {keep} | {'yes' if killed else 'no'} | {while_killed}{latest[-8:]} | "
        f"{objects}/{objects} | {', '.join(r[-8:] for r in sorted(complete))} | "
        + ", ".join(f"{r[-8:]}: {outcomes[r]}" for r in start_order)
        + f" | {site.kind}"
    )


def test_the_store_honours_conditional_writes(site: Site) -> None:
    """moto's S3 server (5.2.5) checks If-None-Match: * and If-Match, as AWS S3 does; the
    folder checks the same under its flock. (Were they ignored, every call below would
    return True: the switch would fall back to its read-back alone.)"""
    store = site.new_storage()
    store.check()
    assert store.put_if("k.json", b"1", "no-cache", None)  # created: there was none
    assert not store.put_if("k.json", b"2", "no-cache", None)  # now there is one
    found = store.read_versioned("k.json")
    assert found is not None and found[0] == b"1"
    assert not store.put_if("k.json", b"2", "no-cache", "0" * 32)  # not the ETag read
    assert store.put_if("k.json", b"2", "no-cache", found[1])  # the ETag read: replaced
    assert not store.put_if("k.json", b"3", "no-cache", found[1])  # that ETag is gone now
    store.delete("k.json")
    assert not store.put_if("k.json", b"4", "no-cache", found[1])  # and so is the object
    assert store.read("k.json") is None


@pytest.mark.parametrize("first", ["older", "newer"])
def test_the_switch_is_a_compare_and_swap(first: str, site: Site, tmp_path: Path) -> None:
    """Two publishers read the same latest.json, then both write it: the second write is
    refused (412 on S3, the flock'd compare on a folder), that publisher reads again and
    decides again: the newer run wins in both orders."""
    publish(make_out(tmp_path, R0), site.target, endpoint_url=site.endpoint)
    older, newer = (
        Publisher(Paused(site.new_storage(), ["before-switch"]), make_out(tmp_path, r), None)
        for r in RUNS[:2]
    )
    for p in (older, newer):
        p.start(until="before-switch")
    one, two = (older, newer) if first == "older" else (newer, older)
    assert one.finish() == "latest"  # latest.json names R0, older than either
    assert two.finish() == ("latest" if two is newer else "kept")
    assert one.store.switches == [True]
    # The second's conditional write found latest.json changed since its read.
    assert two.store.switches == ([False, True] if two is newer else [False])
    assert site.latest_run() == newer.run_id
    assert site.read("index.html") == redirect_page(newer.run_id).encode()


def test_without_conditional_writes_the_read_back_repairs_an_overwrite(
    site: Site, tmp_path: Path
) -> None:
    """The fallback for a store that ignores the conditions: the newer run switches, the
    older one then overwrites it (nothing stops it), and the newer publisher's read-back
    finds an older run named and switches again."""
    publish(make_out(tmp_path, R0), site.target, endpoint_url=site.endpoint)
    stops = ["before-switch", "after-switch"]
    older, newer = (
        Publisher(
            Paused(site.new_storage(), stops, ignore_conditions=True), make_out(tmp_path, r), None
        )
        for r in RUNS[:2]
    )
    for p in (older, newer):
        p.start(until="before-switch")
    newer.store.go("before-switch")
    newer.store.wait_reached("after-switch")  # latest.json names the newer run ...
    older.store.go("before-switch")
    older.store.wait_reached("after-switch")  # ... and now, unconditionally, the older one
    assert site.latest_run() == older.run_id
    assert newer.finish() == "latest"  # read back, found older, wrote again
    assert newer.store.switches == [True, True]
    assert older.finish() == "kept"  # read back, found newer: stops
    assert site.latest_run() == newer.run_id
    assert site.read("index.html") == redirect_page(newer.run_id).encode()


def test_pruning_spares_a_recent_incomplete_run_and_removes_a_stale_one(
    site: Site, tmp_path: Path
) -> None:
    """An upload killed half way (a run folder without its marker): while it is recent it
    may be another publisher's, and stays; an hour later it is a leftover, and goes."""
    old = make_out(tmp_path, RUNS[0])
    store = Paused(site.new_storage(), ["mid-upload"])
    stopped = Publisher(store, old, keep_runs=1).start(until="mid-upload")
    # A later run publishes meanwhile; the half-uploaded older run is recent: it stays.
    publish(make_out(tmp_path, RUNS[1]), site.target, endpoint_url=site.endpoint, keep_runs=1)
    assert site.runs() == {RUNS[0]: False, RUNS[1]: True}
    # The stopped publisher does not go on (as if killed); an hour later, a publish prunes.
    later = site.new_storage()
    files = collect_files(make_out(tmp_path, RUNS[2]))
    now = (later.last_modified(f"runs/{RUNS[0]}/") or 0) + STALE_AFTER + 1
    summary = publish_run(later, RUNS[2], files, keep_runs=1, clock=lambda: now)
    assert summary.removed_runs == (RUNS[0], RUNS[1])
    assert site.runs() == {RUNS[2]: True}
    store.go_all()  # let the thread end: its run is gone, so it fails, and says so
    stopped.thread.join(WAIT)
    assert stopped.error is not None and "not in" in str(stopped.error)


def test_latest_json_names_its_run_creation_time(site: Site, tmp_path: Path) -> None:
    publish(make_out(tmp_path, R0), site.target, endpoint_url=site.endpoint)
    document: dict[str, Any] = json.loads(site.read(LATEST_KEY))
    assert (document["run_id"], document["created_at"]) == (R0, "2027-01-01T00:00:00Z")
