"""job.publish.storage: the Storage interface, held to by both of its implementations.

The publishing algorithm (job.publish.core) sees only these operations, so the local folder
and the S3 store (moto's standalone server on loopback) must answer them the same way.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.motoserver import moto_server
from publish_support import isolate_aws, s3

from job.publish.local import LocalStorage
from job.publish.runfiles import LocalFile, checksums
from job.publish.s3 import S3Storage
from job.publish.storage import Storage
from job.publish.target import parse_target

CACHE = "no-cache"


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture(params=["local", "s3"])
def storage(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Storage:
    if request.param == "local":
        return LocalStorage(tmp_path / "public")
    server = request.getfixturevalue("s3_server")
    isolate_aws(monkeypatch, tmp_path)
    bucket = f"store-{tmp_path.name.lower().replace('_', '-')}"[:63].rstrip("-")
    s3(server).create_bucket(Bucket=bucket)
    return S3Storage(parse_target(f"s3://{bucket}/site"), endpoint_url=server)


def local_file(path: Path, data: bytes) -> LocalFile:
    path.write_bytes(data)
    size, sha256, etag = checksums(path)
    return LocalFile(path, path.name, size, sha256, etag)


def test_objects_round_trip_and_list_with_their_md5_etag(storage: Storage, tmp_path: Path) -> None:
    storage.check()
    assert storage.read("runs/r1/a.txt") is None
    assert storage.list_objects("runs/") == {} and storage.list_folders("runs/") == []

    sent: list[int] = []
    files = [
        ("runs/r1/a.txt", local_file(tmp_path / "a.txt", b"alpha")),
        ("runs/r1/sub/b.txt", local_file(tmp_path / "b.txt", b"bravo!")),
    ]
    storage.put_files(files, CACHE, sent.append)
    storage.put_bytes("runs/r2/c.txt", b"charlie", CACHE)

    assert storage.read("runs/r1/sub/b.txt") == b"bravo!"
    assert sum(sent) == len(b"alpha") + len(b"bravo!")
    md5 = {
        k: hashlib.md5(v, usedforsecurity=False).hexdigest()
        for k, v in [
            ("runs/r1/a.txt", b"alpha"),
            ("runs/r1/sub/b.txt", b"bravo!"),
            ("runs/r2/c.txt", b"charlie"),
        ]
    }
    assert storage.list_objects("runs/") == {
        "runs/r1/a.txt": (md5["runs/r1/a.txt"], 5),
        "runs/r1/sub/b.txt": (md5["runs/r1/sub/b.txt"], 6),
        "runs/r2/c.txt": (md5["runs/r2/c.txt"], 7),
    }
    assert sorted(storage.list_folders("runs/")) == ["r1", "r2"]
    assert storage.read_versioned("runs/r2/c.txt") == (b"charlie", md5["runs/r2/c.txt"])
    assert storage.last_modified("runs/r1/") is not None
    assert storage.puts >= 3


def test_put_if_writes_only_over_what_the_caller_last_read(storage: Storage) -> None:
    storage.check()
    assert storage.put_if("latest.json", b"one", CACHE, expected=None)
    versioned = storage.read_versioned("latest.json")
    assert versioned is not None and versioned[0] == b"one"
    assert storage.put_if("latest.json", b"two", CACHE, expected=versioned[1])
    assert storage.read("latest.json") == b"two"


def test_delete_removes_a_run_and_nothing_else(storage: Storage) -> None:
    storage.check()
    for key in ("runs/r1/a.txt", "runs/r1/sub/b.txt", "runs/r2/a.txt"):
        storage.put_bytes(key, key.encode(), CACHE)
    storage.delete("runs/r1/")
    assert set(storage.list_objects("runs/")) == {"runs/r2/a.txt"}
    assert storage.list_folders("runs/") == ["r2"]
    storage.delete("runs/nothing-here/")  # deleting what is not there is no error
