"""The static results site: Jinja2 pages, the error-over-epochs chart, the user search index.

``render_site(out)`` reads a merged run (``OUT/recommendations.duckdb``, ``OUT/run.json`` and
the model's movie embeddings) and writes ``OUT/site/``::

    index.html              dataset, model, metrics against the baselines, the chart, search
    popular.html            the cold-start list: what a new user is shown
    users/<id>.html         a user's top-rated movies and top recommendations
    movies/<id>.html        a movie and its nearest neighbours in embedding space
    search/users-<n>.js     the user-id index, one shard per ``id % n_shards``
    static/                 site.css, search.js (copied from site_templates/static)

Every link is relative, so the folder works from ``file://`` and from a bucket with no server.
Links to the data files (``../recommendations.duckdb``, ``../parquet/...``, ``../run.json``)
point beside ``site/``, which is where they sit in OUT and in the published layout.

The work is split so that each part can be tested alone: ``load_site_data`` (DuckDB, run.json,
the model: all the I/O), ``nearest_neighbours`` and ``error_chart_svg`` (pure), and
``write_site`` (SiteData -> files).
"""

from __future__ import annotations

import io
import json
import logging
import math
import numbers
import os
import re
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from decimal import Decimal
from functools import cached_property
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
from markupsafe import Markup

from job.errors import JobError
from job.evaluate import BASELINE_NAMES
from job.files import atomic_path

log = logging.getLogger(__name__)

TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "site_templates"
DB_FILE = "recommendations.duckdb"
SITE_DIR = "site"
REQUIRED_TABLES = ("movies", "users", "ratings", "top_k", "popular", "history", "metrics", "runs")
# Columns of ``metrics`` that describe the row rather than score it.
METRIC_INFO_COLUMNS = ("model", "n", "evaluated_on")
# About 1,000 users per search shard keeps a shard near 10 kB: one small fetch per search,
# whatever the size of the catalogue.
USERS_PER_SHARD = 1000
# Below this many pages a process pool costs more to start than it saves. Measured on 2
# cores with ml-latest-small (10,354 pages): one process writes them in about 3 s; two
# spawned workers took longer (each re-imports numpy and Jinja2 and unpickles the data).
PARALLEL_MIN_PAGES = 50_000


# ---------------------------------------------------------------------------------------
# What the pages are made of: plain frozen records (picklable, attribute access in Jinja)


@dataclass(frozen=True, slots=True)
class Movie:
    movie_id: int
    title: str
    year: int | None
    genres: tuple[str, ...]
    n_ratings: int
    mean_rating: float | None


@dataclass(frozen=True, slots=True)
class User:
    user_id: int
    n_ratings: int
    mean_rating: float


@dataclass(frozen=True, slots=True)
class Rated:
    movie_id: int
    rating: float


@dataclass(frozen=True, slots=True)
class Recommended:
    movie_id: int
    predicted_rating: float
    cold_start: bool


@dataclass(frozen=True, slots=True)
class Popular:
    rank: int
    movie_id: int
    score: float
    n_ratings: int


@dataclass(frozen=True, slots=True)
class Similar:
    movie_id: int
    similarity: float


@dataclass(frozen=True)
class SiteData:
    """Everything the pages show, already read from the run's files."""

    run: Mapping[str, Any]  # run_id, created_at, dataset
    dataset: Mapping[str, Any]  # n_users, n_movies, n_rated_movies, n_ratings
    model: Mapping[str, Any]  # preset, layers, parameters, epochs_run, training_seconds
    metrics: Sequence[Mapping[str, Any]]  # rows of the metrics table, model first
    metric_columns: Sequence[str]  # score columns in display order: rmse, mae, then ranking
    history: Sequence[Mapping[str, Any]]  # epoch, loss, mae, val_loss, val_mae
    movies: Mapping[int, Movie]
    users: Sequence[User]
    top_rated: Mapping[int, Sequence[Rated]]
    recommendations: Mapping[int, Sequence[Recommended]]
    popular: Sequence[Popular]
    similar: Mapping[int, Sequence[Similar]]  # absent: too few ratings to place the movie
    similar_min_ratings: int = 0
    data_files: Sequence[str] = ()  # paths relative to OUT, linked from the index
    users_per_shard: int = USERS_PER_SHARD

    @property
    def n_shards(self) -> int:
        return max(1, math.ceil(len(self.users) / self.users_per_shard))

    @cached_property
    def users_by_id(self) -> dict[int, User]:
        return {u.user_id: u for u in self.users}


