"""links.csv (IMDb and TMDB ids) from the dataset folder to the ``links`` table the site reads,
and the dataset's tags as the ``tags`` table."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from synth import write_movielens

from job.core.errors import DataError
from job.data.movielens import load_folder


def write_links(folder: Path, text: str) -> Path:
    write_movielens(folder, n_users=4, n_movies=5, per_user=3)
    (folder / "links.csv").write_text(text)
    return folder


def test_links_keep_absent_ids_absent(tmp_path: Path) -> None:
    folder = write_links(
        tmp_path / "data",
        "movieId,imdbId,tmdbId\r\n10,0114709,862\r\n20,,8844\r\n30,0113228,\r\n30,1,1\r\n",
    )
    links = load_folder(folder, "mine").links
    assert links["movie_id"].tolist() == [10, 20, 30]  # a repeated movie keeps its first row
    assert links["imdb_id"].tolist() == [114709, pd.NA, 113228]
    assert links["tmdb_id"].tolist() == [862, 8844, pd.NA]
    assert str(links["imdb_id"].dtype) == "Int64"


def test_no_links_file_means_no_links(tmp_path: Path) -> None:
    folder = write_movielens(tmp_path / "data", n_users=4, n_movies=5, per_user=3)
    (folder / "links.csv").unlink()
    links = load_folder(folder, "mine").links
    assert links.empty and list(links.columns) == ["movie_id", "imdb_id", "tmdb_id"]


def test_a_links_file_without_tmdb_ids_is_fine(tmp_path: Path) -> None:
    folder = write_links(tmp_path / "data", "movieId,imdbId\n10,0114709\n")
    links = load_folder(folder, "mine").links
    assert links["tmdb_id"].isna().all() and links["imdb_id"].tolist() == [114709]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("movieId,imdbId,tmdbId\n10,tt0114709,862\n", "line 2: column 'imdbId' has 'tt0114709'"),
        ("movieId,imdbId,tmdbId\n10,1,\n20,2,8.5\n", "line 3: column 'tmdbId' has '8.5'"),
        ("movieId,imdbId,tmdbId\n,1,2\n", "line 2: column 'movieId' is empty"),
        ("movie,imdbId,tmdbId\n10,1,2\n", "missing column 'movieId'"),
    ],
)
def test_bad_links_are_one_line_naming_the_file(tmp_path: Path, text: str, message: str) -> None:
    folder = write_links(tmp_path / "data", text)
    with pytest.raises(DataError) as error:
        load_folder(folder, "mine")
    assert str(error.value).startswith(str(folder / "links.csv"))
    assert message in str(error.value) and "\n" not in str(error.value)


def test_merge_writes_links_and_tags_tables(scored_run: Path) -> None:
    with duckdb.connect(str(scored_run / "recommendations.duckdb"), read_only=True) as con:
        links = con.execute("SELECT * FROM links ORDER BY movie_id").fetchall()
        n_movies = con.execute("SELECT count(*) FROM movies").fetchone()
        tags = con.execute("SELECT count(*), count(DISTINCT movie_id) FROM tags").fetchone()
    assert n_movies is not None and len(links) == n_movies[0]
    assert links[0] == (10, 70, 30)  # synth.py: imdb = 7 x id, tmdb = 3 x id
    assert any(imdb is None for _, imdb, _ in links) and any(t is None for _, _, t in links)
    assert tags is not None and tags[0] > 0


def test_a_run_trained_before_links_existed_still_merges(scored_run: Path, tmp_path: Path) -> None:
    from job.stages.merge import merge_stage

    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    (out / "dataset" / "links.parquet").unlink()
    merge_stage(out)
    with duckdb.connect(str(out / "recommendations.duckdb"), read_only=True) as con:
        assert con.execute("SELECT count(*) FROM links").fetchone() == (0,)
