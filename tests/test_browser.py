"""The site of a real run on the shipped ml-latest-small, opened from disk in headless Chromium.

Debian's chromium (``/usr/bin/chromium``, installed by ``.ci/run``) is driven through
Playwright's Python API; Playwright's own browser downloads are never used. Screenshots of
the index and a user page at desktop and phone widths go to ``tests/artifacts/screenshots/``
(git-ignored) for a person to look at.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pytest
from test_site import XSS_TITLE, broken_links, build_fixed_run

from job import site
from job.runfolder import BASELINE_NAMES

SCREENSHOTS = Path(__file__).parent / "artifacts" / "screenshots"
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

    def open(self, path: Path) -> None:
        self.page.goto(path.resolve().as_uri())


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    context = browser.new_context(viewport=DESKTOP)
    page = context.new_page()
    page.set_default_timeout(10_000)
    found = Tab(page)
    page.on(
        "console",
        lambda message: (
            found.problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.on("pageerror", lambda error: found.problems.append(f"page error: {error}"))
    page.on("requestfailed", lambda request: found.problems.append(f"failed: {request.url}"))

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
    titles: dict[int, str]


@pytest.fixture(scope="session")
def shipped(shipped_run: Path) -> Shipped:
    with duckdb.connect(str(shipped_run / "recommendations.duckdb"), read_only=True) as con:
        users = dict(con.execute("SELECT user_id, n_ratings FROM users").fetchall())
        user = 557 if 557 in users else min(users)
        rated = con.execute("SELECT movie_id FROM ratings WHERE user_id = ?", [user]).fetchall()
        titles = dict(con.execute("SELECT movie_id, title FROM movies").fetchall())
    return Shipped(shipped_run / "site", user, users[user], frozenset(r[0] for r in rated), titles)


def movie_ids_of(links: list[str]) -> list[int]:
    return [int(href.rsplit("/", 1)[1].removesuffix(".html")) for href in links]


# ---------------------------------------------------------------------------------------
# The shipped run


@pytest.mark.e2e
def test_no_broken_links_in_the_shipped_site(shipped: Shipped) -> None:
    assert list(broken_links(shipped.site)) == []


@pytest.mark.e2e
@needs_browser
def test_index_shows_the_chart_and_the_metrics_table(shipped: Shipped, tab: Tab) -> None:
    tab.open(shipped.site / "index.html")
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
    shipped: Shipped, tab: Tab
) -> None:
    tab.open(shipped.site / "index.html")
    field_ = tab.page.get_by_label("User id", exact=False)
    field_.fill(str(shipped.user))
    field_.press("Enter")
    tab.page.wait_for_url(f"**/users/{shipped.user}.html")
    assert tab.page.locator("h1").inner_text() == f"User #{shipped.user}"
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_searching_an_unknown_user_says_so_and_stays(shipped: Shipped, tab: Tab) -> None:
    tab.open(shipped.site / "users" / f"{shipped.user}.html")  # the header's search box
    field_ = tab.page.get_by_role("searchbox", name="User id")
    field_.fill("99999999")
    field_.press("Enter")
    status = tab.page.locator("#user-search-status")
    status.filter(has_text="No user 99999999").wait_for()
    assert tab.page.url.endswith(f"users/{shipped.user}.html")
    field_.fill("abc")
    field_.press("Enter")
    status.filter(has_text="Enter a user id").wait_for()
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_user_page_lists_top_rated_movies_and_unrated_recommendations(
    shipped: Shipped, tab: Tab
) -> None:
    tab.open(shipped.site / "users" / f"{shipped.user}.html")
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
        .locator("tbody a")
        .evaluate_all("links => links.map(a => a.getAttribute('href'))")
    )
    assert len(recommended) >= 5
    assert not set(recommended) & shipped.rated, "recommended a movie the user already rated"
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
def test_a_movie_link_opens_the_movie_page(shipped: Shipped, tab: Tab) -> None:
    tab.open(shipped.site / "users" / f"{shipped.user}.html")
    link = tab.page.locator("main table").nth(1).locator("tbody a").first
    movie = movie_ids_of([link.get_attribute("href")])[0]
    link.click()
    tab.page.wait_for_url(f"**/movies/{movie}.html")
    assert tab.page.locator("h1").inner_text() == shipped.titles[movie]
    assert tab.page.get_by_role("heading", name="Similar movies").is_visible()
    assert tab.problems == []


@pytest.mark.e2e
@needs_browser
@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_screenshots_and_no_sideways_scrolling(
    shipped: Shipped, tab: Tab, viewport: dict[str, int]
) -> None:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    tab.page.set_viewport_size(viewport)
    for name, path in (("index", "index.html"), ("user", f"users/{shipped.user}.html")):
        tab.open(shipped.site / path)
        shot = SCREENSHOTS / f"{name}-{viewport['width']}.png"
        tab.page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 10_000
        width = tab.page.evaluate("document.documentElement.scrollWidth")
        assert width <= viewport["width"], f"{path} scrolls sideways at {viewport['width']} px"
    assert tab.problems == []


# ---------------------------------------------------------------------------------------
# Escaping, seen by a browser


@pytest.fixture(scope="module")
def fixed_out(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The hand-made run of test_site.py (8 users, a title with a script tag), rendered."""
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("browser") / "out")


@needs_browser
def test_a_title_with_a_script_tag_is_shown_as_text(fixed_out: Path, tab: Tab) -> None:
    tab.open(fixed_out / "site" / "movies" / "10.html")
    assert tab.page.locator("h1").inner_text() == XSS_TITLE
    tab.open(fixed_out / "site" / "users" / "1.html")
    assert tab.page.get_by_role("link", name=XSS_TITLE).count() == 1
    assert tab.problems == []  # no alert() dialog, no errors


@needs_browser
def test_search_loads_the_right_shard(fixed_out: Path, tmp_path: Path, tab: Tab) -> None:
    data, _ = site.load_site_data(fixed_out)
    data = site.SiteData(**{**data.__dict__, "users_per_shard": 3})  # 8 users -> 3 shards
    site.write_site(tmp_path / "site", data, workers=1)
    for user in (5, 4, 3):  # shards 2, 1 and 0
        tab.open(tmp_path / "site" / "index.html")
        tab.page.get_by_label("User id").fill(str(user))
        tab.page.get_by_label("User id").press("Enter")
        tab.page.wait_for_url(f"**/users/{user}.html")
    tab.open(tmp_path / "site" / "index.html")
    tab.page.get_by_label("User id").fill("9")  # shard 0 is loaded, but has no user 9
    tab.page.get_by_label("User id").press("Enter")
    tab.page.locator("#user-search-status").filter(has_text="No user 9 in this run").wait_for()
    assert tab.problems == []
