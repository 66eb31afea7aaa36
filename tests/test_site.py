"""The static site: pages, escaping, the chart, the search index, links, a golden user page.

Most tests render a *fixed* run: the tiny trained model of ``tiny_run`` (for the movie
embeddings) with a recommendations.duckdb written here from hand-made values, so a page's
bytes do not depend on training. ``UPDATE_GOLDEN=1 pytest tests/test_site.py`` rewrites the
golden file after an intended change; review its diff like code.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlsplit

import duckdb
import numpy as np
import pandas as pd
import pytest

from job import site
from job.cli import main
from job.config import N_SIMILAR, SIMILAR_MIN_RATINGS
from job.errors import JobError
from job.interactions import liked_matrix
from job.itemitem import COSINE_SHRINK, also_liked, covered_items, gram
from job.pipeline import render
from job.rank import nearest_neighbours
from job.site import data as site_data
from job.site import search, taste
from job.site.chart import star_label
from job.site.render import stars

GOLDEN = Path(__file__).parent / "golden"
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


# ---------------------------------------------------------------------------------------
# A run with fixed values


def _title(movie_id: int) -> str:
    if movie_id == 10:
        return XSS_TITLE
    if movie_id == 20:
        return "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
    return f"Movie {movie_id}, The ({1950 + movie_id // 10})"


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
            year = re.search(r"\((\d{4})\)$", _title(m))
            scores = per_movie.get(m, [])
            con.execute(
                "INSERT INTO movies VALUES (?, ?, ?, ?, ?, ?)",
                [
                    m,
                    _title(m),
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


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


@pytest.fixture(scope="module")
def fixed_site(fixed_run: Path) -> Path:
    return fixed_run / "site"


# ---------------------------------------------------------------------------------------
# Reading HTML


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


# ---------------------------------------------------------------------------------------
# Pages


def test_every_page_is_written(fixed_site: Path) -> None:
    assert (fixed_site / "index.html").is_file()
    assert (fixed_site / "popular.html").is_file()
    assert (fixed_site / "error-over-epochs.svg").is_file()
    assert {p.stem for p in (fixed_site / "users").glob("*.html")} == {str(u) for u in USER_IDS}
    assert {p.stem for p in (fixed_site / "movies").glob("*.html")} == {str(m) for m in MOVIE_IDS}
    assert (fixed_site / "taste.html").is_file()
    for static in ("site.css", "search.js", "taste.js", "vendor/minisearch.min.js"):
        assert (fixed_site / "static" / static).is_file(), static
    assert (fixed_site / "static" / "vendor" / "minisearch-LICENSE.txt").is_file()
    assert (fixed_site / "search" / "titles.js").is_file()
    assert (fixed_site / "taste" / "nb-0.js").is_file()
    assert not list(fixed_site.parent.glob(".site.*")), "temporary folder left behind"


def test_no_broken_links(fixed_site: Path) -> None:
    assert list(broken_links(fixed_site)) == []


def test_the_crawler_sees_broken_links(tmp_path: Path) -> None:
    site_dir = tmp_path / "out" / "site"
    site_dir.mkdir(parents=True)
    (tmp_path / "out" / "run.json").write_text("{}")
    (site_dir / "index.html").write_text(
        '<p id="here"><a href="users/1.html">a</a> <a href="../recommendations.duckdb">b</a>'
        ' <a href="#nope">c</a> <a href="../../elsewhere.txt">d</a> <a href="#here">ok</a>'
        ' <a href="../run.json">ok</a> <a href="https://grouplens.org/">ok</a></p>'
    )
    found = list(broken_links(site_dir))
    assert len(found) == 4, found
    assert [f.split(": ")[1].split(" ")[0] for f in found] == [
        "users/1.html",
        "../recommendations.duckdb",
        "#nope",
        "../../elsewhere.txt",
    ]


def test_links_are_relative(fixed_site: Path) -> None:
    for page in fixed_site.rglob("*.html"):
        for link in read_page(page).links:
            assert not link.startswith(("/", "file:")), f"{page}: {link}"


def test_user_page_reads_like_the_article(fixed_site: Path) -> None:
    page = read_page(fixed_site / "users" / "1.html")
    mine = [r for r in fixed_ratings() if r[0] == 1]
    mean = sum(r[2] for r in mine) / len(mine)
    assert f"User #1 has rated 12 movies (avg. rating = {mean:.1f})" in page.plain
    top_rated, recommended = page.tables
    assert top_rated[0] == ["Rating", "Title", "Genres"]
    best = sorted(mine, key=lambda r: (-r[2], -r[3]))[:10]
    assert [row[1] for row in top_rated[1:]] == [_title(r[1]) for r in best]
    assert recommended[0] == ["#", "Predicted", "Title", "Genres", "Why"]
    assert len(recommended) - 1 == 5
    assert not {row[2] for row in recommended[1:]} & {_title(r[1]) for r in mine}
    # Each pick says why: the movie behind it and the stars the user gave it (odd ranks
    # carry a reason in the fixed database).
    because = min(r[1] for r in mine)
    stars_given = next(r[2] for r in mine if r[1] == because)
    why = [row[4] for row in recommended[1:]]
    assert why[0].startswith(f"because you rated {_title(because)}")
    assert stars(stars_given) in why[0]
    assert why[1] == "–"
    assert "cold-start" not in page.plain


def test_cold_start_user_is_told_why(fixed_site: Path) -> None:
    page = read_page(fixed_site / "users" / f"{COLD_USER}.html")
    assert "popular movies (the cold-start rule)" in page.plain
    assert "../popular.html" in page.links


def test_tables_have_header_scopes(fixed_site: Path) -> None:
    with_neighbours = f"movies/{fixed_also_liked().movie_id.iloc[0]}.html"
    for name in ("index.html", "popular.html", "users/1.html", with_neighbours):
        page = read_page(fixed_site / name)
        assert page.header_scopes, name
        assert all(scope in ("col", "row") for scope in page.header_scopes), name


def test_index_shows_dataset_model_metrics_and_chart(fixed_run: Path, fixed_site: Path) -> None:
    html = (fixed_site / "index.html").read_text()
    page = Page(html)
    manifest = json.loads((fixed_run / "run.json").read_text())
    metrics = page.tables[0]
    assert metrics[0] == ["Model", "RMSE", "MAE", "nDCG@10"]
    assert [row[0].split()[0] for row in metrics[1:]] == ["seed", "global", "movie", "user+movie"]
    assert metrics[1][1:] == ["0.8700", "0.6700", "0.3100"]
    assert metrics[2][3] == "–"  # a baseline without a ranking score
    assert f"{manifest['model']['parameters']:,}" in page.plain
    assert "movie_embedding: Embedding(80, 8)" in page.plain
    assert "<svg" in html and 'role="img"' in html and '<title id="chart-title">' in html
    assert "Best baseline: user+movie bias (0.680)" in html
    assert 'name="viewport"' in html
    for data_file in ("../recommendations.duckdb", "../run.json", "../parquet/movies.parquet"):
        assert data_file in page.links


@pytest.mark.parametrize("name", ["index.html", "popular.html", "taste.html", "users/1.html"])
def test_every_page_has_a_labelled_search_form(fixed_site: Path, name: str) -> None:
    html = (fixed_site / name).read_text()
    form = re.search(r"<form [^>]*class=\"site-search\"[^>]*>.*?</form>", html, re.S)
    assert form, "no search form"
    assert re.search(r'<label for="site-search">', form.group(0))
    assert re.search(r'<input id="site-search" name="q" type="search"', form.group(0))
    assert 'aria-describedby="site-search-status"' in form.group(0)
    assert 'type="submit"' in form.group(0)
    assert 'data-shards="1"' in form.group(0)
    assert 'data-root="' + ("../" if "/" in name else "") + '"' in form.group(0)


def test_movie_page_lists_who_liked_it_also_liked(fixed_site: Path) -> None:
    # Brute force over the fixed ratings: who liked (>= 4) each movie, shrunk cosine.
    fans: dict[int, set[int]] = {}
    for u, m, r, _, _ in fixed_ratings():
        if r >= 4:
            fans.setdefault(m, set()).add(u)
    placed = {m for m, who in fans.items() if len(who) >= FIXED_MIN_LIKES}
    assert placed, "the fixed ratings must have a movie liked by enough people"
    for movie in sorted(placed):
        score = {
            other: len(fans[movie] & fans[other])
            / (np.sqrt(len(fans[movie]) * len(fans[other])) + COSINE_SHRINK)
            for other in sorted(placed - {movie})
        }
        expected = sorted((o for o in score if score[o] > 0), key=lambda o: -score[o])
        page = read_page(fixed_site / "movies" / f"{movie}.html")
        assert page.h1 == _title(movie)
        listed = [r[1] for r in page.tables[0][1:]] if expected else []
        assert listed == [_title(m) for m in expected[:N_SIMILAR]]


def test_movie_with_few_ratings_says_so(fixed_site: Path) -> None:
    page = read_page(fixed_site / "movies" / "800.html")  # never rated, no genres
    assert "Fewer than 5 people liked this movie" in page.plain
    assert "(no genres listed)" in page.plain
    assert not page.tables


def test_titles_with_markup_render_as_text(fixed_site: Path) -> None:
    for path in fixed_site.rglob("*.html"):
        html = path.read_text(encoding="utf-8")
        assert "<script>alert(1)</script>" not in html, path
    movie = (fixed_site / "movies" / "10.html").read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &#34;Friends&#34; (2001)" in movie
    assert read_page(fixed_site / "movies" / "10.html").h1 == XSS_TITLE
    user = read_page(fixed_site / "users" / "1.html")  # user 1 rated movie 10
    assert XSS_TITLE in [row[1] for row in user.tables[0]]
    assert (
        "Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)"
        in read_page(fixed_site / "movies" / "20.html").h1
    )


def test_golden_user_page(fixed_site: Path) -> None:
    rendered = (fixed_site / "users" / "1.html").read_text(encoding="utf-8")
    golden = GOLDEN / "user_1.html"
    if os.environ.get("UPDATE_GOLDEN") == "1":
        golden.parent.mkdir(parents=True, exist_ok=True)
        golden.write_text(rendered, encoding="utf-8")
    assert golden.exists(), "no golden file yet: run with UPDATE_GOLDEN=1 and commit it"
    assert rendered == golden.read_text(encoding="utf-8"), (
        "users/1.html changed; if intended, re-run with UPDATE_GOLDEN=1 and review the diff"
    )


def test_search_shards_hold_every_user_once(fixed_run: Path, tmp_path: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    data = site.SiteData(**{**data.__dict__, "users_per_shard": 3})  # 8 users -> 3 shards
    site.write_site(tmp_path / "site", data, workers=1)
    seen: list[int] = []
    for number in range(3):
        text = (tmp_path / "site" / "search" / f"users-{number}.js").read_text()
        match = re.fullmatch(rf"movielensUserShard\({number},(\[.*\])\);\n", text)
        assert match, text
        users = json.loads(match.group(1))
        assert all(user_id % 3 == number for user_id, _ in users)
        seen += [user_id for user_id, _ in users]
    assert sorted(seen) == USER_IDS
    assert 'data-shards="3"' in (tmp_path / "site" / "index.html").read_text()


def test_parallel_rendering_writes_the_same_bytes(fixed_run: Path, tmp_path: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    site.write_site(tmp_path / "one", data, workers=1)
    summary = site.write_site(tmp_path / "two", data, workers=2)
    assert summary.workers == 2
    one = {
        p.relative_to(tmp_path / "one"): p.read_bytes()
        for p in (tmp_path / "one").rglob("*")
        if p.is_file()
    }
    two = {
        p.relative_to(tmp_path / "two"): p.read_bytes()
        for p in (tmp_path / "two").rglob("*")
        if p.is_file()
    }
    assert one.keys() == two.keys()
    assert [k for k in one if one[k] != two[k]] == []


def test_render_records_its_time_in_run_json(fixed_run: Path) -> None:
    manifest = json.loads((fixed_run / "run.json").read_text())
    assert manifest["timings"]["render"] > 0


def test_render_command(fixed_run: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    shutil.copytree(fixed_run, out, ignore=shutil.ignore_patterns("site"))
    assert main(["-q", "render", "--out", str(out)]) == 0
    assert (out / "site" / "users" / "1.html").read_text() == (
        fixed_run / "site" / "users" / "1.html"
    ).read_text()


# ---------------------------------------------------------------------------------------
# Errors


def test_missing_database_is_one_clear_line(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_run, tmp_path / "out")
    assert main(["render", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "recommendations.duckdb: missing" in err and "python -m job merge" in err
    assert not (tmp_path / "out" / "site").exists()


def test_undefined_variable_fails_and_keeps_the_old_site(fixed_run: Path, tmp_path: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    templates = tmp_path / "templates"
    shutil.copytree(site.installed_templates(), templates)
    good = site.write_site(tmp_path / "site", data, templates=templates)
    before = (good.site / "index.html").read_text()
    page = templates / "popular.html"
    page.write_text(
        page.read_text().replace("{{ item.rank }}", "{{ item.rank }}{{ no_such_name }}")
    )
    with pytest.raises(JobError, match="no_such_name"):
        site.write_site(tmp_path / "site", data, templates=templates)
    assert (tmp_path / "site" / "index.html").read_text() == before
    assert not list(tmp_path.glob(".site.*"))


def test_missing_templates_name_the_folder(fixed_run: Path, tmp_path: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    with pytest.raises(JobError, match=re.escape(str(tmp_path / "nowhere"))):
        site.write_site(tmp_path / "site", data, templates=tmp_path / "nowhere")


def test_real_merge_output_renders(scored_run: Path, tmp_path: Path) -> None:
    """The contract as score/merge actually write it, not just as this file builds it."""
    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    summary = site.render_site(out, workers=1)
    assert summary.users == len(list((out / "site" / "users").glob("*.html")))
    assert list(broken_links(out / "site")) == []
    with duckdb.connect(str(out / "recommendations.duckdb"), read_only=True) as con:
        first = con.execute("SELECT min(user_id) FROM users").fetchone()
        assert first is not None
        user = first[0]
        rated = {
            r[0]
            for r in con.execute(
                "SELECT movie_id FROM ratings WHERE user_id = ?", [user]
            ).fetchall()
        }
        titles = dict(con.execute("SELECT movie_id, title FROM movies").fetchall())
    page = read_page(out / "site" / "users" / f"{user}.html")
    recommended = [row[2] for row in page.tables[1][1:]]
    assert len(recommended) == 5
    assert not set(recommended) & {titles[m] for m in rated}


# ---------------------------------------------------------------------------------------
# Pure parts: the chart, neighbours, small helpers

HISTORY = [
    {"epoch": 1, "loss": 1.2, "mae": 0.90, "val_loss": 1.0, "val_mae": 0.85},
    {"epoch": 2, "loss": 0.8, "mae": 0.72, "val_loss": 0.9, "val_mae": 0.80},
]


def test_chart_is_an_accessible_svg_with_axes_legend_and_baseline() -> None:
    svg = site.error_chart_svg(HISTORY, "movie mean", 0.76)
    root = ET.fromstring(svg)
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == f"{ns}svg"
    assert root.get("role") == "img"
    title = root.find(f"{ns}title")
    assert title is not None and title.get("id") == root.get("aria-labelledby")
    assert "Validation MAE went from 0.850 at epoch 1 to 0.800 at epoch 2" in (title.text or "")
    texts = " ".join(t for el in root.iter(f"{ns}text") for t in el.itertext())
    for label in (
        "Error over epochs",
        "Epoch",
        "Mean absolute error (stars)",
        "Training MAE",
        "Validation MAE",
        "Best baseline: movie mean (0.760)",
    ):
        assert label in texts, label
    assert "stroke-dasharray" in svg  # the dotted baseline
    assert site.error_chart_svg(HISTORY, "movie mean", 0.76) == svg  # same input, same bytes


def test_chart_escapes_text_and_survives_no_history() -> None:
    svg = site.error_chart_svg([], "<b>&", 0.5)
    ET.fromstring(svg)  # well-formed: the name was escaped
    assert "<b>&" not in svg
    ET.fromstring(site.error_chart_svg([{"epoch": 1, "mae": 0.5, "val_mae": float("nan")}]))


def test_best_baseline_is_the_lowest_mae_baseline() -> None:
    rows = [
        {"model": "seed", "mae": 0.1},
        {"model": "global mean", "mae": 0.8},
        {"model": "movie mean", "mae": 0.7},
        {"model": "user+movie bias", "mae": 0.75},
    ]
    assert site.best_baseline(rows) == ("movie mean", 0.7)
    assert site.best_baseline(rows[:1]) is None


def brute_force_neighbours(vectors: np.ndarray, k: int, allowed: np.ndarray) -> list[list[int]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    answer = []
    for row in range(len(vectors)):
        scores = unit @ unit[row]
        options = [i for i in np.argsort(-scores, kind="stable") if allowed[i] and i != row]
        answer.append(options[:k])
    return answer


@pytest.mark.parametrize("k", [1, 3, 40])  # 40: more than there are candidates
@pytest.mark.parametrize("block", [1, 7, 1000])
@pytest.mark.parametrize("masked", [False, True])
def test_nearest_neighbours_match_brute_force(k: int, block: int, masked: bool) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 4)).astype("float32")
    allowed = rng.random(30) < 0.6 if masked else np.ones(30, bool)
    index, similarity = nearest_neighbours(
        vectors, k, candidates=allowed if masked else None, block=block
    )
    assert index.shape == similarity.shape == (30, k)
    expected = brute_force_neighbours(vectors, k, allowed)
    for row in range(30):
        found = [int(i) for i in index[row] if i >= 0]
        assert found == expected[row]
        assert np.all(np.diff(similarity[row][: len(found)]) <= 1e-6)
        assert np.all(similarity[row][len(found) :] == -np.inf)


def test_stars_round_to_half_stars() -> None:
    assert site.stars(5.0) == "★★★★★"
    assert site.stars(3.7) == "★★★½☆"
    assert site.stars(0.2) == "☆☆☆☆☆"
    assert site.metric_label("ndcg_at_10") == "nDCG@10"
    assert site.metric_label("precision_at_10") == "Precision@10"
    assert site.metric_label("rmse") == "RMSE"


# ---------------------------------------------------------------------------------------
# Movie pages: links out, tags, the ratings chart


def test_movie_page_links_out_to_imdb_and_tmdb(fixed_site: Path) -> None:
    both = read_page(fixed_site / "movies" / "10.html")
    assert "https://www.imdb.com/title/tt0114709/" in both.links  # zero-padded to 7 digits
    assert "https://www.themoviedb.org/movie/862" in both.links
    imdb_only = read_page(fixed_site / "movies" / "20.html")
    assert "https://www.imdb.com/title/tt0211915/" in imdb_only.links
    assert not [link for link in imdb_only.links if "themoviedb" in link]
    for neither in ("30", "40"):  # a row of NULLs; no row at all
        page = read_page(fixed_site / "movies" / f"{neither}.html")
        assert not [link for link in page.links if link.startswith("https://www.")]
        assert "no IMDb or TMDB id in the data" in page.plain


def test_movie_page_shows_the_most_used_tags(fixed_site: Path) -> None:
    html = (fixed_site / "movies" / "30.html").read_text()
    tags = re.search(r'<ul class="tags"[^>]*>(.*?)</ul>', html, re.S)
    assert tags
    shown = [" ".join(Page(item).plain.split()) for item in re.findall(r"<li>(.*?)</li>", tags[1])]
    # users per tag, case and spaces aside; ties alphabetically; eight at most; blanks never
    assert shown == ["dark ×3", "funny ×2", *[f"tag {c}" for c in "abcdef"]]
    assert "&lt;b&gt;bold&lt;/b&gt;" in (fixed_site / "movies" / "40.html").read_text()
    assert "none yet" in read_page(fixed_site / "movies" / "50.html").plain


def counts_of(movie: int) -> int:
    return sum(1 for _, m, _, _, _ in fixed_ratings() if m == movie)


def chart_of(page: Path) -> ET.Element:
    html = page.read_text(encoding="utf-8")
    match = re.search(r"<svg\b.*?</svg>", html[html.index('id="ratings-heading"') :], re.S)
    assert match, f"no chart in {page}"
    return ET.fromstring(match.group(0))


def test_rating_chart_bars_are_the_movie_counts(fixed_site: Path) -> None:
    ns = "{http://www.w3.org/2000/svg}"
    values = [0.5 * i for i in range(1, 11)]
    for movie in (10, 30, 60):
        counts = [0] * 10
        for _, m, r, _, _ in fixed_ratings():
            if m == movie:
                counts[values.index(r)] += 1
        root = chart_of(fixed_site / "movies" / f"{movie}.html")
        assert root.get("role") == "img" and root.get("aria-labelledby") == "ratings-title"
        title = root.find(f"{ns}title")
        assert title is not None and title.text is not None
        said = ", ".join(
            f"{star_label(v)} star{'s' if v > 1 else ''} {c}"
            for v, c in reversed(list(zip(values, counts, strict=True)))
            if c
        )
        assert title.text == f"How {sum(counts)} users rated {_title(movie)}: {said}."
        scales = [
            float(g.get("transform", "").split()[3])
            for g in root.iter(f"{ns}g")
            if g.get("transform", "").startswith("matrix(")
        ]
        assert scales == pytest.approx([c / max(counts) for c in counts], abs=1e-4)
        texts = [t.text for t in root.iter(f"{ns}text")]
        assert texts[:10] == ["½", "1", "1½", "2", "2½", "3", "3½", "4", "4½", "5"]
        assert texts[10:] == [str(c) for c in counts]
    assert "No ratings yet." in read_page(fixed_site / "movies" / "800.html").plain
    few = [m for m in MOVIE_IDS if 0 < counts_of(m) < SIMILAR_MIN_RATINGS]
    if few:  # a sentence instead of a chart
        page = read_page(fixed_site / "movies" / f"{few[0]}.html")
        assert f"How {counts_of(few[0])} user" in page.plain
        assert "ratings-title" not in page.ids


def test_rating_chart_keeps_its_bars_on_the_baseline() -> None:
    from job.site.chart import RatingChart

    chart = RatingChart.draw([1.0, 2.0, 3.0, 4.0, 5.0])
    root = ET.fromstring(str(chart.render([0, 1, 2, 3, 4], "<Heat> & co")))
    ns = "{http://www.w3.org/2000/svg}"
    assert root.find(f"{ns}title").text == "<Heat> & co"  # type: ignore[union-attr]
    for group in root.iter(f"{ns}g"):
        if group.get("transform", "").startswith("matrix("):
            _, _, _, h, _, shift = (float(x) for x in group.get("transform")[7:-1].split())  # type: ignore[index]
            path = group.find(f"{ns}path")
            assert path is not None
            bottom = max(float(y) for y in re.findall(r"[ML] [-\d.]+ ([-\d.]+)", path.get("d", "")))
            assert h * bottom + shift == pytest.approx(chart.baseline, abs=1e-2)
    with pytest.raises(ValueError, match="3 counts for 5 ratings"):
        chart.render([1, 2, 3], "x")


# ---------------------------------------------------------------------------------------
# The popular page: picks by genre


def pop(rank: int, movie: int, n: int) -> site_data.Popular:
    return site_data.Popular(rank, movie, 5.0 - rank / 100, n)


def movie_of(movie_id: int, *genres: str) -> site_data.Movie:
    return site_data.Movie(movie_id, f"M{movie_id}", 2000, genres, 0, None)


def test_genre_picks_one_movie_per_genre_from_the_popular_ones() -> None:
    movies = {
        1: movie_of(1, "Drama", "Crime"),
        2: movie_of(2, "Drama"),
        3: movie_of(3, "Crime"),
        4: movie_of(4, "Drama", "Noir"),
        5: movie_of(5, "Drama"),  # best rated, too few ratings to count as popular
        6: movie_of(6),  # no genres
    }
    ranked = [
        pop(1, 5, 2),
        pop(2, 1, 50),
        pop(3, 4, 40),
        pop(4, 2, 30),
        pop(5, 3, 20),
        pop(6, 6, 90),
    ]
    every, lists, threshold = site_data.genre_picks(movies, ranked, per_genre=2, quantile=0.2)
    assert threshold == 20  # the 20% quantile of (2, 20, 30, 40, 50, 90)
    assert [(g.genre, [p.movie_id for p in g.movies]) for g in lists] == [
        ("Crime", [1, 3]),
        ("Drama", [1, 4]),
        ("Noir", [4]),
    ]
    # Noir (one candidate) chooses first and keeps movie 4; Crime then takes 1; Drama the next
    assert sorted((g.genre, g.movie.movie_id) for g in every) == [
        ("Crime", 1),
        ("Drama", 2),
        ("Noir", 4),
    ]
    assert [g.movie.rank for g in every] == sorted(g.movie.rank for g in every)
    assert site_data.genre_picks(movies, []) == ([], [], 0)


def test_popular_page_has_a_pick_from_every_genre_then_each_genre(fixed_site: Path) -> None:
    page = read_page(fixed_site / "popular.html")
    every = page.tables[0]
    assert every[0] == ["Genre", "Title", "Score", "Ratings"]
    genres = [row[0] for row in every[1:]]
    titles = [row[1] for row in every[1:]]
    assert len(set(genres)) == len(genres) and len(set(titles)) == len(titles)
    assert "The best of each genre" in page.plain
    for genre in genres:
        anchor = "genre-" + "".join(c if c.isalnum() else "-" for c in genre.lower())
        assert anchor in page.ids and f"#{anchor}" in page.links


# ---------------------------------------------------------------------------------------
# The title index


def test_fold_and_words_match_minisearch_splitting() -> None:
    assert search.fold("Amélie") == "amelie"
    assert search.fold("ＡＢＣ") == "abc"  # full-width letters
    assert search.words("Amélie (Fabuleux destin d'Amélie Poulain, Le) (2001)") == [
        "amelie", "fabuleux", "destin", "d", "amelie", "poulain", "le", "2001",
    ]  # fmt: skip
    assert search.words("WALL·E (2008)") == ["wall", "e", "2008"]
    assert search.words("Léon: The Professional") == ["leon", "the", "professional"]
    assert search.shard_key("amelie") == "am" and search.shard_key("e") == "e"
    assert search.shard_file("am") == "titles-am.js"
    assert search.shard_file("é") == "titles-xc3a9.js"  # é that NFKD could not split
    assert search.shard_file("Ab") == "titles-x4162.js"


def test_title_shards_hold_every_title_under_each_of_its_words(fixed_run: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    shards = search.title_shards(data.movies.values())
    for movie in data.movies.values():
        name = re.sub(r" \(\d{4}\)$", "", movie.title)  # the year makes no shard
        keys = {search.shard_key(w) for w in search.words(name)}
        holding = {k for k, rows in shards.items() if movie.movie_id in [r[0] for r in rows]}
        assert holding == keys, movie.title
    assert 20 in [row[0] for row in shards["am"]]  # Amélie, folded
    assert 20 not in [row[0] for row in shards["20"]]  # "(2001)" at the end: no shard
    listing = (fixed_run / "site" / "search" / "titles.js").read_text()
    sizes = json.loads(re.fullmatch(r"movielensTitleShards\((.*)\);\n", listing)[1])  # type: ignore[index]
    assert sizes == {k: len(rows) for k, rows in shards.items()}
    text = (fixed_run / "site" / "search" / "titles-am.js").read_text()
    key, rows = json.loads("[" + re.fullmatch(r"movielensTitleShard\((.*)\);\n", text)[1] + "]")  # type: ignore[index]
    assert key == "am" and rows == shards["am"]
    assert "<script>" not in (fixed_run / "site" / "search" / "titles-sc.js").read_text()


# ---------------------------------------------------------------------------------------
# The taste page


def read_taste_shards(site_dir: Path) -> tuple[dict[int, list[list[float]]], dict[int, str]]:
    neighbours: dict[int, list[list[float]]] = {}
    titles: dict[int, str] = {}
    for path in sorted((site_dir / "taste").glob("nb-*.js")):
        number = int(path.stem.split("-")[1])
        match = re.fullmatch(rf"movielensNeighbours\({number},(.*)\);\n", path.read_text())
        assert match, path
        found, named = json.loads("[" + match.group(1) + "]")
        count = len(list((site_dir / "taste").glob("nb-*.js")))
        assert all(int(m) % count == number for m in found)
        neighbours.update({int(m): v for m, v in found.items()})
        titles.update({int(m): t for m, t in named.items()})
    return neighbours, titles


def test_taste_shards_hold_every_movie_and_its_neighbours(fixed_run: Path) -> None:
    neighbours, titles = read_taste_shards(fixed_run / "site")
    assert sorted(neighbours) == MOVIE_IDS
    with duckdb.connect(str(fixed_run / "recommendations.duckdb"), read_only=True) as con:
        table, other, score = site_data.TASTE_SOURCE
        rows = con.execute(
            f"SELECT movie_id, {other}, {score} FROM {table} ORDER BY movie_id, rank"
        ).fetchall()
    expected: dict[int, list[list[float]]] = {m: [] for m in MOVIE_IDS}
    for m, n, sim in rows:
        expected[m].append([n, round(sim, 4)])
    assert neighbours == expected
    assert titles[10] == XSS_TITLE and set(titles) == set(MOVIE_IDS)
    html = (fixed_run / "site" / "taste.html").read_text()
    assert "<script>alert(1)" not in html  # the fill list's titles, escaped by tojson


def brute_force_recommend(
    neighbours: dict[int, list[tuple[int, float]]], picks: list[int], k: int
) -> list[int]:
    movies = sorted({o for found in neighbours.values() for o, _ in found} - set(picks))
    total = {m: sum(s for p in picks for o, s in neighbours.get(p, []) if o == m) for m in movies}
    near = {o for p in picks for o, _ in neighbours.get(p, [])}
    return sorted((m for m in movies if m in near), key=lambda m: (-total[m], m))[:k]


@pytest.mark.parametrize("k", [1, 5, 50])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recommend_matches_brute_force(k: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    neighbours = {
        m: [(int(o), round(float(rng.random()), 4)) for o in rng.choice(40, 6, replace=False)]
        for m in range(40)
        if rng.random() < 0.8
    }
    picks = [int(p) for p in rng.choice(45, 3, replace=False)]  # some have no neighbours
    found = taste.recommend(neighbours, picks, k)
    assert [m for m, _, _ in found] == brute_force_recommend(neighbours, picks, k)
    for movie, score, because in found:
        parts = {p: s for p in picks for o, s in neighbours.get(p, []) if o == movie}
        assert score == pytest.approx(sum(parts.values()))
        assert because == max(parts, key=lambda p: (parts[p], -picks.index(p)))
    assert not {m for m, _, _ in taste.recommend(neighbours, picks, k, exclude=range(20))} & set(
        range(20)
    )


def test_taste_overlap_is_a_share(fixed_run: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    found = taste.taste_overlap(fixed_run, data.neighbours, k=5)
    assert found["users"] == len(USER_IDS) - 1  # the cold-start user has no model top-k
    for name in ("overlap_as_shown", "overlap_unrated", "popular_overlap"):
        assert 0.0 <= found[name] <= 1.0
