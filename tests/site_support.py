"""Shared by the site tests (test_site_*.py, test_browser.py): a *fixed* run and a reader
of the pages it renders.

The fixed run is the tiny trained model of ``tiny_run`` (for the movie embeddings) with a
recommendations.duckdb written here from hand-made values, so a page's bytes do not
depend on training. Each test module builds it once with ``build_fixed_run``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import numpy as np
import pandas as pd

from job.core.config import N_SIMILAR
from job.data.interactions import liked_matrix
from job.models.itemitem import also_liked, covered_items, gram
from job.pipeline import render

XSS_TITLE = '<script>alert(1)</script> & "Friends" (2001)'
MOVIE_IDS = [10 * i for i in range(1, 81)]  # the ids of tiny_run's catalogue
USER_IDS = [1, 2, 3, 4, 5, 6, 7, 8]
COLD_USER = 8  # every recommendation is a cold-start one
# Movie 30's tags: "dark" from three users (in two spellings, one user twice), "funny" from
# two, nine one-user tags after them (only eight tags are shown), and a blank one.
FIXED_TAGS = [
    (1, 30, "dark"),
    (2, 30, "Dark "),
    (3, 30, "dark"),
    (3, 30, "DARK"),
    (1, 30, "funny"),
    (4, 30, "funny"),
    (5, 30, "  "),
    *[(6, 30, f"tag {c}") for c in "abcdefghi"],
    (1, 40, "<b>bold</b>"),
]


def fixed_title(movie_id: int) -> str:
    if movie_id == 10:
        return XSS_TITLE
    if movie_id == 20:
        return "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    return f"Movie {movie_id}, The ({1950 + movie_id // 10})"


def shown_title(movie_id: int) -> str:
    """The title as the pages show it: "The Movie 30 (1953)" for "Movie 30, The (1953)"."""
    from job.data.movielens import natural_title

    return natural_title(fixed_title(movie_id))


def _genres(movie_id: int) -> list[str]:
    names = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]
    if movie_id == 800:
        return []
    return sorted({names[movie_id // 10 % 6], names[movie_id // 30 % 6]})


def fixed_ratings() -> list[tuple[int, int, float, int, str]]:
    """User u rates 12 of the first 14 movies (user 1: movie 10 among them), so most of those
    have enough ratings for neighbours; the other 66 have none. Every 5th rating is a test one."""
    rows = []
    for u in USER_IDS:
        for j in range(12):
            movie = MOVIE_IDS[(u * 7 + j * 3) % 14]
            rating = 0.5 + ((u + 3 * j) % 10) * 0.5
            rows.append(
                (u, movie, rating, 1_000_000 + 100 * u + j, "test" if j % 5 == 4 else "train")
            )
    return rows


def write_fixed_database(out: Path) -> None:
    """recommendations.duckdb with the documented schema, every value chosen by hand."""
    ratings = fixed_ratings()
    rated: dict[int, set[int]] = {}
    per_movie: dict[int, list[float]] = {}
    for u, m, r, _, _ in ratings:
        rated.setdefault(u, set()).add(m)
        per_movie.setdefault(m, []).append(r)
    db = out / "recommendations.duckdb"
    db.unlink(missing_ok=True)
    with duckdb.connect(str(db)) as con:
        con.execute(
            "CREATE TABLE movies(movie_id BIGINT, title VARCHAR, year INTEGER, genres VARCHAR[],"
            " n_ratings INTEGER, mean_rating DOUBLE)"
        )
        for m in MOVIE_IDS:
            year = re.search(r"\((\d{4})\)$", fixed_title(m))
            scores = per_movie.get(m, [])
            con.execute(
                "INSERT INTO movies VALUES (?, ?, ?, ?, ?, ?)",
                [
                    m,
                    fixed_title(m),
                    int(year.group(1)) if year else None,
                    _genres(m),
                    len(scores),
                    sum(scores) / len(scores) if scores else None,
                ],
            )
        con.execute("CREATE TABLE users(user_id BIGINT, n_ratings INTEGER, mean_rating DOUBLE)")
        for u in USER_IDS:
            mine = [r for uu, _, r, _, _ in ratings if uu == u]
            con.execute("INSERT INTO users VALUES (?, ?, ?)", [u, len(mine), sum(mine) / len(mine)])
        con.execute(
            "CREATE TABLE ratings(user_id BIGINT, movie_id BIGINT, rating REAL, timestamp BIGINT,"
            " split VARCHAR)"
        )
        con.executemany("INSERT INTO ratings VALUES (?, ?, ?, ?, ?)", ratings)
        con.execute(
            "CREATE TABLE predictions(user_id BIGINT, movie_id BIGINT, predicted_rating REAL,"
            " score REAL, cold_start BOOLEAN)"
        )
        con.execute(
            "CREATE TABLE top_k(user_id BIGINT, rank INTEGER, movie_id BIGINT,"
            " predicted_rating REAL, score REAL, because_movie_id BIGINT, cold_start BOOLEAN)"
        )
        for u in USER_IDS:
            unrated = [m for m in MOVIE_IDS if m not in rated[u]]
            # The reason: the user's first rated movie, for odd ranks; none for the cold user.
            because = None if u == COLD_USER or not rated[u] else min(rated[u])
            for rank in range(1, 6):
                movie = unrated[(u * 3 + rank * 11) % len(unrated)]
                con.execute(
                    "INSERT INTO top_k VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        u,
                        rank,
                        movie,
                        4.9 - 0.25 * rank - 0.01 * u,
                        1.0 - 0.1 * rank,
                        because if rank % 2 else None,
                        u == COLD_USER,
                    ],
                )
        con.execute(
            "CREATE TABLE popular(rank INTEGER, movie_id BIGINT, score DOUBLE, n_ratings INTEGER)"
        )
        con.execute("INSERT INTO popular VALUES (1, 10, 4.2, 8), (2, 20, 4.1, 4), (3, 30, 3.9, 8)")
        con.execute(
            "CREATE TABLE history(epoch INTEGER, loss DOUBLE, mae DOUBLE, val_loss DOUBLE,"
            " val_mae DOUBLE)"
        )
        con.execute(
            "INSERT INTO history VALUES (1, 1.2, 0.90, 1.0, 0.85), (2, 0.8, 0.72, 0.9, 0.80),"
            " (3, 0.7, 0.66, 0.88, 0.79)"
        )
        con.execute(
            "CREATE TABLE metrics(model VARCHAR, rmse DOUBLE, mae DOUBLE, n BIGINT,"
            " evaluated_on VARCHAR, ndcg_at_10 DOUBLE)"
        )
        con.execute(
            "INSERT INTO metrics VALUES ('seed', 0.87, 0.67, 16, 'test', 0.31),"
            " ('global mean', 1.03, 0.82, 16, 'test', NULL),"
            " ('movie mean', 0.97, 0.75, 16, 'test', NULL),"
            " ('user+movie bias', 0.88, 0.68, 16, 'test', NULL)"
        )
        con.execute(
            "CREATE TABLE runs(run_id VARCHAR, created_at TIMESTAMP, dataset VARCHAR,"
            " dataset_sha256 VARCHAR, preset VARCHAR, epochs_run INTEGER, parameters BIGINT,"
            " training_seconds DOUBLE, manifest JSON)"
        )
        con.execute(
            "INSERT INTO runs VALUES ('20260101T000000Z-golden', '2026-01-01 00:00:00', 'tiny',"
            " 'abc', 'seed', 3, 1234, 1.5, '{}')"
        )
        # The train stage's "also liked" neighbours, from the fixed ratings.
        con.register("also_liked_frame", fixed_also_liked())
        con.execute("CREATE TABLE also_liked AS SELECT * FROM also_liked_frame")
        # links.csv's ids: both, IMDb only, neither (a row of NULLs), and no row at all
        con.execute("CREATE TABLE links(movie_id BIGINT, imdb_id BIGINT, tmdb_id BIGINT)")
        con.execute(
            "INSERT INTO links VALUES (10, 114709, 862), (20, 211915, NULL), (30, NULL, NULL)"
        )
        con.execute("CREATE TABLE tags(user_id BIGINT, movie_id BIGINT, tag VARCHAR)")
        con.executemany("INSERT INTO tags VALUES (?, ?, ?)", FIXED_TAGS)
        (out / "parquet").mkdir(exist_ok=True)
        for table in ("movies", "top_k"):
            con.execute(f"COPY {table} TO '{out / 'parquet' / table}.parquet' (FORMAT parquet)")


# The fixed ratings are few: movies liked by 2 people get neighbours there (5 in a run).
FIXED_MIN_LIKES = 2


def fixed_also_liked() -> pd.DataFrame:
    """The train stage's also_liked table, computed from the fixed ratings."""
    ratings = fixed_ratings()
    users = np.array([u for u, _, _, _, _ in ratings])
    movies = np.array([MOVIE_IDS.index(m) for _, m, _, _, _ in ratings])
    stars = np.array([r for _, _, r, _, _ in ratings])
    liked = liked_matrix(users, movies, stars, int(users.max()) + 1, len(MOVIE_IDS))
    items = covered_items(liked, min_likes=1)
    table = also_liked(gram(liked, items), items, N_SIMILAR, FIXED_MIN_LIKES)
    ids = np.array(MOVIE_IDS)
    return pd.DataFrame(
        {
            "movie_id": ids[table["movie"].to_numpy()],
            "rank": table["rank"],
            "other_movie_id": ids[table["other"].to_numpy()],
            "score": table["score"],
        }
    )


