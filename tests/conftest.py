"""Shared fixtures. Runs of the real pipeline are session-scoped: each is made once."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from job.cli import main

# The publishing tests' S3 fixtures (moto server, bucket, fault proxies), defined once.
pytest_plugins = ["publish_fixtures"]


# Session and module fixtures too costly to make once per pytest-xdist worker: the tests that
# use one (directly or through another fixture) form one group, run by one worker
# (--dist loadgroup). published: the shipped run in moto's S3 server (test_browser);
# scenarios: eleven signalled job processes (test_hardening_signals); checkov_report:
# checkov over infra/. (shipped_run itself is shared by the workers through a folder.)
ONE_WORKER_FIXTURES = ("published", "scenarios", "checkov_report")


# What makes a test `slow` (left out of `make check`) besides its own mark: a scenario marker,
# a fixture that runs the whole job, a browser or a server, or a scenario suite (processes
# killed and raced, linters and builds run, benchmarks, the executed workflow).
SLOW_MARKERS = ("e2e", "browser", "container", "gpu_image")
SLOW_FIXTURES = (*ONE_WORKER_FIXTURES, "shipped_run", "browser", "s3_server")
SLOW_SUITES = (
    "test_hardening_",
    "test_publish_stress",
    "test_publish_concurrent",
    "test_bench_",
    "test_benchjob",
    "test_packaging",
    "test_workflow",
    "test_infra",
    "test_layers",
)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups from the markers
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the slow tests, then order the run longest first, so that no worker is left
    alone with a long test at the end: the one-worker groups (pytest-xdist hands out the
    largest group first, and the first, published, makes the shipped run), the other slow
    tests, those reading the shipped run (made by then), the container tests (by then the
    CPU image's build, started below, is done), then the quick tests (a stable sort:
    otherwise in file order)."""
    for item in items:
        fixtures = getattr(item, "fixturenames", ())
        for name in ONE_WORKER_FIXTURES:
            if name in fixtures:
                item.add_marker(pytest.mark.xdist_group(name))
        if (
            any(item.get_closest_marker(m) for m in SLOW_MARKERS)
            or any(name in fixtures for name in SLOW_FIXTURES)
            or item.path.name.startswith(SLOW_SUITES)
        ):
            item.add_marker(pytest.mark.slow)
    items.sort(key=_run_order)


def _run_order(item: pytest.Item) -> int:
    if not item.get_closest_marker("slow"):
        return 3
    if item.get_closest_marker("container"):
        return 2
    return 1 if "shipped_run" in getattr(item, "fixturenames", ()) else 0


def pytest_collection_finish(session: pytest.Session) -> None:
    """Start the CPU image's build now, in a background thread, when a selected test needs it:
    a cold build waits mostly on downloads and one core. The tests wait for its result
    (containers.cpu_image_tag), which does not depend on when it finishes.

    Under pytest-xdist every worker collects every test, so only the first worker starts it;
    a container test on another worker waits for that build (build_job_image holds a lock)."""
    from containers import CPU_IMAGE_BUILD, Engine, build_job_image, find_engine

    if os.environ.get("PYTEST_XDIST_WORKER", "gw0") != "gw0":
        return
    needs_it = any(
        item.get_closest_marker("container") and not item.get_closest_marker("gpu_image")
        for item in session.items
    )
    found = find_engine() if needs_it else None
    if isinstance(found, Engine):
        pool = ThreadPoolExecutor(1, thread_name_prefix="cpu-image-build")
        session.config.stash[CPU_IMAGE_BUILD] = pool.submit(build_job_image, found, "cpu")
        pool.shutdown(wait=False)


@pytest.fixture(autouse=True)
def _not_a_first_stage(monkeypatch: pytest.MonkeyPatch) -> None:
    """A command called in-process is not its process's first stage: the test process's age
    is no command's start-up, and whether an earlier test took it must not change what a
    test sees (the start-up's own tests set it back)."""
    from job.core import timing

    monkeypatch.setattr(timing, "_startup_taken", True)


@pytest.fixture(scope="session")
def shipped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`make run`: the whole job on the shipped ml-latest-small with the default preset and
    flags, once per test session, shared by the pytest-xdist workers: the first one to need
    it makes it while the others wait. The end-to-end tests and the browser read its folder
    (read-only), and the docs' outputs are made the same way. $DOCS_RUN names a finished one
    to reuse instead (a quicker loop while editing the docs)."""
    if reuse := os.environ.get("DOCS_RUN"):
        return Path(reuse)
    # Each worker's base folder is one of the session's (pytest-N/popen-gwK); without
    # xdist the session has only its own.
    session = tmp_path_factory.getbasetemp()
    if "PYTEST_XDIST_WORKER" in os.environ:
        session = session.parent
    out, done = session / "shipped" / "out", session / "shipped" / "done"
    with (session / "shipped.lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.exists():
            shutil.rmtree(out, ignore_errors=True)  # a worker that died half-way
            assert main(["-q", "run", "--out", str(out)]) == 0
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run (seed preset, 2 epochs) on a tiny seeded MovieLens-shaped folder:
    50 users x 80 movies, 15 ratings each, some movies never rated. Returns the out folder.

    Treat it as read-only; copy it (``shutil.copytree``) before running a stage into it.
    """
    from synth import write_movielens

    from job.core.config import build_config
    from job.stages.train import train_stage

    root = tmp_path_factory.mktemp("tiny")
    data = write_movielens(root / "data", n_users=50, n_movies=80, per_user=15, seed=3)
    out = root / "out"
    train_stage(build_config(data=str(data), out=out, preset="seed", epochs=2), verbose=0)
    return out


@pytest.fixture(scope="session")
def scored_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny_run`` copied, scored (top 5, every unwatched pair) and merged: it holds
    recommendations.duckdb and parquet/. Read-only too."""
    import shutil

    from job.core.config import ScoreOptions
    from job.pipeline import merge
    from job.stages.score import score_stage

    out = tmp_path_factory.mktemp("scored") / "out"
    shutil.copytree(tiny_run, out)
    score_stage(out, options=ScoreOptions(top_k=5))
    merge(out)  # through the stage runner, which records the merge in run.json
    return out


CHROMIUM = Path("/usr/bin/chromium")
# The flags this machine needs: no sandbox as root, and no background traffic to the
# network it does not have.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's Chromium through Playwright's sync API, one per session: a second
    `sync_playwright()` cannot start while another one's event loop is running."""
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
