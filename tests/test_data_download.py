"""GroupLens downloads: the pinned checksum, the cache, and the message without network."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from synth import write_movielens

from job.core.errors import DataError
from job.data.download import KNOWN, KnownDataset, dataset_checksum, fetch
from job.data.movielens import load_folder


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_movielens(tmp_path / "data", n_users=8, n_movies=12, per_user=5)


# --- download with a pinned checksum, against a local HTTP server ---


@pytest.fixture
def http_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", root
    server.shutdown()


def make_zip(folder: Path, name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for file in folder.iterdir():
            zf.write(file, f"{name}/{file.name}")
    return buffer.getvalue()


def test_download_checks_sha256_and_caches(
    folder: Path, tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    base, root = http_server
    archive = make_zip(folder, "ml-test")
    (root / "ml-test.zip").write_bytes(archive)
    known = KnownDataset("ml-test", hashlib.sha256(archive).hexdigest())
    cache = tmp_path / "cache"
    unpacked = fetch(known, cache, url=f"{base}/ml-test.zip")
    assert (unpacked / "ratings.csv").read_bytes() == (folder / "ratings.csv").read_bytes()
    (root / "ml-test.zip").unlink()  # a second use must not touch the network
    assert fetch(known, cache, url=f"{base}/ml-test.zip") == unpacked
    assert np.array_equal(
        load_folder(unpacked, "ml-test").ratings, load_folder(folder, "x").ratings
    )


def test_download_with_wrong_checksum_is_refused(
    folder: Path, tmp_path: Path, http_server: tuple[str, Path]
) -> None:
    base, root = http_server
    (root / "ml-test.zip").write_bytes(make_zip(folder, "ml-test"))
    known = KnownDataset("ml-test", "0" * 64)
    with pytest.raises(DataError, match="expected 0000"):
        fetch(known, tmp_path / "cache", url=f"{base}/ml-test.zip")
    assert not list((tmp_path / "cache").iterdir()), "no partial download may stay in the cache"


def test_download_without_network_says_where_to_put_the_file(tmp_path: Path) -> None:
    known = KnownDataset("ml-test", "0" * 64)
    with pytest.raises(DataError) as error:
        fetch(known, tmp_path / "cache", url="http://127.0.0.1:9/ml-test.zip")
    assert f"put it at {tmp_path / 'cache' / 'ml-test.zip'}" in str(error.value)


def test_every_pin_is_a_sha256_and_a_grouplens_address() -> None:
    for known in KNOWN.values():
        assert len(known.sha256) == 64 and int(known.sha256, 16) >= 0
        assert known.url == f"https://files.grouplens.org/datasets/movielens/{known.name}.zip"


def test_dataset_checksum_covers_names_and_contents(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("1")
    b.write_text("1")
    expected = hashlib.sha256(b"a.csv" + hashlib.sha256(b"1").hexdigest().encode()).hexdigest()
    assert dataset_checksum([a]) == expected
    assert dataset_checksum([b]) != dataset_checksum([a])  # same bytes, another file
    assert dataset_checksum([a, b]) != dataset_checksum([b, a])
