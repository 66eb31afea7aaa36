"""The SQL page's engine and data: DuckDB-Wasm from the npm registry, and a database copy the
browser can open.

The engine is ``@duckdb/duckdb-wasm`` at a pinned version, downloaded once from the npm
registry (``$MOVIELENS_NPM_REGISTRY``, else registry.npmjs.org) into the dataset cache, its
SHA-512 checked against the registry's pinned integrity by ``job.data.download.download``; only the
files of the one variant the page loads (``eh``: WebAssembly exceptions, every current
browser) are unpacked. ``render`` links them into ``OUT/engine/duckdb-wasm-VERSION/``, which
``publish`` uploads once to ``PREFIX/engine/...``, outside the runs: a later run finds them
there and uploads nothing for them. The page's main-thread module (``duckdb-browser.mjs``
with its ``apache-arrow`` import bundled in) is built from the same version by
``infra/duckdb-wasm/`` and ships with the templates (``static/vendor/``).

DuckDB-Wasm 1.32.0 embeds DuckDB 1.4.3, which cannot open a file that the job's DuckDB 2.x
writes; ``write_browser_database`` copies the run's tables into a file in the 1.4 storage
format, which the page reads over http by range requests. Parquet is not used in the browser:
it makes DuckDB-Wasm fetch its parquet extension from extensions.duckdb.org.

Without network and with nothing cached, ``engine_for_site`` says why in one log line and
the page says the engine is missing; rendering goes on.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import logging
import os
import shutil
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import duckdb

from job.core.errors import DataError, JobError
from job.core.files import atomic_path
from job.core.layout import ENGINE_DIR
from job.core.timing import Stopwatch
from job.data.download import download

log = logging.getLogger(__name__)

DEFAULT_REGISTRY = "https://registry.npmjs.org"
REGISTRY_ENV = "MOVIELENS_NPM_REGISTRY"


@dataclass(frozen=True)
class NpmPackage:
    """A package version on the npm registry and the integrity the registry publishes for
    its tarball (``npm view NAME@VERSION dist.integrity``)."""

    name: str  # "@duckdb/duckdb-wasm"
    version: str
    integrity: str  # "sha512-<base64>"

    @property
    def tarball_name(self) -> str:
        """``duckdb-wasm-1.32.0.tgz``: the registry's file name (the scope dropped)."""
        return f"{self.name.rsplit('/', 1)[-1]}-{self.version}.tgz"

    def tarball_url(self, registry: str) -> str:
        return f"{registry.rstrip('/')}/{self.name}/-/{self.tarball_name}"

    @property
    def algorithm(self) -> str:
        return self.integrity.split("-", 1)[0]

    @property
    def hexdigest(self) -> str:
        """The integrity's digest in hex, as ``job.data.download.download`` compares it."""
        return base64.b64decode(self.integrity.split("-", 1)[1]).hex()


ENGINE = NpmPackage(
    "@duckdb/duckdb-wasm",
    "1.32.0",
    "sha512-IewXTNYEjsZCPE9weUWgtjGxUlMRo7qhX0GF6tq/KjK8bnY+RAl4cyUdYUfcdzbyb4b9ZxPC+FOsCcxgaKFWMg==",
)
# The eh variant only: the smaller of the two, and mvp needs no browser feature eh lacks.
ENGINE_FILES = ("duckdb-eh.wasm", "duckdb-browser-eh.worker.js")
# Where the engine sits in OUT, and under the publish prefix (job.publish uploads it there).
ENGINE_FOLDER = f"{ENGINE_DIR}/duckdb-wasm-{ENGINE.version}"
# The main-thread module, bundled from the same version (infra/duckdb-wasm/package.json).
BROWSER_MODULE = f"vendor/duckdb-browser-{ENGINE.version}.mjs"
# The database copy the page opens, inside the site folder (relative to it).
BROWSER_DATABASE = "sql/recommendations.duckdb"
# The newest storage format DuckDB-Wasm 1.32.0 (DuckDB 1.4.3) reads.
BROWSER_STORAGE_VERSION = "v1.4.0"


@dataclass(frozen=True)
class Example:
    """One of the docs' example queries (docs/guides/querying.md), one click away."""

    title: str
    sql: str


