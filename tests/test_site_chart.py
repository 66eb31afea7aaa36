"""job.site.chart: the error chart and the ratings chart, as SVG and on the fixed run's pages."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from site_support import MOVIE_IDS, build_fixed_run, fixed_ratings, fixed_title, read_page

from job import site
from job.core.config import SIMILAR_MIN_RATINGS
from job.data.movielens import natural_title
from job.site.chart import star_label


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


@pytest.fixture(scope="module")
def fixed_site(fixed_run: Path) -> Path:
    return fixed_run / "site"


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
        # The page's natural title ("The Movie 30 (1953)"), not GroupLens' ("Movie 30, The").
        shown = natural_title(fixed_title(movie))
        assert title.text == f"How {sum(counts)} users rated {shown}: {said}."
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
