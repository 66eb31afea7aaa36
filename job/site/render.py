"""Rendering the static site: one Jinja2 environment, the pages, the user search index.

``render_site(out)`` reads a merged run (``OUT/recommendations.duckdb`` and ``OUT/run.json``)
and writes ``OUT/site/``::

    index.html              dataset, model, metrics against the baselines, what changed since
                            the previous run (``job.site.runs``), the chart, search
    runs.html               the kept runs' metrics, a table and a chart (``job.site.runs``)
    popular.html            what a new user is shown: one pick per genre, each genre's best
    taste.html              "start from your taste": picks in, recommendations out (in JS)
    sql.html                SQL in the browser (DuckDB-Wasm, over http(s); ``job.site.sql``)
    sql/recommendations.duckdb  the tables in the storage format DuckDB-Wasm reads
    users/<id>.html         a user's top-rated movies and top recommendations
    movies/<id>.html        a movie: links out, tags, its ratings' chart, its neighbours
    search/users-<n>.js     the user-id index, one shard per ``id % n_shards``
    search/titles*.js       the title index (``job.site.search``)
    taste/nb-<n>.js         the taste page's movie neighbours (``job.site.taste``)
    static/                 site.css, search.js, taste.js, vendor/ (from site_templates/static)

Every link is relative, so the folder works from ``file://`` and from a bucket with no server.
Links to the data files (``../recommendations.duckdb``, ``../parquet/...``, ``../run.json``)
point beside ``site/``, which is where they sit in OUT and in the published layout.

The work is split so that each part can be tested alone: ``job.site.data.load_site_data``
(all the reading), ``job.site.chart.error_chart_svg`` (pure), and ``write_site`` (SiteData ->
files).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import pickle
import shutil
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import duckdb
import jinja2

from job.core.config import default_cache_dir
from job.core.errors import JobError
from job.core.files import atomic_path
from job.core.layout import DATABASE_FILE, SITE_DIR
from job.core.signals import ignore_interrupts
from job.core.tables import CATALOG
from job.core.timing import Stopwatch
from job.runfolder.manifest import Manifest, StageRecord
from job.runfolder.preflight import damaged_database, require
from job.site.chart import (
    RatingChart,
    _finite,
    best_baseline,
    error_chart_svg,
    inline_svg,
    ratings_description,
)
from job.site.data import TASTE_EXPLAINED, TASTE_SOURCE, SiteData, load_site_data
from job.site.runs import RUNS_INDEX_URL, SUMMARY_METRICS, this_run
from job.site.search import write_title_index
from job.site.sql import (
    BROWSER_DATABASE,
    BROWSER_MODULE,
    ENGINE,
    ENGINE_FILES,
    ENGINE_FOLDER,
    EXAMPLES,
    SqlEngine,
    cli_query,
    engine_for_site,
    install_engine,
    write_browser_database,
)
from job.site.taste import n_taste_shards, write_taste_shards
from job.site.templates import (
    COUNT_COLUMNS,
    SECONDS_COLUMNS,
    check_templates,
    make_environment,
)

log = logging.getLogger(__name__)

# Below this many pages a process pool costs more to start than it saves: each spawned
# worker re-imports numpy and Jinja2 and unpickles the data (docs/benchmarks.md).
PARALLEL_MIN_PAGES = 50_000


@dataclass(frozen=True)
class SiteSummary:
    site: Path
    users: int
    movies: int
    pages: int
    workers: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)
    record: StageRecord | None = None  # for run.json (job.pipeline.run_stage writes it)

    def describe(self) -> str:
        """One line: pages, users, movies, seconds, workers, each step's time, the folder."""
        steps = ", ".join(f"{k} {v:.1f} s" for k, v in self.timings.items())
        return (
            f"site: {self.pages:,} pages ({self.users:,} users, {self.movies:,} movies) in "
            f"{self.seconds:.1f} s with {self.workers} worker(s) [{steps}] -> {self.site}"
        )


# ---------------------------------------------------------------------------------------
# Entry point


