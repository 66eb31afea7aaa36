"""`python -m job bench-job` at a tiny shape, so the command cannot rot: every stage runs on
the synthetic folder, the table is printed and stored in run.json. No timing is asserted."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.benchjob import stored_table
from job.cli import main
from job.data.movielens import load_dataset
from job.data.synthetic import resolve_shape, write_movielens_folder


def test_synthetic_folder_is_a_movielens_folder_the_loader_accepts(tmp_path: Path) -> None:
    shape = resolve_shape(None, 60, 90, 3_000)
    written = write_movielens_folder(tmp_path / "data", shape, seed=5)
    dataset = load_dataset(str(written.folder), tmp_path / "cache")
    assert len(dataset.ratings) == written.n_ratings > 0.9 * shape.ratings
    assert dataset.ratings["user_id"].nunique() == 60
    assert dataset.ratings["movie_id"].isin(dataset.movies["movie_id"]).all()
    assert dataset.movies["title"].str.contains(r"\(\d{4}\)$").mean() > 0.95  # years
    assert dataset.movies["title"].str.contains(", The").any()  # quoted in the CSV
    assert dataset.movies["genres"].str.contains("|", regex=False).any()
    assert len(dataset.tags) > 0 and (written.folder / "links.csv").exists()
    again = write_movielens_folder(tmp_path / "data", shape, seed=5)
    assert again.seconds == 0.0 and again.n_ratings == written.n_ratings  # reused


def test_bench_job_runs_every_stage_at_a_tiny_shape(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    args = ["-q", "bench-job", "--users", "40", "--movies", "60", "--ratings", "1200"]
    args += ["--out", str(out), "--data-dir", str(tmp_path / "data"), "--epochs", "1"]
    args += ["--preset", "seed", "--keep-top", "20"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    stages = [row["stage"] for row in stored_table(out)["stages"]]
    for stage in ("generate", "train (whole stage)", "score", "merge", "render", "publish"):
        assert stage in stages
        assert stage in printed
    table = stored_table(out)
    rerun = next(row for row in table["stages"] if row["stage"] == "publish again (re-run)")
    assert "0 writes" in rerun["note"]  # a re-run of the same run sends nothing
    score = next(row for row in table["stages"] if row["stage"] == "score")
    assert score["count"] > 0 and score["rate_unit"] == "pairs/s" and score["peak_rss_bytes"] > 0
    assert table["fit_ratings_per_second"] > 0 and table["shape"]["users"] == 40
    for column in ("wall s", "CPU s", "peak RSS", "rate"):
        assert column in printed


def test_bench_job_refuses_bad_flags_before_any_work(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert (
        main(["-q", "bench-job", "--shape", "ml-10m", "--preset", "nope", "--out", str(out)]) == 2
    )
    assert main(["-q", "bench-job", "--users", "0", "--out", str(out)]) == 2
    assert not out.exists()
