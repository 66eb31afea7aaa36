"""job.site.sql: the SQL page's engine (downloaded from an npm registry, checked, cached) and
the database copy DuckDB-Wasm opens.

The downloads talk to a real HTTP server on loopback that serves a small tarball built here,
shaped like the npm package; the real package is exercised by tests/test_browser.py.
"""

from __future__ import annotations

import base64
import hashlib
import http.server
import io
import logging
import shutil
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import markupsafe
import pytest

from job import pipeline, site
from job.core.errors import DataError
from job.core.layout import DATABASE_FILE, SITE_DIR
from job.site import sql

FAKE_FILES = {"duckdb-eh.wasm": b"\0asm fake engine" * 100, "duckdb-browser-eh.worker.js": b"1;"}


def tarball(files: dict[str, bytes]) -> bytes:
    """An npm-shaped tarball: every file under package/dist/."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in files.items():
            info = tarfile.TarInfo(f"package/dist/{name}")
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def package_of(content: bytes, version: str = "9.9.9") -> sql.NpmPackage:
    digest = base64.b64encode(hashlib.sha512(content).digest()).decode()
    return sql.NpmPackage("@duckdb/duckdb-wasm", version, f"sha512-{digest}")


@dataclass
class Registry:
    """A loopback HTTP server standing in for the npm registry; records the paths asked."""

    url: str
    files: dict[str, bytes]
    asked: list[str] = field(default_factory=list)


@pytest.fixture
def registry() -> Iterator[Registry]:
    served = Registry("", {})

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            served.asked.append(self.path)
            body = served.files.get(self.path)
            if body is None:
                self.send_error(404)
                return
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    served.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield served
    server.shutdown()
    server.server_close()


def closed_port() -> str:
    """A loopback address where nothing listens: the registry of a machine offline."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


# ---------------------------------------------------------------------------------------
# The pinned package


def test_the_pinned_engine_is_the_registry_tarball_of_its_version() -> None:
    assert sql.ENGINE.tarball_url(sql.DEFAULT_REGISTRY) == (
        "https://registry.npmjs.org/@duckdb/duckdb-wasm/-/duckdb-wasm-1.32.0.tgz"
    )
    assert sql.ENGINE.algorithm == "sha512" and len(sql.ENGINE.hexdigest) == 128
    assert sql.ENGINE_FOLDER == "engine/duckdb-wasm-1.32.0"


def test_the_bundled_module_is_built_from_the_pinned_version() -> None:
    """The main-thread module in static/vendor and its recipe name the engine's version: a
    version bump without a rebuild (infra/duckdb-wasm) fails here."""
    templates = site.installed_templates()
    module = (templates / "static" / sql.BROWSER_MODULE).read_text(encoding="utf-8")
    assert module.startswith(f"/* @duckdb/duckdb-wasm {sql.ENGINE.version} ")
    recipe = (Path(__file__).parents[1] / "infra" / "duckdb-wasm" / "package.json").read_text()
    assert f'"@duckdb/duckdb-wasm": "{sql.ENGINE.version}"' in recipe
    assert sql.BROWSER_MODULE.split("/")[-1] in recipe


def test_cli_query_quotes_for_a_posix_shell() -> None:
    assert sql.cli_query("SELECT 'it''s' AS x;\n") == (
        "duckdb -readonly recommendations.duckdb 'SELECT '\\''it'\\'''\\''s'\\'' AS x;'"
    )


# ---------------------------------------------------------------------------------------
# Download, checksum, cache


def test_fetch_downloads_checks_unpacks_and_then_uses_the_cache(
    registry: Registry, tmp_path: Path
) -> None:
    body = tarball({**FAKE_FILES, "duckdb-mvp.wasm": b"not shipped"})
    package = package_of(body)
    registry.files["/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz"] = body
    folder = sql.fetch_engine(tmp_path, registry_url=registry.url, package=package)
    assert folder == tmp_path / "npm" / "duckdb-wasm-9.9.9"
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == FAKE_FILES  # eh only
    assert (tmp_path / "npm" / "duckdb-wasm-9.9.9.tgz").read_bytes() == body
    assert registry.asked == ["/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz"]
    # Cached: no second request; a lost file is unpacked again from the kept tarball.
    assert sql.fetch_engine(tmp_path, registry_url=registry.url, package=package) == folder
    (folder / "duckdb-eh.wasm").unlink()
    sql.fetch_engine(tmp_path, registry_url=registry.url, package=package)
    assert (folder / "duckdb-eh.wasm").read_bytes() == FAKE_FILES["duckdb-eh.wasm"]
    assert len(registry.asked) == 1


def test_a_bad_checksum_is_one_line_and_leaves_nothing(registry: Registry, tmp_path: Path) -> None:
    body = tarball(FAKE_FILES)
    registry.files["/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz"] = body + b"tampered"
    with pytest.raises(DataError) as caught:
        sql.fetch_engine(tmp_path, registry_url=registry.url, package=package_of(body))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"{registry.url}/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz: ")
    assert "SHA512" in message and package_of(body).hexdigest in message
    assert [p.name for p in (tmp_path / "npm").iterdir()] == [".lock"]  # no tarball, .part, folder


def test_a_damaged_cached_tarball_is_refused(tmp_path: Path) -> None:
    body = tarball(FAKE_FILES)
    (tmp_path / "npm").mkdir()
    (tmp_path / "npm" / "duckdb-wasm-9.9.9.tgz").write_bytes(body[:-10])
    with pytest.raises(DataError, match=r"checksum does not match the pinned integrity"):
        sql.fetch_engine(tmp_path, registry_url=closed_port(), package=package_of(body))


