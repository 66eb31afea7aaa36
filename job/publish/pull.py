"""Fetch the model of the run a published site names, for the next run's warm start::

    python -m job pull-latest SOURCE --out previous
    python -m job train --warm-start previous ...

``SOURCE`` is the site's address as visitors reach it (``https://...``: the bucket serves it
publicly, so no credentials are needed, which is why the workflow's train job can use it) or a
publish target (``s3://BUCKET/PREFIX`` with credentials, or a folder). ``latest.json`` names the
run; its ``run.json``, ``model.keras`` and ``encoding.json`` are written into ``--out``, all or
nothing. ``train --warm-start`` then checks them as it checks any run folder.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from job.core.errors import JobError, PublishError
from job.core.files import atomic_path
from job.core.layout import ENCODING_FILE, MODEL_FILE, RUN_JSON
from job.publish.core import open_storage
from job.publish.entries import LATEST_KEY
from job.publish.retention import RUNS
from job.publish.runfiles import RUN_ID_RE
from job.publish.target import parse_target

# What a warm start reads of a published run.
PULLED_FILES = (RUN_JSON, MODEL_FILE, ENCODING_FILE)
TIMEOUT_SECONDS = 60

Reader = Callable[[str], bytes | None]  # key under the prefix -> its bytes, None if absent


def pull_latest(source: str, dest: Path, endpoint_url: str | None = None) -> str:
    """Write the latest published run's model files into ``dest``; return its run id.

    Raises:
        JobError: one line: nothing published there, a run published without its model, or
            the source unreachable. ``dest`` is left as it was.
    """
    read = _reader(source, endpoint_url)
    body = read(LATEST_KEY)
    if body is None:
        raise JobError(
            f"{source}: nothing published there (no {LATEST_KEY}); run without a warm start first"
        )
    try:
        run_id = json.loads(body).get("run_id")
    except (ValueError, UnicodeDecodeError, AttributeError):
        run_id = None
    if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
        raise JobError(f"{source}/{LATEST_KEY}: names no run (damaged?); republish the site")
    files = {}
    for name in PULLED_FILES:
        data = read(f"{RUNS}{run_id}/{name}")
        if data is None:
            raise JobError(
                f"{source}: run {run_id} was published without {name} (by an older version of "
                "the job); run without a warm start once"
            )
        files[name] = data
    with atomic_path(dest) as tmp:
        tmp.mkdir()
        for name, data in files.items():
            (tmp / name).write_bytes(data)
    return run_id


def _reader(source: str, endpoint_url: str | None) -> Reader:
    if source.startswith(("http://", "https://")):
        return _http_reader(source.rstrip("/"))
    try:
        storage = open_storage(parse_target(source), endpoint_url)
    except PublishError as exc:
        raise JobError(str(exc)) from None

    def read(key: str) -> bytes | None:
        try:
            return storage.read(key)
        except PublishError as exc:
            raise JobError(str(exc)) from None

    return read


def _http_reader(base: str) -> Reader:
    def read(key: str) -> bytes | None:
        url = f"{base}/{key}"
        try:
            with urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response:
                return bytes(response.read())
        except urllib.error.HTTPError as exc:
            # A public bucket answers 403 for a missing key when listing is not public.
            if exc.code in (403, 404):
                return None
            raise JobError(f"{url}: HTTP {exc.code} {exc.reason}; try again later") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise JobError(f"{url}: cannot be read ({reason}); check the address") from None

    return read