# The querying guide's queries (docs/guides/querying.md), word for word (tests/test_docs.py
# checks that the two agree).
EXAMPLES = (
    Example(
        "A user's top 10, with titles and reasons",
        """SELECT t.rank, m.title, round(t.predicted_rating, 1) AS stars,
       b.title AS because_you_rated, r.rating AS you_gave
FROM top_k t
JOIN movies m USING (movie_id)
LEFT JOIN movies b ON b.movie_id = t.because_movie_id
LEFT JOIN ratings r ON r.user_id = t.user_id AND r.movie_id = t.because_movie_id
WHERE t.user_id = 557
ORDER BY t.rank;""",
    ),
    Example(
        "Both numbers: predicted stars and the recommendation score",
        """SELECT m.title, round(p.score, 3) AS score, round(p.predicted_rating, 2) AS predicted,
       m.n_ratings
FROM predictions p JOIN movies m USING (movie_id)
WHERE p.user_id = 557
ORDER BY p.predicted_rating DESC
LIMIT 5;""",
    ),
    Example(
        "The most recommended movies",
        """SELECT m.title, count(*) AS in_top_10_of, round(avg(t.predicted_rating), 2) AS avg_predicted,
       m.n_ratings
FROM top_k t JOIN movies m USING (movie_id)
GROUP BY m.title, m.n_ratings
ORDER BY in_top_10_of DESC, m.title
LIMIT 10;""",
    ),
    Example(
        "A genre's best predicted movies",
        """SELECT m.title, round(avg(p.predicted_rating), 2) AS avg_predicted,
       count(*) AS unwatched_by, m.n_ratings
FROM predictions p JOIN movies m USING (movie_id)
WHERE list_contains(m.genres, 'Sci-Fi') AND NOT p.cold_start AND m.n_ratings >= 20
GROUP BY m.title, m.n_ratings
ORDER BY avg_predicted DESC, m.title
LIMIT 10;""",
    ),
    Example(
        "People who liked it also liked",
        """SELECT a.rank, o.title AS people_who_liked_it_also_liked, round(a.score, 3) AS score
FROM also_liked a
JOIN movies m ON m.movie_id = a.movie_id
JOIN movies o ON o.movie_id = a.other_movie_id
WHERE m.title = 'Die Hard (1988)'
ORDER BY a.rank
LIMIT 5;""",
    ),
    Example(
        "The cold-start list",
        """SELECT p.rank, m.title, round(p.score, 2) AS bayesian_average, p.n_ratings,
       round(m.mean_rating, 2) AS mean_rating
FROM popular p JOIN movies m USING (movie_id)
ORDER BY p.rank
LIMIT 10;""",
    ),
    Example(
        "The model against the baselines",
        """SELECT model, round(rmse, 4) AS rmse, round(mae, 4) AS mae,
       round(ndcg_at_10, 4) AS ndcg_at_10, round(coverage_at_10, 4) AS coverage_at_10
FROM metrics
ORDER BY ndcg_at_10 DESC, model;""",
    ),
)


# ---------------------------------------------------------------------------------------
# The engine: downloaded once, checked, unpacked into the cache


def registry() -> str:
    """The npm registry the engine comes from: ``$MOVIELENS_NPM_REGISTRY`` (a mirror),
    else registry.npmjs.org."""
    return os.environ.get(REGISTRY_ENV) or DEFAULT_REGISTRY


def engine_cache(cache_dir: Path, package: NpmPackage = ENGINE) -> Path:
    """The cache folder holding the engine's unpacked files."""
    return cache_dir / "npm" / f"{package.tarball_name.removesuffix('.tgz')}"


def fetch_engine(
    cache_dir: Path,
    *,
    registry_url: str | None = None,
    package: NpmPackage = ENGINE,
    files: tuple[str, ...] = ENGINE_FILES,
) -> Path:
    """The folder of the engine's files, downloaded and unpacked into the cache on first use.

    The tarball (``CACHE/npm/duckdb-wasm-1.32.0.tgz``) is kept, like a dataset's archive, so
    that a damaged unpacked folder is remade without the network; ``npm pack
    @duckdb/duckdb-wasm@1.32.0`` writes the same file, for a machine without this job's
    network access.

    Raises:
        DataError: the download failed (no network: the line says where to put the
            tarball), its digest differs from the pinned integrity, or the tarball lacks
            a file.
    """
    folder = engine_cache(cache_dir, package)
    if all((folder / name).is_file() for name in files):
        return folder
    # One fetch at a time per cache (renders in parallel processes, tests on several
    # workers): the others wait, then find the folder complete.
    try:
        with _cache_lock(cache_dir / "npm"):
            if all((folder / name).is_file() for name in files):
                return folder
            tarball = cache_dir / "npm" / package.tarball_name
            _fetch_into(folder, tarball, package, files, registry_url)
    except OSError as exc:  # DataError is not one: the download's own lines pass through
        raise DataError(
            f"{cache_dir / 'npm'}: cannot write the engine's cache ({exc.strerror or exc}); "
            "pass --cache-dir (or set MOVIELENS_CACHE) to a writable folder"
        ) from None
    return folder