@dataclass(frozen=True)
class SiteSummary:
    site: Path
    users: int
    movies: int
    pages: int
    workers: int
    seconds: float
    timings: dict[str, float] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------
# Entry point


def render_site(
    out: Path,
    *,
    templates: Path = TEMPLATES_DIR,
    workers: int | None = None,
    n_top_rated: int = 10,
    n_similar: int = 10,
    similar_min_ratings: int = 5,
    n_popular: int = 100,
) -> SiteSummary:
    """Render ``OUT/site`` from a merged run and record the stage's time in run.json.

    Args:
        out: the run's folder (``recommendations.duckdb``, ``run.json``, ``model.keras``).
        templates: the Jinja2 templates and their ``static/`` folder.
        workers: processes rendering pages; ``None``: one per core from
            ``PARALLEL_MIN_PAGES`` pages on, else one.
        n_top_rated: a user's top-rated movies shown on their page.
        n_similar: neighbours shown on a movie's page.
        similar_min_ratings: a movie with fewer ratings has an embedding that barely moved
            from its random start, so it neither gets nor appears as a neighbour.
        n_popular: the head of the cold-start ranking shown on popular.html (the table in
            the DuckDB file ranks the whole catalogue).

    Raises:
        JobError: the run is not merged yet, or the templates are missing.
    """
    started = time.perf_counter()  # loading Keras and the model is part of the cost
    data, timings = load_site_data(
        out,
        n_top_rated=n_top_rated,
        n_similar=n_similar,
        similar_min_ratings=similar_min_ratings,
        n_popular=n_popular,
    )
    summary = write_site(out / SITE_DIR, data, templates=templates, workers=workers)
    seconds = time.perf_counter() - started
    timings = {**timings, **summary.timings}
    log.info(
        "site: %s pages (%s users, %s movies) in %.1f s with %d worker(s) [%s] -> %s",
        f"{summary.pages:,}",
        f"{summary.users:,}",
        f"{summary.movies:,}",
        seconds,
        summary.workers,
        ", ".join(f"{k} {v:.1f} s" for k, v in timings.items()),
        summary.site,
    )
    from job.pipeline import record_stage  # imported by load_site_data already

    record_stage(out, "render", seconds)
    return SiteSummary(
        summary.site,
        summary.users,
        summary.movies,
        summary.pages,
        summary.workers,
        seconds,
        timings,
    )


# ---------------------------------------------------------------------------------------
# Reading a run


