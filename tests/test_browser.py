"""The site of a real run on the shipped ml-latest-small, in headless Chromium.

Most tests run twice (``[file]``, ``[http]``): on the rendered folder opened from disk, and on
the bucket as ``python -m job publish`` leaves it, read over http:// from moto's standalone S3
server on loopback, anonymously, as a visitor reads a public site bucket.

Debian's chromium (``/usr/bin/chromium``, installed by ``.ci/run``) is driven through
Playwright's Python API; Playwright's own browser downloads are never used. Screenshots of
the index and a user page at desktop and phone widths go to ``tests/artifacts/screenshots/``
(git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urldefrag, urljoin, urlsplit

import duckdb
import pytest
from bench.motoserver import FAKE_CREDENTIALS, MotoServer
from publish_support import get, public_read_policy, s3
from site_support import XSS_TITLE, broken_links, build_fixed_run

import job
from job import site
from job.core.baselines import BASELINE_NAMES
from job.data.movielens import natural_title
from job.publish import content_type

SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
ARTIFACTS = SCREENSHOTS.parent
# Three of the taste page's one-per-genre starters on the shipped data, as the pages write
# them (GroupLens: "Shawshank Redemption, The (1994)").
TASTE_PICKS = ("The Shawshank Redemption (1994)", "The Godfather (1972)", "Fight Club (1999)")
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}

needs_browser = pytest.mark.browser


# ---------------------------------------------------------------------------------------
# Fixtures: one browser per session (conftest.py), a fresh tab per test that records what
# went wrong


@dataclass
class Tab:
    """A page plus every console error, uncaught exception and dialog it produced."""

    page: Any
    problems: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)  # every URL asked for, in order

    def open(self, path: Path) -> None:
        self.page.goto(path.resolve().as_uri())

    def open_at(self, site: Path, relative: str) -> None:
        """A page with a query string (``taste.html?picks=1,2``), which as_uri would quote."""
        self.page.goto(site.resolve().as_uri() + "/" + relative)

    def goto(self, url: str) -> Any:
        """Open a URL; returns Playwright's Response for the page itself."""
        return self.page.goto(url)


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(10_000)
    found = Tab(page)
    page.on(
        "console",
        lambda message: (
            found.problems.append(f"console: {message.text} ({message.location.get('url')})")
            if message.type == "error"
            else None
        ),
    )
    page.on("pageerror", lambda error: found.problems.append(f"page error: {error}"))
    # A request the browser itself abandons (net::ERR_ABORTED: the page was left while a
    # fetch was still reading) says nothing about the site; every other failure does.
    page.on(
        "requestfailed",
        lambda request: (
            None
            if request.failure == "net::ERR_ABORTED"
            else found.problems.append(f"failed: {request.url} ({request.failure})")
        ),
    )
    page.on("request", lambda request: found.requests.append(request.url))

    def on_dialog(dialog: Any) -> None:
        found.problems.append(f"dialog: {dialog.message}")
        dialog.dismiss()

    page.on("dialog", on_dialog)
    yield found
    context.close()


@dataclass(frozen=True)
class Shipped:
    site: Path
    user: int  # the article's user 557 when the data has it
    n_ratings: int
    rated: frozenset[int]
    titles: dict[int, str]  # as the pages show them ("The Matrix (1999)")
    grouplens_titles: dict[int, str]  # as the database keeps them ("Matrix, The (1999)")
    reasons: tuple[int, ...]  # the user's top_k because_movie_id, where there is one

    def movie(self, title: str) -> int:
        (found,) = [m for m, t in self.titles.items() if t == title]
        return found


@pytest.fixture(scope="session")
def shipped(shipped_run: Path) -> Shipped:
    with duckdb.connect(str(shipped_run / "recommendations.duckdb"), read_only=True) as con:
        users = dict(con.execute("SELECT user_id, n_ratings FROM users").fetchall())
        user = 557 if 557 in users else min(users)
        rated = con.execute("SELECT movie_id FROM ratings WHERE user_id = ?", [user]).fetchall()
        titles = dict(con.execute("SELECT movie_id, title FROM movies").fetchall())
        reasons = con.execute(
            "SELECT because_movie_id FROM top_k WHERE user_id = ? AND because_movie_id IS NOT NULL",
            [user],
        ).fetchall()
    shown = {m: natural_title(t) for m, t in titles.items()}
    return Shipped(
        shipped_run / "site",
        user,
        users[user],
        frozenset(r[0] for r in rated),
        shown,
        titles,
        tuple(r[0] for r in reasons),
    )


@dataclass(frozen=True)
class Origin:
    """Where the browser reads the shipped site from."""

    name: str  # "file": the rendered folder; "http": the bucket it was published to
    site: str  # the URL of the site folder, ending in "/"
    entry: str = ""  # the bucket's entry index.html, which sends a visitor to the run

    def url(self, relative: str) -> str:
        return self.site + relative


@pytest.fixture(scope="session")
def published(shipped_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Origin]:
    """The shipped run published by ``python -m job publish`` to moto's S3 server on loopback,
    once per session. The bucket is public-read by policy, and nothing below signs a request:
    the browser reads it as any visitor would."""
    bucket, prefix = "movielens-site", "web"
    no_aws = tmp_path_factory.mktemp("no-aws")
    # Only fake credentials, and none of this machine's AWS set-up or proxies; the child
    # imports the same `job` package as this process.
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("AWS_") and key.lower() not in ("http_proxy", "https_proxy")
    }
    env |= FAKE_CREDENTIALS | {
        "AWS_CONFIG_FILE": str(no_aws / "config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(no_aws / "credentials"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "NO_PROXY": "127.0.0.1,localhost",
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(Path(job.__file__).parents[1]), env.get("PYTHONPATH")) if p
        ),
    }
    with MotoServer() as server:
        s3(server.endpoint).create_bucket(Bucket=bucket)
        s3(server.endpoint).put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
        target = f"s3://{bucket}/{prefix}"
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "job",
                "-q",
                "publish",
                str(shipped_run),
                target,
                "--endpoint-url",
                server.endpoint,
            ],
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=600,
        )
        assert done.returncode == 0, done.stderr
        entry = done.stdout.strip()  # publish prints the entry page's address alone
        assert entry == f"{server.endpoint}/{bucket}/{prefix}/index.html"
        # read anonymously, like the browser (and with no proxy between us and loopback)
        anonymous = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with anonymous.open(urljoin(entry, "latest.json"), timeout=30) as answer:
            latest = json.load(answer)
        site_index = urljoin(entry, latest["site"])  # runs/<run id>/site/index.html
        yield Origin("http", site_index.removesuffix("index.html"), entry)