def render_site(
    out: Path,
    *,
    templates: Path | None = None,
    workers: int | None = None,
    n_top_rated: int = 10,
    n_popular: int = 100,
    engine: SqlEngine | None = None,
    manifest: Manifest | None = None,
) -> SiteSummary:
    """Render ``OUT/site`` from a merged run (``job.pipeline.run_stage`` records its time).

    Args:
        out: the run's folder (``recommendations.duckdb``, ``run.json``).
        templates: the Jinja2 templates and their ``static/`` folder.
        workers: processes rendering pages; ``None``: one per core from
            ``PARALLEL_MIN_PAGES`` pages on, else one.
        n_top_rated: a user's top-rated movies shown on their page.
        n_popular: the head of the cold-start ranking shown on popular.html (the table in
            the DuckDB file ranks the whole catalogue).
        engine: the SQL page's engine (``job.site.sql.engine_for_site``, which
            ``job.pipeline.render`` calls before the stage); ``None``: fetched here, into
            ``$MOVIELENS_CACHE`` or ~/.cache/movielens-job. Without it (no network) the page
            says the engine is missing.
        manifest: the run's, when ``require(out, "render")`` has read it already.

    Raises:
        JobError: the run is not merged yet, or the templates are missing.
    """
    watch = Stopwatch()
    with watch.time("render"):
        templates = check_templates(templates)
        manifest = manifest or require(out, "render")
        try:
            data, timings = load_site_data(
                out, manifest, n_top_rated=n_top_rated, n_popular=n_popular
            )
        except duckdb.Error as exc:  # damage inside a table, past require's cheap checks
            raise damaged_database(out, exc) from None
        engine = engine or engine_for_site(default_cache_dir())
        if engine.folder is not None:
            install_engine(engine.folder, out)
        summary = write_site(
            out / SITE_DIR,
            data,
            templates=templates,
            workers=workers,
            database=out / DATABASE_FILE,
            engine=engine,
        )
    summary = dataclasses.replace(
        summary,
        seconds=watch.seconds["render"],
        timings={**timings, **summary.timings},
        record=StageRecord(manifest),
    )
    log.info("%s", summary.describe())
    return summary


# ---------------------------------------------------------------------------------------
# Writing the site (the templates and their filters: ``job.site.templates``)


@dataclass(frozen=True)
class _PageWriter:
    """What one process renders user and movie pages with: the compiled templates and the
    data the pages show."""

    data: SiteData
    site: Path
    chart: RatingChart
    templates: dict[str, jinja2.Template]  # "user", "movie"

    @classmethod
    def start(cls, templates: Path, data: SiteData, site: Path, chart: RatingChart) -> _PageWriter:
        env = make_environment(templates)
        env.globals.update(_site_globals(data))
        pages = {kind: env.get_template(f"{kind}.html") for kind in ("user", "movie")}
        return cls(data, site, chart, pages)

    def render(self, kind: str, ids: Sequence[int]) -> int:
        """Render the pages of ``ids`` (users or movies)."""
        template, folder = self.templates[kind], self.site / f"{kind}s"
        for page_id in ids:
            context = (
                user_context(self.data, page_id)
                if kind == "user"
                else movie_context(self.data, page_id, self.chart)
            )
            (folder / f"{page_id}.html").write_text(template.render(context), encoding="utf-8")
        return len(ids)


@functools.cache
def _pool_writer(state: Path) -> _PageWriter:
    """A render worker's writer, made once per process from what the parent pickled once
    into ``state`` (a function's cache, not a module's mutable global)."""
    with state.open("rb") as f:
        return _PageWriter.start(*pickle.load(f))


def _render_in_pool(state: Path, kind: str, ids: Sequence[int]) -> int:
    return _pool_writer(state).render(kind, ids)


def _site_globals(data: SiteData) -> dict[str, Any]:
    ids = [u.user_id for u in data.users]
    return {
        "run": data.run,
        "movies": data.movies,
        "n_shards": data.n_shards,
        "user_id_range": (min(ids), max(ids)) if ids else (0, 0),
        "runs_index_url": RUNS_INDEX_URL,
    }


def user_context(data: SiteData, user_id: int) -> dict[str, Any]:
    return {
        "root": "../",
        "user": data.users_by_id[user_id],
        "top_rated": data.top_rated.get(user_id, ()),
        "recommendations": data.recommendations.get(user_id, ()),
    }


def movie_context(
    data: SiteData, movie_id: int, chart: RatingChart | None = None
) -> dict[str, Any]:
    movie = data.movies[movie_id]
    counts = data.rating_counts.get(movie_id)
    drawing = described = None
    if chart is not None and counts:
        described = ratings_description(movie.title, chart.values, counts)
        # A handful of ratings says more as a sentence than as a chart (and 6,000 fewer
        # drawings keep the site small): the chart from as many ratings as neighbours need.
        if sum(counts) >= data.similar_min_ratings:
            drawing = chart.render(counts, described)
    return {
        "root": "../",
        "movie": movie,
        "similar": data.similar.get(movie_id),
        "similar_min_ratings": data.similar_min_ratings,
        "links": data.links.get(movie_id),
        "tags": data.tags.get(movie_id, ()),
        "ratings_chart": drawing,
        "ratings_described": described,
    }


