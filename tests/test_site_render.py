"""job.site.render: the pages of the fixed run (site_support), their escaping and links, a
golden user page, parallel rendering, and the refusals of a broken template folder.

``UPDATE_GOLDEN=1 pytest tests/test_site_render.py`` rewrites the golden file after an
intended change; review its diff like code.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import duckdb
import numpy as np
import pytest
from site_support import (
    COLD_USER,
    FIXED_MIN_LIKES,
    MOVIE_IDS,
    USER_IDS,
    XSS_TITLE,
    Page,
    broken_links,
    build_fixed_run,
    fixed_also_liked,
    fixed_ratings,
    read_page,
    shown_title,
)

from job import site
from job.cli import main
from job.core.config import N_SIMILAR
from job.core.errors import JobError
from job.models.itemitem import COSINE_SHRINK
from job.site.templates import stars

GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


@pytest.fixture(scope="module")
def fixed_site(fixed_run: Path) -> Path:
    return fixed_run / "site"


def test_every_page_is_written(fixed_site: Path) -> None:
    assert (fixed_site / "index.html").is_file()
    assert (fixed_site / "popular.html").is_file()
    assert (fixed_site / "error-over-epochs.svg").is_file()
    assert {p.stem for p in (fixed_site / "users").glob("*.html")} == {str(u) for u in USER_IDS}
    assert {p.stem for p in (fixed_site / "movies").glob("*.html")} == {str(m) for m in MOVIE_IDS}
    assert (fixed_site / "taste.html").is_file()
    assert (fixed_site / "runs.html").is_file()
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
    assert [row[1] for row in top_rated[1:]] == [shown_title(r[1]) for r in best]
    assert recommended[0] == ["#", "Predicted", "Title", "Genres", "Why"]
    assert len(recommended) - 1 == 5
    assert not {row[2] for row in recommended[1:]} & {shown_title(r[1]) for r in mine}
    # Each pick says why: the movie behind it and the stars the user gave it (odd ranks
    # carry a reason in the fixed database).
    because = min(r[1] for r in mine)
    stars_given = next(r[2] for r in mine if r[1] == because)
    why = [row[4] for row in recommended[1:]]
    assert why[0].startswith(f"because you rated {shown_title(because)}")
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
        assert page.h1 == shown_title(movie)
        listed = [r[1] for r in page.tables[0][1:]] if expected else []
        assert listed == [shown_title(m) for m in expected[:N_SIMILAR]]


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
        "Amélie (Le Fabuleux destin d'Amélie Poulain) (2001)"
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