@contextlib.contextmanager
def _cache_lock(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _fetch_into(
    folder: Path,
    tarball: Path,
    package: NpmPackage,
    files: tuple[str, ...],
    registry_url: str | None,
) -> None:
    if not tarball.exists():
        url = package.tarball_url(registry_url or registry())
        download(url, tarball, package.hexdigest, algorithm=package.algorithm)
    else:
        with tarball.open("rb") as f:
            found = hashlib.file_digest(f, package.algorithm).hexdigest()
        if found != package.hexdigest:
            raise DataError(
                f"{tarball}: checksum does not match the pinned integrity {package.integrity}; "
                "delete it and render again (or `npm pack "
                f"{package.name}@{package.version}` into {tarball.parent})"
            )
    _unpack(tarball, folder, files)


def _unpack(tarball: Path, folder: Path, files: tuple[str, ...]) -> None:
    """Extract ``package/dist/<name>`` for each name into ``folder``, atomically."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r:gz") as archive, atomic_path(folder) as tmp:
            tmp.mkdir()
            for name in files:
                try:
                    member = archive.getmember(f"package/dist/{name}")
                except KeyError:
                    raise DataError(
                        f"{tarball}: no package/dist/{name} in the tarball; delete it and "
                        "render again"
                    ) from None
                source = archive.extractfile(member)
                if source is None:
                    raise DataError(f"{tarball}: package/dist/{name} is not a file")
                with source, (tmp / name).open("wb") as target:
                    shutil.copyfileobj(source, target)
    except (tarfile.TarError, EOFError, OSError) as exc:
        if isinstance(exc, JobError):
            raise
        raise DataError(
            f"{tarball}: not a readable npm tarball ({exc}); delete it and render again"
        ) from None


@dataclass(frozen=True)
class SqlEngine:
    """What the SQL page can use: the engine's files, or why there are none."""

    folder: Path | None
    missing: str = ""  # the reason, shown on the page, when folder is None


def engine_for_site(cache_dir: Path) -> SqlEngine:
    """The engine from the cache (fetched on first use, said in one line), or why it is
    missing: a failure is one warning line and the page says so; rendering never fails for it.
    """
    tarball = cache_dir / "npm" / ENGINE.tarball_name
    had_tarball = tarball.is_file()
    watch = Stopwatch()
    try:
        with watch.time("fetch"):
            folder = fetch_engine(cache_dir)
    except DataError as exc:
        log.warning("sql page: no DuckDB-Wasm engine, the page says so: %s", exc)
        return SqlEngine(None, str(exc))
    seconds = watch.seconds["fetch"]
    if had_tarball or not tarball.is_file():
        log.info("DuckDB-Wasm engine: cached in %s (%.1f s)", folder, seconds)
    else:
        size = tarball.stat().st_size / 1e6
        log.info("DuckDB-Wasm engine: downloaded %.0f MB in %.1f s", size, seconds)
    return SqlEngine(folder)


def install_engine(engine: Path, out: Path) -> Path:
    """``OUT/engine/duckdb-wasm-VERSION/``: the engine's files, hard-linked from the cache
    where the file system allows (no copy of the engine per run), else copied. Left alone when
    already complete."""
    target = out / ENGINE_FOLDER
    if all(
        (target / name).is_file()
        and (target / name).stat().st_size == (engine / name).stat().st_size
        for name in ENGINE_FILES
    ):
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        for name in ENGINE_FILES:
            try:
                os.link(engine / name, tmp / name)
            except OSError:
                shutil.copyfile(engine / name, tmp / name)
    return target


# ---------------------------------------------------------------------------------------
# The database copy the browser opens


def write_browser_database(database: Path, target: Path) -> None:
    """Copy every table of ``database`` into ``target`` in DuckDB 1.4's storage format,
    which DuckDB-Wasm reads (the job's own file is in its newer format). Atomic."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp, duckdb.connect() as con:
        con.execute("ATTACH ? AS source (READ_ONLY)", [str(database)])
        con.execute(
            f"ATTACH ? AS browser (STORAGE_VERSION '{BROWSER_STORAGE_VERSION}')", [str(tmp)]
        )
        con.execute("COPY FROM DATABASE source TO browser")
        con.execute("DETACH browser")
        con.execute("DETACH source")


def cli_query(sql: str) -> str:
    """The ``duckdb`` CLI command that runs ``sql`` from the run's folder (read-only)."""
    quoted = sql.strip().replace("'", "'\\''")
    return f"duckdb -readonly recommendations.duckdb '{quoted}'"