def write_site(
    site: Path,
    data: SiteData,
    *,
    templates: Path | None = None,
    workers: int | None = None,
    database: Path | None = None,
    engine: SqlEngine | None = None,
) -> SiteSummary:
    """Write every page, the search shards and the static files; the folder appears whole.

    ``database`` (the run's recommendations.duckdb) is copied for the SQL page in the format
    DuckDB-Wasm reads, and ``engine`` says whether the page has its engine; without either
    the page says why it cannot run. The summary's timings: each step, and the replacement
    of the previous site by the new folder.

    Raises:
        JobError: the templates are missing or a page refers to something undefined.
    """
    if templates is None:
        templates = check_templates()
    n_pages = len(data.users) + len(data.movies) + 5  # index, popular, taste, sql, runs
    if workers is None:
        workers = (os.cpu_count() or 1) if n_pages >= PARALLEL_MIN_PAGES else 1
    workers = max(1, workers)
    if database is None:
        engine = SqlEngine(None, "this site was rendered without the run's database")
    engine = engine or SqlEngine(None, "this site was rendered without it")
    watch = Stopwatch()
    try:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_path(site))
            _write_into(tmp, data, templates, workers, database, engine, watch)
            written = stack.pop_all()  # the new folder, not yet in place
        with watch.time("replace"):
            written.close()  # atomic_path puts it in place of the previous site
    except jinja2.TemplateNotFound as exc:
        raise JobError(f"site template {exc.name} not found in {templates}") from exc
    except jinja2.UndefinedError as exc:
        raise JobError(f"site templates in {templates}: {exc.message}") from exc
    return SiteSummary(
        site=site,
        users=len(data.users),
        movies=len(data.movies),
        pages=n_pages,
        workers=workers,
        seconds=watch.total(),
        timings=watch.seconds,
    )


def _write_into(
    tmp: Path,
    data: SiteData,
    templates: Path,
    workers: int,
    database: Path | None,
    engine: SqlEngine,
    watch: Stopwatch,
) -> None:
    """Every file of the site into the new folder ``tmp``, each step timed by ``watch``."""
    with watch.time("top pages"):  # index, popular, runs, taste; the static files
        tmp.mkdir()
        for folder in ("users", "movies", "search", "taste"):
            (tmp / folder).mkdir()
        static = templates / "static"
        if static.is_dir():
            shutil.copytree(static, tmp / "static")
        _write_top_pages(tmp, data, templates)
    with watch.time("sql"):
        if database is not None and engine.folder is not None:
            write_browser_database(database, tmp / BROWSER_DATABASE)
        _write_sql_page(tmp, data, templates, engine)
    with watch.time("search"):
        _write_search_shards(tmp / "search", data)
        write_title_index(tmp / "search", data.movies)
        write_taste_shards(tmp / "taste", data.movies, data.neighbours)
    with watch.time("pages"):
        # matplotlib draws the ratings chart once; every movie page scales its bars
        chart = RatingChart.draw(data.rating_values or (1.0, 2.0, 3.0, 4.0, 5.0))
        _write_entity_pages(tmp, data, templates, workers, chart)


def _write_top_pages(site: Path, data: SiteData, templates: Path) -> None:
    env = make_environment(templates)
    env.globals.update(_site_globals(data))
    baseline = best_baseline(data.metrics)
    chart = error_chart_svg(data.history, *(baseline or (None, None)))
    (site / "error-over-epochs.svg").write_text(chart, encoding="utf-8")
    active = sorted(data.users, key=lambda u: (-u.n_ratings, u.user_id))[:10]
    index = env.get_template("index.html").render(
        root="",
        dataset=data.dataset,
        model=data.model,
        metrics=data.metrics,
        metric_columns=data.metric_columns,
        best_columns=_best_per_column(data.metrics, data.metric_columns),
        history=data.history,
        baseline=baseline,
        chart=inline_svg(chart),
        active_users=active,
        data_files=data.data_files,
        n_popular=len(data.popular),
    )
    (site / "index.html").write_text(index, encoding="utf-8")
    popular = env.get_template("popular.html").render(
        root="",
        popular=data.popular,
        every_genre=data.every_genre,
        by_genre=data.by_genre,
        popular_min_ratings=data.popular_min_ratings,
    )
    (site / "popular.html").write_text(popular, encoding="utf-8")
    runs = env.get_template("runs.html").render(
        root="", this_run=this_run(data), summary_metrics=SUMMARY_METRICS
    )
    (site / "runs.html").write_text(runs, encoding="utf-8")
    # The taste page's starting points, and what fills its list when the picks' neighbours
    # are too few: the one-per-genre picks, then the most popular movies.
    starters = [pick.movie.movie_id for pick in data.every_genre]
    fill = list(dict.fromkeys([*starters, *(p.movie_id for p in data.popular[:50])]))
    taste = env.get_template("taste.html").render(
        root="",
        every_genre=data.every_genre,
        fill=[[m, data.movies[m].title] for m in fill if m in data.movies],
        n_taste_shards=n_taste_shards(len(data.movies)),
        neighbours_are=TASTE_EXPLAINED.get(TASTE_SOURCE[0], "each pick's nearest movies"),
    )
    (site / "taste.html").write_text(taste, encoding="utf-8")