def test_a_tarball_without_the_engine_is_refused(registry: Registry, tmp_path: Path) -> None:
    body = tarball({"duckdb-eh.wasm": b"x"})
    registry.files["/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz"] = body
    with pytest.raises(DataError, match=r"no package/dist/duckdb-browser-eh.worker.js"):
        sql.fetch_engine(tmp_path, registry_url=registry.url, package=package_of(body))
    assert not (tmp_path / "npm" / "duckdb-wasm-9.9.9").exists()


def test_offline_the_engine_is_missing_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(sql.REGISTRY_ENV, closed_port())
    with caplog.at_level(logging.WARNING, logger="job.site.sql"):
        engine = sql.engine_for_site(tmp_path)
    assert engine.folder is None
    assert "could not download" in engine.missing and "\n" not in engine.missing
    assert str(tmp_path / "npm" / "duckdb-wasm-1.32.0.tgz") in engine.missing  # where to put it
    assert [r.getMessage() for r in caplog.records] == [
        f"sql page: no DuckDB-Wasm engine, the page says so: {engine.missing}"
    ]


def test_an_unwritable_cache_is_a_missing_engine_in_one_line(tmp_path: Path) -> None:
    """As in a container whose user has no home of its own: render goes on without it."""
    (tmp_path / "a-file").write_text("")
    cache = tmp_path / "a-file" / "cache"  # cannot be made, whoever runs the test
    engine = sql.engine_for_site(cache)
    assert engine.folder is None and "\n" not in engine.missing
    assert engine.missing.startswith(f"{cache / 'npm'}: cannot write the engine's cache (")
    assert engine.missing.endswith("pass --cache-dir (or set MOVIELENS_CACHE) to a writable folder")


# ---------------------------------------------------------------------------------------
# Render: with the engine, and without it


def test_browser_database_holds_every_table_in_the_old_format(
    scored_run: Path, tmp_path: Path
) -> None:
    target = tmp_path / "sql" / "recommendations.duckdb"
    sql.write_browser_database(scored_run / DATABASE_FILE, target)
    with duckdb.connect(str(scored_run / DATABASE_FILE), read_only=True) as con:
        tables = [t for (t,) in con.execute("SHOW TABLES").fetchall()]
        expected = {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in tables}
    with duckdb.connect(str(target), read_only=True) as con:
        assert [t for (t,) in con.execute("SHOW TABLES").fetchall()] == tables
        for table, rows in expected.items():
            assert con.execute(f"SELECT * FROM {table} ORDER BY ALL").fetchall() == rows, table
    assert [p.name for p in target.parent.iterdir()] == ["recommendations.duckdb"]
    # DuckDB 1.4's storage version is written in the file's header (64 + 3 = 67, the newest
    # DuckDB-Wasm 1.32.0 reads); the job's own file has a newer one.
    header = target.read_bytes()[:64]
    assert int.from_bytes(header[8 + 4 : 8 + 4 + 8], "little") <= 67


def test_render_with_the_engine_cached(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    cache = tmp_path / "cache"
    engine = sql.engine_cache(cache)
    engine.mkdir(parents=True)
    for name, content in FAKE_FILES.items():
        (engine / name).write_bytes(content)
    monkeypatch.setenv(sql.REGISTRY_ENV, closed_port())  # never asked: the cache has it
    pipeline.render(out, workers=1, cache_dir=cache)  # as `render` and `run` do
    installed = out / sql.ENGINE_FOLDER
    assert {p.name: p.read_bytes() for p in installed.iterdir()} == FAKE_FILES
    page = (out / SITE_DIR / "sql.html").read_text(encoding="utf-8")
    assert 'id="sql-missing"' not in page
    assert f'data-engine-folder="{sql.ENGINE_FOLDER}"' in page
    assert (out / SITE_DIR / sql.BROWSER_DATABASE).is_file()
    for example in sql.EXAMPLES:
        assert str(markupsafe.escape(example.title)) in page
    # every page links to it from the header
    index = (out / SITE_DIR / "index.html").read_text(encoding="utf-8")
    assert '<a href="sql.html">SQL</a>' in index


def test_render_without_engine_or_network_still_succeeds(
    scored_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    monkeypatch.setenv(sql.REGISTRY_ENV, closed_port())
    with caplog.at_level(logging.WARNING):
        summary = pipeline.render(out, workers=1, cache_dir=tmp_path / "empty-cache").value
    assert summary.pages > 0
    page = (out / SITE_DIR / "sql.html").read_text(encoding="utf-8")
    assert 'id="sql-missing"' in page and "could not download" in page
    assert not (out / sql.ENGINE_FOLDER).exists()
    assert not (out / SITE_DIR / sql.BROWSER_DATABASE).exists()  # no copy without an engine
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and warnings[0].getMessage().startswith("sql page: no DuckDB-Wasm")


def test_fetches_at_once_download_once(registry: Registry, tmp_path: Path) -> None:
    """Renders in parallel (pytest-xdist workers, shards) share one cache: one downloads,
    the others wait for it and find the engine there."""
    from concurrent.futures import ThreadPoolExecutor

    body = tarball(FAKE_FILES)
    registry.files["/@duckdb/duckdb-wasm/-/duckdb-wasm-9.9.9.tgz"] = body
    with ThreadPoolExecutor(4) as pool:
        folders = list(
            pool.map(
                lambda _: sql.fetch_engine(
                    tmp_path, registry_url=registry.url, package=package_of(body)
                ),
                range(4),
            )
        )
    assert len(set(folders)) == 1
    assert {p.name: p.read_bytes() for p in folders[0].iterdir()} == FAKE_FILES
    assert len(registry.asked) == 1