def load_site_data(
    out: Path,
    *,
    n_top_rated: int = 10,
    n_similar: int = 10,
    similar_min_ratings: int = 5,
    n_popular: int = 100,
) -> tuple[SiteData, dict[str, float]]:
    """Read what the pages show from a merged run; returns the data and the time of each step."""
    import duckdb

    db = out / DB_FILE
    if not db.exists():
        raise JobError(f"{db} not found; run `python -m job merge --out {out}` first")
    manifest_path = out / "run.json"
    if not manifest_path.exists():
        raise JobError(f"{manifest_path} not found; run `python -m job train --out {out}` first")
    manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    timings: dict[str, float] = {}

    started = time.perf_counter()
    try:
        con = duckdb.connect(str(db), read_only=True)
    except duckdb.Error as exc:
        first = str(exc).splitlines()[0]
        raise JobError(f"{db}: cannot open ({first}); re-run `python -m job merge`") from exc
    with con:
        tables = {
            row[0] for row in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
        }
        missing = [t for t in REQUIRED_TABLES if t not in tables]
        if missing:
            raise JobError(
                f"{db} has no table {', '.join(missing)}; re-run `python -m job merge --out {out}`"
            )
        movies = {
            int(m): Movie(int(m), str(t), _opt_int(y), tuple(g or ()), int(n or 0), _opt_float(r))
            for m, t, y, g, n, r in con.execute(
                "SELECT movie_id, title, year, genres, n_ratings, mean_rating FROM movies"
                " ORDER BY movie_id"
            ).fetchall()
        }
        users = [
            User(int(u), int(n), float(r))
            for u, n, r in con.execute(
                "SELECT user_id, n_ratings, mean_rating FROM users ORDER BY user_id"
            ).fetchall()
        ]
        top_rated: dict[int, list[Rated]] = {}
        # The article's "top ratings the user had made": best first, most recent first on ties.
        for u, m, r in con.execute(
            """SELECT user_id, movie_id, rating FROM ratings
               QUALIFY row_number() OVER (
                   PARTITION BY user_id ORDER BY rating DESC, timestamp DESC, movie_id) <= ?
               ORDER BY user_id, rating DESC, timestamp DESC, movie_id""",
            [n_top_rated],
        ).fetchall():
            top_rated.setdefault(int(u), []).append(Rated(int(m), float(r)))
        recommendations: dict[int, list[Recommended]] = {}
        for u, m, p, c in con.execute(
            "SELECT user_id, movie_id, predicted_rating, cold_start FROM top_k"
            " ORDER BY user_id, rank"
        ).fetchall():
            recommendations.setdefault(int(u), []).append(Recommended(int(m), float(p), bool(c)))
        popular = [
            Popular(int(k), int(m), float(s), int(n))
            for k, m, s, n in con.execute(
                "SELECT rank, movie_id, score, n_ratings FROM popular ORDER BY rank LIMIT ?",
                [n_popular],
            ).fetchall()
        ]
        history = _records(con, "SELECT * FROM history ORDER BY epoch")
        metrics = _records(con, "SELECT * FROM metrics")
        runs = _records(
            con, "SELECT run_id, created_at, dataset FROM runs ORDER BY created_at DESC"
        )
    timings["read"] = time.perf_counter() - started

    started = time.perf_counter()
    movie_ids, vectors = movie_embeddings(out)
    timings["model"] = time.perf_counter() - started
    started = time.perf_counter()
    similar = similar_movies(movie_ids, vectors, movies, n_similar, similar_min_ratings)
    timings["neighbours"] = time.perf_counter() - started

    metrics, columns = _order_metrics(metrics, str(manifest.get("model", {}).get("preset", "")))
    run = runs[0] if runs else {}
    dataset = manifest.get("dataset", {})
    model = manifest.get("model", {})
    data = SiteData(
        run={
            "run_id": str(run.get("run_id") or manifest.get("run_id", "")),
            "created_at": str(run.get("created_at") or manifest.get("created_at", "")),
            "dataset": str(run.get("dataset") or dataset.get("name", "")),
        },
        dataset={
            "n_users": dataset.get("n_users", len(users)),
            "n_movies": dataset.get("n_movies", len(movies)),
            "n_rated_movies": dataset.get("n_rated_movies"),
            "n_ratings": dataset.get("n_ratings"),
            "split": dataset.get("split", {}),
        },
        model={
            "preset": model.get("preset", ""),
            "layers": list(model.get("layers", [])),
            "parameters": model.get("parameters"),
            "epochs_run": model.get("epochs_run", len(history)),
            "training_seconds": manifest.get("training_seconds"),
        },
        metrics=metrics,
        metric_columns=columns,
        history=history,
        movies=movies,
        users=users,
        top_rated=top_rated,
        recommendations=recommendations,
        popular=popular,
        similar=similar,
        similar_min_ratings=similar_min_ratings,
        data_files=data_files(out),
    )
    return data, timings


def _records(con: Any, sql: str) -> list[dict[str, Any]]:
    """Rows as dicts; DECIMAL values (a hand-made table's literals) become floats."""
    cursor = con.execute(sql)
    names = [d[0] for d in cursor.description]
    return [
        {k: float(v) if isinstance(v, Decimal) else v for k, v in zip(names, row, strict=True)}
        for row in cursor.fetchall()
    ]


def _opt_int(value: Any) -> int | None:
    return None if value is None else int(value)


def _opt_float(value: Any) -> float | None:
    return (
        None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)
    )


