"""job.site.search: the title index (folding, words, shards) and its files on the fixed run."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
from site_support import build_fixed_run

from job import site
from job.data.movielens import SHIPPED_DIR, natural_title
from job.site import search


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


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


def test_natural_titles_keep_their_words_so_search_finds_both_forms() -> None:
    """Every title of ml-latest-small keeps the same words in another order; 1,914 of them
    change, and none leaves an article behind a comma at the end."""
    movies = pd.read_csv(SHIPPED_DIR / "ml-latest-small" / "movies.csv")
    changed = 0
    for title in movies["title"]:
        shown = natural_title(title)
        assert sorted(search.words(shown)) == sorted(search.words(title)), title
        changed += shown != title
        assert not re.search(r", (The|A|An)( \(|$)", shown), shown
    assert changed == 1914
