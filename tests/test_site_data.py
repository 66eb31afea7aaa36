"""job.site.data: what the site reads from a run (the genre picks of the popular page) and
the one-line refusal of a run without its database.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from job.cli import main
from job.site import data as site_data


def test_missing_database_is_one_clear_line(
    tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    shutil.copytree(tiny_run, tmp_path / "out")
    assert main(["render", "--out", str(tmp_path / "out")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0
    assert "recommendations.duckdb: missing" in err and "python -m job merge" in err
    assert not (tmp_path / "out" / "site").exists()


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