def _order_metrics(
    rows: list[dict[str, Any]], preset: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Model rows first, then the baselines; score columns RMSE, MAE, then any ranking ones."""
    names = list(rows[0]) if rows else ["model", "rmse", "mae"]
    # A column no row fills (the classifier's accuracy, for a regression model) says nothing.
    names = [c for c in names if c in ("rmse", "mae") or any(r.get(c) is not None for r in rows)]
    scores: list[str] = [c for c in ("rmse", "mae") if c in names]
    scores += [c for c in names if c not in scores and c not in METRIC_INFO_COLUMNS]

    def key(row: dict[str, Any]) -> tuple[int, int]:
        name = str(row.get("model"))
        if name in BASELINE_NAMES:
            return (1, BASELINE_NAMES.index(name))
        return (0, 0 if name == preset else 1)

    return sorted(rows, key=key), scores


def data_files(out: Path) -> list[str]:
    """The run's data files that sit beside site/, relative to OUT, for the index's links."""
    found = [name for name in (DB_FILE, "run.json") if (out / name).is_file()]
    parquet = out / "parquet"
    if parquet.is_dir():
        found += sorted(p.relative_to(out).as_posix() for p in parquet.rglob("*.parquet"))
    return found


def movie_embeddings(out: Path) -> tuple[np.ndarray, np.ndarray]:
    """Raw movie ids and the rows of the model's ``movie_embedding`` table, in the same order."""
    from job.pipeline import load_run

    run = load_run(out)
    model = run.load_model()
    layer = next(
        (lay for lay in model._flatten_layers(include_self=False) if lay.name == "movie_embedding"),
        None,
    )
    if layer is None:
        raise JobError(
            f"{out}/model.keras has no layer named movie_embedding to find similar movies"
        )
    vectors = np.asarray(layer.get_weights()[0], dtype="float32")
    if len(vectors) != run.encoding.n_movies:
        raise JobError(
            f"{out}/model.keras: movie_embedding has {len(vectors)} rows but encoding.json has "
            f"{run.encoding.n_movies} movies; re-run `python -m job train --out {out}`"
        )
    return run.encoding.movie_ids, vectors


def nearest_neighbours(
    vectors: np.ndarray,
    k: int,
    candidates: np.ndarray | None = None,
    block: int = 1024,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` cosine neighbours of every row among the ``candidates`` rows, never itself.

    Computed a block of rows at a time, so memory is ``block x n`` whatever ``n`` is.

    Args:
        vectors: (n, d) embeddings.
        k: neighbours per row.
        candidates: boolean mask (n,) of the rows that may be neighbours; default all.
        block: rows scored at once.

    Returns:
        (index, similarity), both (n, k), best first. Where fewer than ``k`` candidates
        exist, the remaining slots hold index -1 and similarity -inf.
    """
    n = len(vectors)
    allowed = np.ones(n, bool) if candidates is None else np.asarray(candidates, bool)
    pool = np.flatnonzero(allowed)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = (vectors / np.maximum(norms, 1e-12)).astype("float32")
    index = np.full((n, k), -1, dtype="int64")
    similarity = np.full((n, k), -np.inf, dtype="float32")
    take = min(k, len(pool))
    if take == 0:
        return index, similarity
    pool_unit = unit[pool]
    for start in range(0, n, block):
        rows = np.arange(start, min(start + block, n))
        scores = unit[rows] @ pool_unit.T  # (b, len(pool))
        # A row is never its own neighbour: where it is in the pool, its score is -inf.
        in_pool = np.searchsorted(pool, rows)
        own = (in_pool < len(pool)) & (pool[np.minimum(in_pool, len(pool) - 1)] == rows)
        scores[np.flatnonzero(own), in_pool[own]] = -np.inf
        if take < len(pool):
            top = np.argpartition(-scores, take - 1, axis=1)[:, :take]
        else:
            top = np.broadcast_to(np.arange(len(pool)), (len(rows), len(pool)))
        top_scores = np.take_along_axis(scores, top, axis=1)
        order = np.argsort(-top_scores, axis=1, kind="stable")
        best = np.take_along_axis(top, order, axis=1)
        best_scores = np.take_along_axis(top_scores, order, axis=1)
        found = np.isfinite(best_scores)
        index[rows, :take] = np.where(found, pool[best], -1)
        similarity[rows, :take] = best_scores
    return index, similarity


def similar_movies(
    movie_ids: np.ndarray,
    vectors: np.ndarray,
    movies: Mapping[int, Movie],
    k: int,
    min_ratings: int,
) -> dict[int, list[Similar]]:
    """Each well-rated movie's ``k`` nearest movies (cosine over the embeddings)."""
    counts = np.array([movies[int(m)].n_ratings if int(m) in movies else 0 for m in movie_ids])
    # Only placed movies get neighbours and only they can be one: score that subset alone.
    placed = np.flatnonzero(counts >= max(min_ratings, 1))
    index, similarity = nearest_neighbours(vectors[placed], k)
    similar: dict[int, list[Similar]] = {}
    for row, movie in enumerate(movie_ids[placed]):
        similar[int(movie)] = [
            Similar(int(movie_ids[placed[i]]), float(s))
            for i, s in zip(index[row], similarity[row], strict=True)
            if i >= 0
        ]
    return similar


# ---------------------------------------------------------------------------------------
# The chart


def error_chart_svg(
    history: Sequence[Mapping[str, Any]],
    baseline_name: str | None = None,
    baseline_mae: float | None = None,
) -> str:
    """The article's plot: training and validation MAE per epoch, the best baseline dotted.

    Pure: numbers in, a standalone SVG document out (with a ``<title>`` and ``role="img"``
    for screen readers). Text stays text (``svg.fonttype = none``) so it is crisp, selectable
    and scales with the page.
    """
    import matplotlib
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    series = [
        (key, label, color, marker)
        for key, label, color, marker in (
            ("mae", "Training MAE", "#1f5fa8", "o"),
            ("val_mae", "Validation MAE", "#c2410c", "s"),
        )
        if history and all(_finite(row.get(key)) for row in history)
    ]
    settings: dict[Any, Any] = {
        "svg.fonttype": "none",
        "svg.hashsalt": "movielens-site",  # stable ids: same input, same bytes
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "Helvetica"],
        # Sized for a phone: the figure is 5.2 in wide (500 CSS px), so at a phone's 360 px
        # a 13 pt label still renders near 12 px; on a desktop it is shown at about natural size.
        "font.size": 13,
        "axes.titlesize": 15,
        "axes.labelsize": 14,
        "legend.fontsize": 13,
    }
    with matplotlib.rc_context(settings):
        # Figure() directly, never pyplot: no global state and no GUI backend, just Agg/SVG.
        figure = Figure(figsize=(5.2, 4.4), layout="constrained")
        axes = figure.subplots()
        for key, label, color, marker in series:
            values = [float(row[key]) for row in history]
            axes.plot(epochs, values, label=label, color=color, marker=marker, linewidth=2)
        if baseline_mae is not None and _finite(baseline_mae):
            axes.axhline(
                float(baseline_mae),
                color="#404040",
                linestyle=":",
                linewidth=2,
                label=f"Best baseline: {baseline_name} ({baseline_mae:.3f})",
            )
        if not series:
            axes.text(
                0.5, 0.5, "No training history", ha="center", va="center", transform=axes.transAxes
            )
        axes.set_title("Error over epochs")
        axes.set_xlabel("Epoch")
        axes.set_ylabel("Mean absolute error (stars)")
        axes.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:
            axes.set_xlim(epochs[0] - 1, epochs[0] + 1)
        axes.grid(True, color="#dddddd", linewidth=0.8)
        axes.spines[["top", "right"]].set_visible(False)
        if series or baseline_mae is not None:
            # Below the axes, so it never hides a curve whatever the numbers.
            figure.legend(loc="outside lower center", ncols=1, frameon=False)
        buffer = io.StringIO()
        figure.savefig(buffer, format="svg", metadata={"Date": None, "Creator": None})
    title = chart_description(history, baseline_name, baseline_mae)
    return _label_svg(buffer.getvalue(), title)


def chart_description(
    history: Sequence[Mapping[str, Any]], baseline_name: str | None, baseline_mae: float | None
) -> str:
    """One sentence that says what the chart shows, for its ``<title>``."""
    parts = ["Error over epochs."]
    if history:
        first, last = history[0], history[-1]
        for key, label in (("mae", "Training"), ("val_mae", "Validation")):
            if _finite(first.get(key)) and _finite(last.get(key)):
                parts.append(
                    f"{label} MAE went from {float(first[key]):.3f} at epoch {first['epoch']} "
                    f"to {float(last[key]):.3f} at epoch {last['epoch']}."
                )
    if baseline_mae is not None and _finite(baseline_mae):
        parts.append(
            f"The best baseline ({baseline_name}) has MAE {baseline_mae:.3f} (dotted line)."
        )
    return " ".join(parts)


def _finite(value: Any) -> bool:
    """A real number, not NaN or infinite (numpy scalars and DECIMAL values included)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real | Decimal):
        return False
    return math.isfinite(float(value))


def _label_svg(svg: str, title: str) -> str:
    """Add ``role="img"``, an ``aria-labelledby`` and a ``<title>`` to matplotlib's SVG root."""
    from xml.sax.saxutils import escape

    match = re.search(r"<svg\b[^>]*>", svg)
    if match is None:
        raise ValueError("matplotlib produced no <svg> element")
    root = match.group(0)
    labelled = root[:-1] + ' role="img" aria-labelledby="chart-title">'
    return (
        svg[: match.start()]
        + labelled
        + f'\n <title id="chart-title">{escape(title)}</title>'
        + svg[match.end() :]
    )


def inline_svg(svg: str) -> Markup:
    """The SVG element alone (no XML prolog or doctype), marked safe for the template.

    Safe because matplotlib escapes every text it writes, and our own ``<title>`` is escaped.
    """
    start = svg.index("<svg")
    return Markup(svg[start:])


def best_baseline(metrics: Sequence[Mapping[str, Any]]) -> tuple[str, float] | None:
    """The baseline with the lowest MAE (the dotted line of the article's plot)."""
    rows = [r for r in metrics if r.get("model") in BASELINE_NAMES and _finite(r.get("mae"))]
    if not rows:
        return None
    best = min(rows, key=lambda r: float(r["mae"]))
    return str(best["model"]), float(best["mae"])


# ---------------------------------------------------------------------------------------
# Writing the site


def make_environment(templates: Path = TEMPLATES_DIR) -> jinja2.Environment:
    """The one Jinja2 environment: autoescaping on, a missing variable is an error."""
    if not (templates / "base.html").is_file():
        raise JobError(f"no site templates in {templates} (base.html missing)")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        thousands=lambda n: f"{int(n):,}",
        num=_number,
        stars=stars,
        genre_list=lambda genres: ", ".join(genres) if genres else "(no genres listed)",
        metric_label=metric_label,
        metric_value=lambda x, column: _number(x, 2 if column in _NOT_A_SCORE else 4),
    )
    env.globals["baseline_names"] = BASELINE_NAMES
    return env


METRIC_LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "ndcg": "nDCG",
    "map": "MAP",
    "mrr": "MRR",
    "auc": "AUC",
    "training_seconds": "Fit time (s)",
}


def _number(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals; a dash where there is none."""
    return "–" if value is None or not _finite(value) else f"{float(value):.{digits}f}"


def metric_label(column: str) -> str:
    """A metrics column as a table header: "rmse" -> "RMSE", "recall_at_10" -> "Recall@10"."""
    if column in METRIC_LABELS:
        return METRIC_LABELS[column]
    name, _, k = column.partition("_at_")
    name = METRIC_LABELS.get(name, name.replace("_", " ").capitalize())
    return f"{name}@{k}" if k else name


def stars(rating: float, high: float = 5.0) -> str:
    """A rating as five stars, to the nearest half: 3.7 -> "★★★½☆"."""
    halves = round(max(0.0, min(rating, high)) * 2)
    full, half = divmod(halves, 2)
    return "★" * full + ("½" if half else "") + "☆" * (int(high) - full - half)


# State of a rendering process: set once by ``_start_worker``.
_WORKER: dict[str, Any] = {}


def _start_worker(templates: Path, data: SiteData, site: Path) -> None:
    env = make_environment(templates)
    env.globals.update(_site_globals(data))
    _WORKER.update(
        env=env,
        data=data,
        site=site,
        user=env.get_template("user.html"),
        movie=env.get_template("movie.html"),
    )


def _render_chunk(kind: str, ids: Sequence[int]) -> int:
    """Render the pages of ``ids`` (users or movies) with the worker's compiled template."""
    data: SiteData = _WORKER["data"]
    site: Path = _WORKER["site"]
    template: jinja2.Template = _WORKER[kind]
    folder = site / f"{kind}s"
    for page_id in ids:
        context = user_context(data, page_id) if kind == "user" else movie_context(data, page_id)
        (folder / f"{page_id}.html").write_text(template.render(context), encoding="utf-8")
    return len(ids)


def _site_globals(data: SiteData) -> dict[str, Any]:
    ids = [u.user_id for u in data.users]
    return {
        "run": data.run,
        "movies": data.movies,
        "n_shards": data.n_shards,
        "user_id_range": (min(ids), max(ids)) if ids else (0, 0),
    }


def user_context(data: SiteData, user_id: int) -> dict[str, Any]:
    return {
        "root": "../",
        "user": data.users_by_id[user_id],
        "top_rated": data.top_rated.get(user_id, ()),
        "recommendations": data.recommendations.get(user_id, ()),
    }


def movie_context(data: SiteData, movie_id: int) -> dict[str, Any]:
    return {
        "root": "../",
        "movie": data.movies[movie_id],
        "similar": data.similar.get(movie_id),
        "similar_min_ratings": data.similar_min_ratings,
    }


def write_site(
    site: Path,
    data: SiteData,
    *,
    templates: Path = TEMPLATES_DIR,
    workers: int | None = None,
) -> SiteSummary:
    """Write every page, the search shards and the static files; the folder appears whole.

    Raises:
        JobError: the templates are missing or a page refers to something undefined.
    """
    started = time.perf_counter()
    n_pages = len(data.users) + len(data.movies) + 2
    if workers is None:
        workers = (os.cpu_count() or 1) if n_pages >= PARALLEL_MIN_PAGES else 1
    workers = max(1, workers)
    timings: dict[str, float] = {}
    try:
        with atomic_path(site) as tmp:
            tmp.mkdir()
            for folder in ("users", "movies", "search"):
                (tmp / folder).mkdir()
            static = templates / "static"
            if static.is_dir():
                shutil.copytree(static, tmp / "static")
            _write_top_pages(tmp, data, templates)
            timings["index"] = time.perf_counter() - started
            _write_search_shards(tmp / "search", data)
            pages_started = time.perf_counter()
            _write_entity_pages(tmp, data, templates, workers)
            timings["pages"] = time.perf_counter() - pages_started
            replace_started = time.perf_counter()
    except jinja2.TemplateNotFound as exc:
        raise JobError(f"site template {exc.name} not found in {templates}") from exc
    except jinja2.UndefinedError as exc:
        raise JobError(f"site templates in {templates}: {exc.message}") from exc
    timings["replace"] = time.perf_counter() - replace_started
    return SiteSummary(
        site=site,
        users=len(data.users),
        movies=len(data.movies),
        pages=n_pages,
        workers=workers,
        seconds=time.perf_counter() - started,
        timings=timings,
    )


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
    popular = env.get_template("popular.html").render(root="", popular=data.popular)
    (site / "popular.html").write_text(popular, encoding="utf-8")


# Higher is better for ranking metrics (ndcg, precision, recall, hit rate, map, auc, ...).
_LOWER_IS_BETTER = ("rmse", "mae", "mse", "loss", "error")
_NOT_A_SCORE = ("training_seconds",)  # shown, but no "best" to mark


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


def _write_entity_pages(site: Path, data: SiteData, templates: Path, workers: int) -> None:
    jobs: list[tuple[str, list[int]]] = []
    user_ids = [u.user_id for u in data.users]
    movie_ids = list(data.movies)
    n_chunks = max(1, workers * 4)
    for kind, ids in (("user", user_ids), ("movie", movie_ids)):
        size = max(1, math.ceil(len(ids) / n_chunks))
        jobs += [(kind, ids[i : i + size]) for i in range(0, len(ids), size)]
    if workers == 1:
        _start_worker(templates, data, site)
        for kind, ids in jobs:
            _render_chunk(kind, ids)
        return
    # spawn, not fork: the parent has TensorFlow's threads running (it loaded the model),
    # and forking a threaded process can deadlock the child.
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_start_worker,
        initargs=(templates, data, site),
    ) as pool:
        for done in [pool.submit(_render_chunk, kind, ids) for kind, ids in jobs]:
            done.result()