def build_fixed_run(tiny_run: Path, dest: Path) -> Path:
    """``tiny_run`` (its model and run.json) with the fixed database, rendered."""
    shutil.copytree(tiny_run, dest)
    write_fixed_database(dest)
    # The database and run.json hold one run (render refuses a database of another run).
    manifest = json.loads((dest / "run.json").read_text())
    (dest / "run.json").write_text(json.dumps({**manifest, "run_id": "20260101T000000Z-golden"}))
    render(dest, workers=1)  # through the stage runner, which records its time in run.json
    return dest


class Page(HTMLParser):
    """Links, ids, visible text and the rows of every table of one HTML file."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.text: list[str] = []
        self.tables: list[list[list[str]]] = []
        self.header_scopes: list[str | None] = []
        self._cell: list[str] | None = None
        self._h1: list[str] | None = None
        self.h1 = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        for name in ("href", "src"):
            if found.get(name):
                self.links.append(str(found[name]))
        if found.get("id"):
            self.ids.add(str(found["id"]))
        if tag == "table":
            self.tables.append([])
        elif tag == "tr" and self.tables:
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []
            if tag == "th":
                self.header_scopes.append(found.get("scope"))
        elif tag == "h1":
            self._h1 = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self.tables:
            self.tables[-1][-1].append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "h1" and self._h1 is not None:
            self.h1 = "".join(self._h1).strip()
            self._h1 = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._h1 is not None:
            self._h1.append(data)

    @property
    def plain(self) -> str:
        return " ".join(" ".join(self.text).split())


def read_page(path: Path) -> Page:
    return Page(path.read_text(encoding="utf-8"))


class Links(HTMLParser):
    """Only the href/src links and the ids of a page: the crawler reads thousands."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        self.links: list[str] = []
        self.ids: set[str] = set()
        self.feed(path.read_text(encoding="utf-8"))

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if value and name in ("href", "src"):
                self.links.append(value)
            elif value and name == "id":
                self.ids.add(value)