# The bucket's tests run on the one worker that published it (tests/conftest.py).
@pytest.fixture(params=["file", pytest.param("http", marks=pytest.mark.xdist_group("published"))])
def origin(request: pytest.FixtureRequest, shipped: Shipped) -> Origin:
    """The shipped site from its folder, then from the bucket (published on first use)."""
    if request.param == "file":
        return Origin("file", shipped.site.resolve().as_uri() + "/")
    published: Origin = request.getfixturevalue("published")
    return published


def movie_ids_of(links: list[str]) -> list[int]:
    return [int(href.rsplit("/", 1)[1].removesuffix(".html")) for href in links]


# ---------------------------------------------------------------------------------------
# The shipped run


@pytest.mark.e2e
def test_no_broken_links_in_the_shipped_site(shipped: Shipped) -> None:
    assert list(broken_links(shipped.site)) == []


@pytest.mark.e2e
@needs_browser
def test_index_shows_the_chart_and_the_metrics_table(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    tab.goto(origin.url("index.html"))
    chart = tab.page.locator("figure.chart svg[role=img]")
    assert chart.is_visible()
    assert chart.bounding_box()["width"] > 300
    assert "Error over epochs" in tab.page.locator("#chart-title").text_content()
    assert chart.locator("text", has_text="Validation MAE").count() == 1
    names = tab.page.locator("table.metrics tbody th").evaluate_all(
        "cells => cells.map(th => th.firstChild.textContent.trim())"
    )
    assert names[1:] == list(BASELINE_NAMES)
    headers = tab.page.locator("table.metrics thead th").all_inner_texts()
    assert headers[:3] == ["Model", "RMSE", "MAE"]
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_searching_a_user_id_and_pressing_enter_opens_their_page(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    tab.goto(origin.url("index.html"))
    field_ = tab.page.get_by_label("Movie title or user id", exact=False)
    field_.fill(str(shipped.user))
    field_.press("Enter")
    tab.page.wait_for_url(f"**/users/{shipped.user}.html")
    assert tab.page.locator("h1").inner_text() == f"User #{shipped.user}"
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_searching_an_unknown_user_says_so_and_stays(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    tab.goto(origin.url(f"users/{shipped.user}.html"))  # the header's search box
    field_ = tab.page.get_by_role("searchbox", name="Search movies and users")
    field_.fill("99999999")
    field_.press("Enter")
    status = tab.page.locator("#site-search-status")
    status.filter(has_text="No user 99999999").wait_for()
    assert tab.page.url.endswith(f"users/{shipped.user}.html")
    field_.fill("zqxwv")
    field_.press("Enter")
    status.filter(has_text="No title matches").wait_for()
    assert tab.page.url.endswith(f"users/{shipped.user}.html")
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_user_page_lists_top_rated_movies_and_unrated_recommendations(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    tab.goto(origin.url(f"users/{shipped.user}.html"))
    text = tab.page.locator("main p.lead").inner_text()
    assert text.startswith(
        f"User #{shipped.user} has rated {shipped.n_ratings} movies (avg. rating"
    )
    tables = tab.page.locator("main table")
    top_rated = movie_ids_of(
        tables.nth(0)
        .locator("tbody a")
        .evaluate_all("links => links.map(a => a.getAttribute('href'))")
    )
    assert len(top_rated) == min(10, shipped.n_ratings)
    assert set(top_rated) <= shipped.rated
    recommended = movie_ids_of(
        tables.nth(1)
        .locator("tbody th a")  # the Why column links the rated movie behind each pick
        .evaluate_all("links => links.map(a => a.getAttribute('href'))")
    )
    assert len(recommended) >= 5
    assert not set(recommended) & shipped.rated, "recommended a movie the user already rated"
    # Each pick with a reason in top_k says why, naming a movie this user rated; a preset
    # that ranks by rating (seed) has none, and the page then has no Why column.
    reasons = movie_ids_of(
        tables.nth(1)
        .locator("tbody td.why a")
        .evaluate_all("links => links.map(a => a.getAttribute('href'))")
    )
    assert set(reasons) <= shipped.rated
    assert sorted(reasons) == sorted(shipped.reasons)
    headers = tables.nth(1).locator("thead th").all_inner_texts()
    assert ("Why" in headers) == bool(shipped.reasons)
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_a_movie_link_opens_the_movie_page(shipped: Shipped, origin: Origin, tab: Tab) -> None:
    tab.goto(origin.url(f"users/{shipped.user}.html"))
    link = tab.page.locator("main table").nth(1).locator("tbody a").first
    movie = movie_ids_of([link.get_attribute("href")])[0]
    link.click()
    tab.page.wait_for_url(f"**/movies/{movie}.html")
    assert tab.page.locator("h1").inner_text() == shipped.titles[movie]
    assert tab.page.get_by_role("heading", name="People who liked this also liked").is_visible()
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_screenshots_and_no_sideways_scrolling(
    shipped: Shipped, tab: Tab, viewport: dict[str, int]
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.set_viewport_size(viewport)
    die_hard = shipped.movie("Die Hard (1988)")
    three = ",".join(str(shipped.movie(t)) for t in TASTE_PICKS)
    pages = (
        ("index", "index.html"),
        ("user", f"users/{shipped.user}.html"),
        ("movie", f"movies/{die_hard}.html"),
        ("popular", "popular.html"),
        ("taste", f"taste.html?picks={three}"),
        ("runs", "runs.html"),
        ("sql", "sql.html"),
    )
    for name, path in pages:
        tab.open_at(shipped.site, path)
        if name == "taste":
            tab.page.locator("#taste-results li").nth(9).wait_for()
        shot = SCREENSHOTS / f"{name}-{viewport['width']}.png"
        tab.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{path} scrolls sideways at {viewport['width']} px"
        # Every region that scrolls can be reached by the keyboard, and has a name.
        unreachable = tab.page.evaluate(SCROLLERS_WITHOUT_FOCUS)
        assert unreachable == [], f"{path} at {viewport['width']} px"
        if viewport == DESKTOP:  # on a desktop no table needs its scroll region
            cut = tab.page.evaluate(TABLES_WIDER_THAN_THEIR_BOX)
            assert cut == [], f"{path}: tables wider than the page"
    # the header's search with its results open, over the page
    tab.open(shipped.site / "users" / f"{shipped.user}.html")
    tab.page.get_by_role("searchbox", name="Search movies and users").fill("die hard")
    tab.page.locator("#site-search-results li").first.wait_for()
    shot = SCREENSHOTS / f"search-{viewport['width']}.png"
    tab.page.screenshot(path=str(shot))
    assert tab.page.evaluate("document.documentElement.scrollWidth") <= viewport["width"]
    assert tab.problems == []


# Elements that scroll sideways (overflow auto or scroll, content wider than the box) but
# that the keyboard cannot reach (no tabindex) or that have no accessible name.
SCROLLERS_WITHOUT_FOCUS = """() => [...document.querySelectorAll('body *')].filter(e => {
    const style = getComputedStyle(e);
    return ['auto', 'scroll'].includes(style.overflowX) && e.scrollWidth > e.clientWidth + 1
        && (e.tabIndex < 0 || !(e.getAttribute('aria-label') || e.getAttribute('aria-labelledby')));
}).map(e => e.outerHTML.slice(0, 80))"""
TABLES_WIDER_THAN_THEIR_BOX = """() => [...document.querySelectorAll('main table')]
    .filter(t => t.getBoundingClientRect().width > t.parentElement.clientWidth + 1)
    .map(t => (t.caption ? t.caption.textContent : t.className).slice(0, 60))"""


# ---------------------------------------------------------------------------------------
# Title search, the taste page and axe-core, on the shipped run

AMELIE = "Amelie (Le Fabuleux destin d'Amélie Poulain) (2001)"


@pytest.mark.e2e
@needs_browser
def test_title_search_opens_the_right_movie_page(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    die_hard = shipped.movie("Die Hard (1988)")
    tab.goto(origin.url("index.html"))
    field_ = tab.page.get_by_label("Movie title or user id", exact=False)
    field_.fill("die hard")
    results = tab.page.locator("#site-search-results a")
    results.first.wait_for()
    assert results.first.inner_text() == "Die Hard (1988)"
    assert "Die Hard 2 (1990)" in results.all_inner_texts()
    field_.press("Enter")
    tab.page.wait_for_url(f"**/movies/{die_hard}.html")
    assert tab.page.locator("h1").inner_text() == "Die Hard (1988)"
    assert tab.page.get_by_role("link", name="IMDb").get_attribute("href") == (
        "https://www.imdb.com/title/tt0095016/"
    )
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
@pytest.mark.parametrize("query", ["the matrix", "Matrix, The", "matrix (1999)"])
def test_title_search_finds_both_forms_of_a_title(shipped: Shipped, tab: Tab, query: str) -> None:
    """Pages write "The Matrix (1999)"; the data keeps GroupLens' "Matrix, The (1999)"."""
    matrix = shipped.movie("The Matrix (1999)")
    assert shipped.grouplens_titles[matrix] == "Matrix, The (1999)"
    tab.open(shipped.site / "popular.html")
    tab.page.get_by_role("searchbox", name="Search movies and users").fill(query)
    found = tab.page.locator(f"#site-search-results a[href$='movies/{matrix}.html']")
    found.wait_for()
    assert found.inner_text() == "The Matrix (1999)"
    tab.open(shipped.site / "movies" / f"{matrix}.html")
    assert tab.page.locator("h1").inner_text() == "The Matrix (1999)"
    assert "Matrix, The (1999)" in tab.page.locator("dl.facts").inner_text()
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_runs_page_reads_the_runs_index_where_published(
    shipped: Shipped, shipped_run: Path, origin: Origin, tab: Tab
) -> None:
    """Over http the Runs page and the index read the bucket's runs.json (one run here: the
    session publishes once); from a folder they say that they show this run only."""
    manifest = json.loads((shipped_run / "run.json").read_text())
    run_id = manifest["run_id"]
    (row,) = [r for r in manifest["metrics"]["rows"] if r["model"] == manifest["model"]["preset"]]
    tab.goto(origin.url("runs.html"))
    status = tab.page.locator("#runs-status")
    if origin.name == "file":
        status.filter(has_text="Opened from a folder, this page shows this run only").wait_for()
    else:
        status.filter(has_text="1 run kept where this site is published.").wait_for()
        assert tab.page.locator("#runs-chart svg[role=img]").count() == 4
        label = tab.page.locator("#runs-chart svg").first.get_attribute("aria-label")
        assert label == f"RMSE over 1 run, oldest first: {row['rmse']:.4f}"
    cells = tab.page.locator("#runs-table tbody tr").all()
    assert len(cells) == 1
    texts = cells[0].locator("td").all_inner_texts()
    assert texts[2:] == [f"{row[m]:.4f}" for m in ("rmse", "mae", "ndcg_at_10", "coverage_at_10")]
    assert run_id in cells[0].locator("th").inner_text()
    tab.goto(origin.url("index.html"))
    said = tab.page.locator("#changes-summary")
    said.filter(
        has_text="Opened from a folder" if origin.name == "file" else "This is the first run"
    ).wait_for()
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
@pytest.mark.parametrize("query", ["amelie", "AMÉLIE", "amél"])
def test_title_search_ignores_case_and_accents(
    shipped: Shipped, origin: Origin, tab: Tab, query: str
) -> None:
    tab.goto(origin.url("popular.html"))
    tab.page.get_by_role("searchbox", name="Search movies and users").fill(query)
    tab.page.locator("#site-search-results a", has_text="Poulain").wait_for()
    titles = tab.page.locator("#site-search-results a").all_inner_texts()
    assert AMELIE in titles, titles
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_search_by_keyboard_alone(shipped: Shipped, origin: Origin, tab: Tab) -> None:
    tab.goto(origin.url(f"users/{shipped.user}.html"))
    keyboard = tab.page.keyboard
    for _ in range(12):  # skip link, brand, three nav links, then the search box
        keyboard.press("Tab")
        if tab.page.evaluate("document.activeElement.id") == "site-search":
            break
    assert tab.page.evaluate("document.activeElement.id") == "site-search"
    keyboard.type("die hard")
    # The answer to the whole query: on a busy machine the keys come slowly enough for an
    # answer to "die h" to be shown first, and replaced (focus and all) while arrowing.
    links = tab.page.locator('#site-search-results[data-for="die hard"] a')
    links.nth(1).wait_for()
    keyboard.press("ArrowDown")
    keyboard.press("ArrowDown")
    assert tab.page.evaluate("document.activeElement.textContent") == links.nth(1).inner_text()
    keyboard.press("ArrowUp")
    assert tab.page.evaluate("document.activeElement.textContent") == "Die Hard (1988)"
    keyboard.press("Escape")  # back to the box, the list closed
    assert tab.page.evaluate("document.activeElement.id") == "site-search"
    assert not tab.page.locator("#site-search-results").is_visible()
    keyboard.type(" 1988")
    keyboard.press("Enter")
    tab.page.wait_for_url(f"**/movies/{shipped.movie('Die Hard (1988)')}.html")
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_a_later_answer_keeps_the_keyboard_place_in_the_results(shipped: Shipped, tab: Tab) -> None:
    """Arrowing through the answer to "die h" while the answer to a longer query arrives:
    focus stays on the same movie (or position), not dropped to the page."""
    tab.open(shipped.site / "movies" / "1.html")
    box = tab.page.get_by_role("searchbox", name="Search movies and users")
    box.fill("die h")
    first = tab.page.locator('#site-search-results[data-for="die h"] a')
    first.nth(1).wait_for()
    box.press("ArrowDown")
    tab.page.keyboard.press("ArrowDown")
    chosen = tab.page.evaluate("document.activeElement.getAttribute('href')")
    # The box changes without taking focus (as when the last keys' answer is still on its way).
    tab.page.evaluate(
        """() => {
            const box = document.getElementById("site-search");
            box.value = "die hard";
            box.dispatchEvent(new Event("input"));
        }"""
    )
    later = tab.page.locator('#site-search-results[data-for="die hard"] a')
    later.first.wait_for()
    hrefs = [later.nth(i).get_attribute("href") for i in range(later.count())]
    focused = tab.page.evaluate("document.activeElement.getAttribute('href')")
    assert focused == (chosen if chosen in hrefs else hrefs[min(1, len(hrefs) - 1)])
    assert tab.problems == []


def loaded_files(tab: Tab) -> list[Path]:
    return [Path(unquote(urlsplit(url).path)) for url in tab.requests]


@pytest.mark.e2e
@needs_browser
def test_one_title_search_loads_one_shard(shipped: Shipped, tab: Tab) -> None:
    """What one title search transfers: the library and the shard list once per page,
    then one shard. The numbers go to tests/artifacts/search-bytes.json."""
    tab.open(shipped.site / "movies" / "1.html")
    tab.requests.clear()
    tab.page.get_by_role("searchbox", name="Search movies and users").fill("die hard")
    tab.page.locator("#site-search-results a").first.wait_for()
    files = loaded_files(tab)
    names = sorted(f.name for f in files)
    # the smaller of the two words' shards ("di", "ha"), and nothing else
    search_dir = shipped.site / "search"
    smaller = min(("titles-di.js", "titles-ha.js"), key=lambda n: (search_dir / n).stat().st_size)
    assert names == sorted(["minisearch.min.js", "titles.js", smaller]), names
    sizes = {f.name: f.stat().st_size for f in files}
    every = sorted((shipped.site / "search").glob("titles-*.js"), key=lambda f: f.stat().st_size)
    report: dict[str, Any] = {
        "query": "die hard",
        "files": sizes,
        "total_bytes": sum(sizes.values()),
        "largest_shard": {every[-1].name: every[-1].stat().st_size},
        "shards": len(every),
        "index_bytes_on_disk": sum(f.stat().st_size for f in every)
        + (shipped.site / "search" / "titles.js").stat().st_size,
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    (ARTIFACTS / "search-bytes.json").write_text(json.dumps(report, indent=2) + "\n")
    assert report["total_bytes"] < 60_000, report
    tab.requests.clear()  # a second search on the same page loads its shard alone
    tab.page.get_by_role("searchbox", name="Search movies and users").fill("amelie")
    tab.page.locator("#site-search-results a", has_text="Poulain").wait_for()
    assert [f.name for f in loaded_files(tab)] == ["titles-am.js"]
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_python_and_javascript_put_titles_in_the_same_shards(shipped: Shipped, tab: Tab) -> None:
    from job.site import search

    titles = sorted(shipped.titles.values())
    tab.open(shipped.site / "index.html")
    from_js = tab.page.evaluate(
        """titles => titles.map(t => {
            const words = MovielensSearch.words(t);
            return words.map(w => MovielensSearch.shardFile(MovielensSearch.shardKey(w)));
        })""",
        titles,
    )
    from_python = [
        [search.shard_file(search.shard_key(w)) for w in search.words(t)] for t in titles
    ]
    assert from_js == from_python


def neighbours_of(out: Path) -> dict[int, list[Any]]:
    from job.site.data import TASTE_SOURCE, Similar
    from job.site.taste import shipped_neighbours

    table, other, score = TASTE_SOURCE
    found: dict[int, list[Any]] = {}
    with duckdb.connect(str(out / "recommendations.duckdb"), read_only=True) as con:
        for m, n, sim in con.execute(
            f"SELECT movie_id, {other}, {score} FROM {table} ORDER BY movie_id, rank"
        ).fetchall():
            found.setdefault(m, []).append(Similar(n, sim))
    return shipped_neighbours(found)


@pytest.mark.e2e
@needs_browser
def test_taste_page_recommends_ten_after_three_picks(
    shipped: Shipped, shipped_run: Path, origin: Origin, tab: Tab
) -> None:
    from job.site.taste import recommend

    tab.goto(origin.url("taste.html"))
    status = tab.page.locator("#taste-status")
    assert status.inner_text() == "Pick a movie or more to see recommendations."
    for title in TASTE_PICKS:
        tab.page.get_by_label(title, exact=False).check()
    status.filter(has_text="10 recommendations from your 3 picks").wait_for()
    shown = [
        int(m)
        for m in tab.page.locator("#taste-results li").evaluate_all(
            "items => items.map(li => li.dataset.movie)"
        )
    ]
    picks = [shipped.movie(t) for t in TASTE_PICKS]
    expected = [m for m, _, _ in recommend(neighbours_of(shipped_run), picks)]
    assert len(shown) == 10 and shown[: len(expected)] == expected
    assert not set(shown) & set(picks)
    assert tab.page.url.endswith("taste.html?picks=" + ",".join(map(str, picks)))
    first = tab.page.locator("#taste-results a").first
    assert first.get_attribute("href") == f"movies/{shown[0]}.html"
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_taste_page_picks_from_a_movie_page_and_from_search(
    shipped: Shipped, origin: Origin, tab: Tab
) -> None:
    die_hard = shipped.movie("Die Hard (1988)")
    tab.goto(origin.url(f"movies/{die_hard}.html"))
    tab.page.get_by_role("link", name="Liked it? Start from this movie").click()
    tab.page.wait_for_url(f"**/taste.html?picks={die_hard}")
    picks = tab.page.locator("#taste-picks li a")
    picks.first.wait_for()
    assert picks.all_inner_texts() == ["Die Hard (1988)"]
    tab.page.get_by_label("Find a movie by its title").fill("amelie")
    add = tab.page.get_by_role("button", name=f"Add {AMELIE}")
    add.click()
    tab.page.locator("#taste-status").filter(has_text="from your 2 picks").wait_for()
    assert picks.all_inner_texts() == ["Die Hard (1988)", AMELIE]
    assert add.is_disabled()
    tab.page.get_by_role("button", name="Remove Die Hard (1988)").click()
    tab.page.locator("#taste-status").filter(has_text="from your 1 pick.").wait_for()
    assert tab.page.locator("#taste-results li").count() == 10
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
@pytest.mark.parametrize(
    "kind", ["index", "user", "movie", "popular", "taste", "search", "runs", "sql"]
)
def test_axe_finds_no_serious_violations(
    shipped: Shipped, tab: Tab, kind: str, viewport: dict[str, int]
) -> None:
    from axe_playwright_python.sync_playwright import Axe

    tab.page.set_viewport_size(viewport)
    die_hard = shipped.movie("Die Hard (1988)")
    three = ",".join(str(shipped.movie(t)) for t in TASTE_PICKS)
    path = {
        "index": "index.html",
        "user": f"users/{shipped.user}.html",
        "movie": f"movies/{die_hard}.html",
        "popular": "popular.html",
        "taste": f"taste.html?picks={three}",
        "search": "index.html",
        "runs": "runs.html",
        "sql": "sql.html",
    }[kind]
    tab.open_at(shipped.site, path)
    if kind == "taste":
        tab.page.locator("#taste-results li").nth(9).wait_for()
        tab.page.get_by_label("Find a movie by its title").fill("amelie")
        tab.page.get_by_role("button", name=f"Add {AMELIE}").wait_for()
    if kind == "search":  # the results list open
        tab.page.get_by_label("Movie title or user id", exact=False).fill("die hard")
        tab.page.locator("#site-search-results a").first.wait_for()
    assert tab.problems == []
    # (axe-core itself then tries to read the stylesheets with XMLHttpRequest, which
    # Chromium refuses under file://: those console errors are axe's, not the site's)
    results = Axe().run(tab.page)
    bad = [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]
    assert bad == []


# ---------------------------------------------------------------------------------------
# The SQL page: DuckDB-Wasm over http from the bucket; the duckdb CLI under file://


def run_sql(tab: Tab, query: str) -> str:
    """Type a query, press Run, wait until the page says how it went; returns that line."""
    runs = int(tab.page.locator("#sql").get_attribute("data-runs") or 0)
    tab.page.get_by_label("SQL query").fill(query)
    tab.page.get_by_role("button", name="Run", exact=True).click()
    # The page counts the queries it has finished (answered, failed or refused).
    tab.page.wait_for_function(
        "n => Number(document.getElementById('sql').dataset.runs || 0) > n",
        arg=runs,
        timeout=120_000,
    )
    return str(tab.page.locator("#sql-status").inner_text())


def result_rows(tab: Tab) -> list[list[str]]:
    rows: list[list[str]] = tab.page.locator("#sql-result tbody tr").evaluate_all(
        "rows => rows.map(r => Array.from(r.cells, c => c.textContent))"
    )
    return rows


@dataclass
class Transfers:
    """What a page fetched (its workers too): bytes per URL of GET responses, and the
    Range of each partial one. For the figures the tests print, never asserted on time."""

    sizes: dict[str, int] = field(default_factory=dict)
    ranges: list[str] = field(default_factory=list)

    def record(self, request: Any) -> None:
        response = request.response()
        if response is None or request.method != "GET":  # a HEAD's length is not sent
            return
        length = int(response.headers.get("content-length") or 0)
        self.sizes[request.url] = self.sizes.get(request.url, 0) + length
        if response.status == 206:
            self.ranges.append(request.headers.get("range", ""))

    def total(self, suffix: str = "") -> int:
        return sum(n for url, n in self.sizes.items() if suffix in url)

    def describe(self) -> str:
        return (
            f"engine {self.total('/engine/duckdb-wasm-'):,} B, module {self.total('.mjs'):,} B, "
            f"data {self.total('sql/recommendations.duckdb'):,} B in {len(self.ranges)} range "
            f"requests; every request {self.total():,} B"
        )


def open_sql_page(tab: Tab, published: Origin) -> None:
    tab.goto(published.url("sql.html"))
    root = tab.page.locator("#sql")
    missing = root.get_attribute("data-missing")
    assert not missing, f"the SQL page has no engine (render could not fetch it): {missing}"
    assert root.get_attribute("data-state") == "ready"


@pytest.mark.e2e
@needs_browser
def test_sql_page_counts_the_predictions_over_http(
    shipped_run: Path, published: Origin, tab: Tab
) -> None:
    """The first query loads the engine from the bucket and reads the database by range
    requests: its count is the DuckDB file's. Prints what it transferred, for the notes."""
    with duckdb.connect(str(shipped_run / "recommendations.duckdb"), read_only=True) as con:
        (expected,) = con.execute("SELECT count(*) FROM predictions").fetchone() or (None,)
    seen = Transfers()
    tab.page.on("requestfinished", seen.record)
    open_sql_page(tab, published)
    line = run_sql(tab, "SELECT count(*) AS n FROM predictions")
    assert result_rows(tab) == [[str(expected)]]
    assert line.startswith("1 row in "), line
    # Every byte came from the bucket: the engine beside the runs, the data in the run.
    bucket = published.site.split("/runs/")[0] + "/"
    assert all(url.startswith(bucket) for url in seen.sizes), sorted(seen.sizes)
    size = (shipped_run / "site" / "sql" / "recommendations.duckdb").stat().st_size
    assert seen.ranges and 0 < seen.total("sql/recommendations.duckdb") < size / 4, (
        "the database is read by range requests, not whole"
    )
    assert seen.total("/engine/duckdb-wasm-") > 0
    print(
        f"\nSQL, first query (count(*) FROM predictions, {size:,} B file): {line} {seen.describe()}"
    )
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_sql_page_top_10_example_and_csv(
    shipped: Shipped, shipped_run: Path, published: Origin, tab: Tab, tmp_path: Path
) -> None:
    """User 557's top 10 from the page equal the file's; the querying guide's first example is one
    click away; the result downloads as CSV."""
    with duckdb.connect(str(shipped_run / "recommendations.duckdb"), read_only=True) as con:
        expected = con.execute(
            "SELECT rank, movie_id FROM top_k WHERE user_id = ? ORDER BY rank", [shipped.user]
        ).fetchall()
    assert len(expected) == 10
    seen = Transfers()
    tab.page.on("requestfinished", seen.record)
    open_sql_page(tab, published)
    query = f"SELECT rank, movie_id FROM top_k WHERE user_id = {shipped.user} ORDER BY rank"
    line = run_sql(tab, query)
    assert line.startswith("10 rows in "), line
    print(f"\nSQL, first query (user {shipped.user}'s top 10): {line} {seen.describe()}")
    assert result_rows(tab) == [[str(r), str(m)] for r, m in expected]
    with tab.page.expect_download() as download:
        tab.page.get_by_role("button", name="Download CSV").click()
    saved = tmp_path / "query.csv"
    download.value.save_as(saved)
    assert saved.read_text(encoding="utf-8").splitlines() == ["rank,movie_id"] + [
        f"{r},{m}" for r, m in expected
    ]
    # The querying guide's first example: one click puts it in the box and runs it.
    runs = int(tab.page.locator("#sql").get_attribute("data-runs") or 0)
    tab.page.get_by_role("button", name="A user's top 10, with titles and reasons").click()
    tab.page.wait_for_function(
        "n => Number(document.getElementById('sql').dataset.runs || 0) > n", arg=runs
    )
    assert tab.page.locator("#sql-status").inner_text().startswith("10 rows in ")
    titles = [row[1] for row in result_rows(tab)]
    if shipped.user == 557:  # the guide's example names user 557
        assert titles == [shipped.grouplens_titles[m] for _, m in expected]
    assert tab.problems == []
    assert serious_axe_violations(tab) == []  # with a result drawn


def serious_axe_violations(tab: Tab) -> list[str]:
    from axe_playwright_python.sync_playwright import Axe

    results = Axe().run(tab.page)
    return [
        f"{v['id']} ({v['impact']}): {v['help']} at {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in ("serious", "critical")
    ]


@pytest.mark.e2e
@needs_browser
def test_sql_page_errors_are_one_line_and_writes_are_refused(published: Origin, tab: Tab) -> None:
    open_sql_page(tab, published)
    line = run_sql(tab, "SELECT * FROM nope")
    assert line.startswith("Error: Catalog Error: Table with name nope does not exist!"), line
    assert "\n" not in line and "LINE 1" not in line
    line = run_sql(tab, "SELECT * FROM movies WHERE")
    assert line.startswith("Error: Parser Error: syntax error at end of input"), line
    assert "\n" not in line
    assert tab.page.locator("#sql-result").is_hidden()
    assert run_sql(tab, "SELEC 1").startswith("Refused: SELEC would change something")
    assert run_sql(tab, "DELETE FROM predictions") == (
        "Refused: DELETE would change something; this page only reads "
        "(SELECT, WITH, FROM, VALUES, TABLE, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN)."
    )
    assert run_sql(tab, "SELECT 1; DROP TABLE movies").startswith("Refused: one statement")
    # Past the page's check (it starts WITH), the database itself refuses: attached read-only.
    line = run_sql(tab, "WITH x AS (SELECT 1) INSERT INTO movies SELECT * FROM movies LIMIT 0")
    assert line.startswith("Error: ") and "read-only" in line and "\n" not in line, line
    assert run_sql(tab, "SELECT count(*) AS n FROM movies").startswith("1 row in ")
    # DuckDB-Wasm's worker logs a failed query to the console too; nothing else may go wrong.
    assert [p for p in tab.problems if "Error" not in p] == []


@needs_browser
def test_sql_page_under_file_says_why_and_shows_the_cli_query(shipped: Shipped, tab: Tab) -> None:
    tab.open(shipped.site / "sql.html")
    assert tab.page.locator("#sql-file").is_visible()
    assert "cannot run SQL here" in tab.page.locator("#sql-file").inner_text()
    assert tab.page.get_by_role("button", name="Run", exact=True).is_disabled()
    cli = tab.page.locator("#sql-cli")
    assert cli.inner_text().startswith("duckdb -readonly recommendations.duckdb 'SELECT t.rank")
    tab.page.get_by_role("button", name="The cold-start list").click()
    assert "FROM popular p JOIN movies m USING (movie_id)" in cli.inner_text()
    tab.page.get_by_label("SQL query").fill("SELECT 'it''s'")
    quoted = "'SELECT '\\''it'\\'''\\''s'\\'''"
    assert cli.inner_text() == f"duckdb -readonly recommendations.duckdb {quoted}"
    assert tab.problems == []
    assert serious_axe_violations(tab) == []


# ---------------------------------------------------------------------------------------
# Every link, from the folder and from the bucket

HTML = "text/html; charset=utf-8"


@pytest.mark.e2e
@needs_browser
def test_the_bucket_entry_page_opens_the_latest_run(
    shipped_run: Path, published: Origin, tab: Tab
) -> None:
    """The address `publish` prints is the prefix's index.html, which sends to the run."""
    run_id = json.loads((shipped_run / "run.json").read_text())["run_id"]
    entry = tab.goto(published.entry)
    assert entry.status == 200 and entry.headers["content-type"] == HTML
    tab.page.wait_for_url(published.url("index.html"))
    assert f"/runs/{run_id}/site/" in tab.page.url
    assert tab.page.locator("footer code").first.inner_text() == run_id
    assert tab.page.title().endswith("MovieLens recommendations")
    assert tab.problems == []


def resolves(url: str, tab: Tab) -> tuple[int, str]:
    """(status, Content-Type) of a same-site URL: a GET without credentials over http, the
    file on disk under file:// (no server, so no type)."""
    if url.startswith("file:"):
        return (200 if Path(unquote(urlsplit(url).path)).is_file() else 404), ""
    answer = tab.page.request.get(url, max_redirects=0)
    return answer.status, answer.headers.get("content-type", "")


@pytest.mark.e2e
@needs_browser
def test_every_link_resolves_and_pages_are_html(shipped: Shipped, origin: Origin, tab: Tab) -> None:
    """Each page, with its scripts run (search results open, taste results shown): every
    same-site href and src answers 200 with the type the publisher gave it."""
    three = ",".join(str(shipped.movie(t)) for t in TASTE_PICKS)
    pages = (
        "index.html",
        f"users/{shipped.user}.html",
        f"movies/{shipped.movie('Die Hard (1988)')}.html",
        "popular.html",
        f"taste.html?picks={three}",
        "runs.html",
    )
    parts = urlsplit(origin.site)
    same_site = f"{parts.scheme}://{parts.netloc}/"  # file:/// or http://127.0.0.1:PORT/
    links: set[str] = set()
    for page in pages:
        answer = tab.goto(origin.url(page))
        if origin.name == "http":
            assert answer.status == 200 and answer.headers["content-type"] == HTML, page
        if page.startswith("taste.html"):
            tab.page.locator("#taste-results li").nth(9).wait_for()
        if page == "index.html":  # the search's result links too
            tab.page.get_by_label("Movie title or user id", exact=False).fill("die hard")
            tab.page.locator("#site-search-results a").first.wait_for()
        found = tab.page.locator("[href], [src]").evaluate_all(
            """els => els.map(e => new URL(e.getAttribute('href') ?? e.getAttribute('src'),
                                          document.baseURI).href)"""
        )
        links |= {urldefrag(link).url for link in found if link.startswith(same_site)}
    # Assets, pages reached by the scripts, and the data files beside site/ are all in.
    for expected in ("static/site.css", "static/search.js", "../recommendations.duckdb"):
        assert urljoin(origin.site, expected) in links, expected
    assert any("/movies/" in link for link in links) and any("/users/" in link for link in links)
    broken = []
    for link in sorted(links):
        status, kind = resolves(link, tab)
        if status != 200:
            broken.append(f"{link}: {status}")
        elif origin.name == "http" and kind != content_type(urlsplit(link).path):
            broken.append(f"{link}: served as {kind}")
    assert broken == []
    assert tab.problems == []


# ---------------------------------------------------------------------------------------
# Escaping, seen by a browser


@pytest.fixture(scope="module")
def fixed_out(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made run of site_support.py (8 users, a title with a script tag), rendered."""
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("browser") / "out")


@needs_browser
def test_a_title_with_a_script_tag_is_shown_as_text(fixed_out: Path, tab: Tab) -> None:
    tab.open(fixed_out / "site" / "movies" / "10.html")
    assert tab.page.locator("h1").inner_text() == XSS_TITLE
    tab.open(fixed_out / "site" / "users" / "1.html")
    # In the top-rated list, and as the reason ("because you rated ...") of some picks.
    links = tab.page.get_by_role("link", name=XSS_TITLE)
    assert links.count() >= 2 and set(links.all_inner_texts()) == {XSS_TITLE}
    tab.page.get_by_role("searchbox", name="Search movies and users").fill("script alert")
    result = tab.page.locator("#site-search-results a").first
    result.wait_for()
    assert result.inner_text() == XSS_TITLE  # as text, in the search results
    tab.open_at(fixed_out / "site", "taste.html?picks=10")
    tab.page.locator("#taste-picks a").first.wait_for()
    assert tab.page.locator("#taste-picks a").first.inner_text() == XSS_TITLE
    assert tab.problems == []  # no alert() dialog, no errors


@needs_browser
def test_search_loads_the_right_shard(fixed_out: Path, tmp_path: Path, tab: Tab) -> None:
    data, _ = site.load_site_data(fixed_out)
    data = site.SiteData(**{**data.__dict__, "users_per_shard": 3})  # 8 users -> 3 shards
    site.write_site(tmp_path / "site", data, workers=1)
    field_ = tab.page.get_by_label("Movie title or user id", exact=False)
    for user in (5, 4, 3):  # shards 2, 1 and 0
        tab.open(tmp_path / "site" / "index.html")
        field_.fill(str(user))
        field_.press("Enter")
        tab.page.wait_for_url(f"**/users/{user}.html")
    tab.open(tmp_path / "site" / "index.html")
    field_.fill("9")  # shard 0 is loaded, but has no user 9
    field_.press("Enter")
    tab.page.locator("#site-search-status").filter(has_text="No user 9 in this run").wait_for()
    assert tab.problems == []


@needs_browser
def test_runs_page_over_http_lists_the_kept_runs_and_what_changed(
    fixed_out: Path, s3_server: str, bucket: str, tmp_path: Path, tab: Tab
) -> None:
    """Two runs of the fixed site published to one public bucket: the second's Runs page
    and index show both runs and what changed, as runs.json says."""
    import pandas as pd

    from job.publish import publish

    s3(s3_server).put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
    first = json.loads((fixed_out / "run.json").read_text())["run_id"]
    ids = [first, "20260102T000000Z-second"]
    for day, run_id in enumerate(ids, start=1):
        out = tmp_path / run_id
        shutil.copytree(fixed_out, out, ignore=shutil.ignore_patterns("model.keras", "dataset"))
        manifest = json.loads((out / "run.json").read_text())
        created = f"2026-01-0{day}T00:00:00Z"
        (out / "run.json").write_text(
            json.dumps({**manifest, "run_id": run_id, "created_at": created})
        )
        for page in ("index.html", "runs.html"):  # the page's own run (the database's: the first)
            path = out / "site" / page
            path.write_text(path.read_text().replace(f'data-run="{first}"', f'data-run="{run_id}"'))
        if day == 2:  # half the users get another first pick
            top = pd.read_parquet(out / "parquet" / "top_k.parquet")
            moved = (top["rank"] == 1) & (top["user_id"] % 2 == 0)
            top.loc[moved, "movie_id"] = 30
            top.to_parquet(out / "parquet" / "top_k.parquet")
        publish(out, f"s3://{bucket}/web", endpoint_url=s3_server)
    runs = json.loads(get(s3_server, bucket, "web/runs.json"))["runs"]
    assert [r["run_id"] for r in runs] == ids
    changes = runs[1]["changes"]
    assert changes["users_changed"] > 0

    tab.goto(f"{s3_server}/{bucket}/web/runs/{ids[1]}/site/runs.html")
    tab.page.locator("#runs-status").filter(has_text="2 runs kept").wait_for()
    rows = tab.page.locator("#runs-table tbody tr")
    assert rows.count() == 2
    assert ids[1] in rows.nth(0).locator("th").inner_text()
    assert "this run" in rows.nth(0).locator("th").inner_text()
    assert tab.page.locator("#runs-chart svg").count() == 4
    assert tab.page.locator("#runs-chart svg").first.locator("circle").count() == 2
    latest = tab.page.locator("#changes-table tbody tr").first.locator("td").all_inner_texts()
    assert latest == [
        "2026-01-01 00:00 UTC",
        f"{100 * changes['share_changed']:.1f}% ({changes['users_changed']} of "
        f"{changes['users_compared']})",
        f"{changes['mean_overlap']:.3f}",
        str(changes["new_movies"]),
    ]
    rows.nth(1).locator("th a").click()  # the older run's own site, in the same bucket
    tab.page.wait_for_url(f"**/runs/{first}/site/index.html")
    # That page reads runs.json too: leave it only once it has (a read cut short by the next
    # navigation is a failed request).
    tab.page.locator("#changes-summary").filter(has_text="the first run kept here").wait_for()
    tab.goto(f"{s3_server}/{bucket}/web/runs/{ids[1]}/site/index.html")
    summary = tab.page.locator("#changes-summary")
    summary.filter(has_text=f"{changes['users_changed']} of {changes['users_compared']}").wait_for()
    assert tab.problems == []