def _write_sql_page(site: Path, data: SiteData, templates: Path, engine: SqlEngine) -> None:
    env = make_environment(templates)
    env.globals.update(_site_globals(data))
    page = env.get_template("sql.html").render(
        root="",
        examples=EXAMPLES,
        tables=CATALOG,
        first_cli=cli_query(EXAMPLES[0].sql),
        engine_missing=engine.missing if engine.folder is None else "",
        engine_name=f"{ENGINE.name} {ENGINE.version}",
        engine_folder=ENGINE_FOLDER,
        engine_files=ENGINE_FILES,
        browser_module=BROWSER_MODULE,
        browser_database=BROWSER_DATABASE,
    )
    (site / "sql.html").write_text(page, encoding="utf-8")


# Higher is better for ranking metrics (ndcg, precision, recall, hit rate, map, auc, ...).
_LOWER_IS_BETTER = ("rmse", "mae", "mse", "loss", "error")
_NOT_A_SCORE = (*SECONDS_COLUMNS, *COUNT_COLUMNS)  # shown, but no "best" to mark


def _best_per_column(
    metrics: Sequence[Mapping[str, Any]], columns: Iterable[str]
) -> dict[str, Any]:
    best: dict[str, Any] = {}
    for column in columns:
        if column in _NOT_A_SCORE:
            continue
        values = [float(r[column]) for r in metrics if _finite(r.get(column))]
        if values:
            lower = any(column.lower().startswith(p) for p in _LOWER_IS_BETTER)
            best[column] = min(values) if lower else max(values)
    return best


def _write_search_shards(folder: Path, data: SiteData) -> None:
    """``users-<n>.js``: the ids with ``id % n_shards == n``, as a JSONP call.

    A script, not JSON, because Chromium refuses fetch() of local files under file://,
    while a <script> tag loads from a folder and from a bucket alike.
    """
    shards: list[list[list[int]]] = [[] for _ in range(data.n_shards)]
    for user in data.users:
        shards[user.user_id % data.n_shards].append([user.user_id, user.n_ratings])
    for number, users in enumerate(shards):
        payload = json.dumps(users, separators=(",", ":"))
        (folder / f"users-{number}.js").write_text(
            f"movielensUserShard({number},{payload});\n", encoding="utf-8"
        )


def _write_entity_pages(
    site: Path, data: SiteData, templates: Path, workers: int, chart: RatingChart
) -> None:
    jobs: list[tuple[str, list[int]]] = []
    user_ids = [u.user_id for u in data.users]
    movie_ids = list(data.movies)
    n_chunks = max(1, workers * 4)
    for kind, ids in (("user", user_ids), ("movie", movie_ids)):
        size = max(1, math.ceil(len(ids) / n_chunks))
        jobs += [(kind, ids[i : i + size]) for i in range(0, len(ids), size)]
    if workers == 1:
        writer = _PageWriter.start(templates, data, site, chart)
        for kind, ids in jobs:
            writer.render(kind, ids)
        return
    # spawn, not fork: the parent may have library threads running (DuckDB's, or
    # TensorFlow's when the whole job runs in one process), and forking a threaded process
    # can deadlock the child.
    with tempfile.TemporaryDirectory(prefix="movielens-render-") as scratch:
        state = Path(scratch) / "state.pickle"
        with state.open("wb") as f:
            pickle.dump((templates, data, site, chart), f, protocol=pickle.HIGHEST_PROTOCOL)
        with ProcessPoolExecutor(
            max_workers=workers, mp_context=get_context("spawn"), initializer=ignore_interrupts
        ) as pool:
            for done in [pool.submit(_render_in_pool, state, kind, ids) for kind, ids in jobs]:
                done.result()
