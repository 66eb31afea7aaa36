"""job.site.taste: the taste page's neighbour shards and its recommender, against brute force."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
from site_support import MOVIE_IDS, USER_IDS, XSS_TITLE, build_fixed_run

from job import site
from job.site import data as site_data
from job.site import taste


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


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
