"""The article's example for one user: top-rated movies and the score stage's own picks."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from job.core.errors import JobError
from job.stages.recommend import example_for_user, format_example


def test_unknown_user_is_one_line_naming_the_range(tiny_run: Path) -> None:
    with pytest.raises(JobError, match="user 999999 is not in this run's data; pick one of"):
        example_for_user(tiny_run, 999_999)


def test_picks_are_unwatched_and_match_top_k(tiny_run: Path, scored_run: Path) -> None:
    with duckdb.connect(str(scored_run / "recommendations.duckdb"), read_only=True) as con:
        user = int(con.execute("SELECT min(user_id) FROM top_k").fetchall()[0][0])
        top_k = [
            int(r[0])
            for r in con.execute(
                "SELECT movie_id FROM top_k WHERE user_id = ? ORDER BY rank", [user]
            ).fetchall()
        ]
        rated = {
            int(r[0])
            for r in con.execute(
                "SELECT movie_id FROM ratings WHERE user_id = ?", [user]
            ).fetchall()
        }
    example = example_for_user(tiny_run, user, n_top_rated=3, n_recommend=5)
    picks = example.recommendations["movie_id"].tolist()
    assert picks == top_k[:5], "the same scorer and ranker as the score stage"
    assert not set(picks) & rated
    assert len(example.top_rated) <= 3
    assert set(example.top_rated["movie_id"]) <= rated
    text = format_example(example)
    assert f"User #{user} has rated" in text and "Top 5 movie recommendations" in text