def _parse_links(paths: list[str]) -> list[tuple[str, list[str], set[str]]]:
    parsed = [Links(Path(path)) for path in paths]
    return [(path, page.links, page.ids) for path, page in zip(paths, parsed, strict=True)]


def parse_site(site_dir: Path) -> list[tuple[str, list[str], set[str]]]:
    """(page, links, ids) of every HTML file; thousands of pages are parsed in two processes
    (spawned: the test process may hold TensorFlow's threads, which fork does not survive)."""
    pages = sorted(os.path.realpath(p) for p in site_dir.rglob("*.html"))
    if len(pages) < 2000:
        return _parse_links(pages)
    chunks = [pages[i::2] for i in range(2)]
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn")) as pool:
        return [row for rows in pool.map(_parse_links, chunks) for row in rows]


def broken_links(site_dir: Path) -> Iterator[str]:
    """Every href/src of every page that does not resolve to a file (or to a missing #id).

    Links out of site/ (the DuckDB file, Parquet, run.json) must exist in OUT, where they
    sit beside site/ just as in the published bucket layout. External links are skipped.
    """
    out = os.path.realpath(site_dir.parent)
    files = {os.path.join(root, name) for root, _, names in os.walk(out) for name in names}
    pages = parse_site(site_dir)
    ids = {page: page_ids for page, _, page_ids in pages}
    for page, links, _ in pages:
        name = os.path.relpath(page, site_dir)
        for link in links:
            parts = urlsplit(link)
            if parts.scheme or link.startswith("//"):
                # "data:," is base.html's empty icon, which keeps browsers from asking
                # a bucket's root for /favicon.ico
                assert parts.scheme in ("http", "https") or link == "data:,", (
                    f"{name}: odd link {link}"
                )
                continue
            target = page
            if parts.path:
                target = os.path.normpath(os.path.join(os.path.dirname(page), unquote(parts.path)))
            if not target.startswith(out + os.sep):
                yield f"{name}: {link} leaves OUT"
            elif target not in files:
                yield f"{name}: {link} -> missing {target}"
            elif (
                parts.fragment
                and target.endswith(".html")
                and parts.fragment not in ids.get(target, set())
            ):
                yield f"{name}: {link} -> no #{parts.fragment}"
