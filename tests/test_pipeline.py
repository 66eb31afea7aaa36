"""The train stage end to end: outputs, manifest, reproducibility, the article's example."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from synth import write_movielens

from job.cli import main
from job.core.baselines import BASELINE_NAMES
from job.core.config import build_config
from job.runfolder.manifest import Manifest, load_run, read_manifest
from job.stages.recommend import example_for_user, format_example
from job.stages.train import train_stage


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_movielens(
        tmp_path_factory.mktemp("tiny") / "data", n_users=30, n_movies=40, per_user=12
    )


def test_train_writes_every_output_and_a_manifest(tiny_data: Path, tmp_path: Path) -> None:
    trained = train_stage(
        build_config(data=str(tiny_data), preset="seed", out=tmp_path, epochs=2), verbose=0
    )
    manifest = trained.manifest
    assert trained.out == tmp_path
    for name in (
        "model.keras",
        "encoding.json",
        "history.csv",
        "metrics.json",
        "run.json",
        "dataset/ratings.parquet",
        "dataset/movies.parquet",
        "dataset/tags.parquet",
        "similar.parquet",
    ):
        assert (tmp_path / name).exists(), name
    assert not [p for p in tmp_path.rglob(".*.tmp*")], "temporary files left behind"
    on_disk = json.loads((tmp_path / "run.json").read_text())
    assert on_disk["run_id"] == manifest.run_id
    assert len(on_disk["dataset"]["sha256"]) == 64
    assert on_disk["config"]["model"]["hidden"] == [32, 4]
    assert set(on_disk["timings"]) >= {"load", "train", "evaluate"}
    assert {"keras", "numpy", "python"} <= set(on_disk["versions"])
    names = [row["model"] for row in on_disk["metrics"]["rows"]]
    assert names == ["seed", *BASELINE_NAMES]
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history.columns) == ["epoch", "loss", "mae", "val_loss", "val_mae"]
    assert len(history) == on_disk["model"]["epochs_run"] <= 2
    split = on_disk["dataset"]["split"]
    assert split["train"] + split["validation"] + split["test"] == on_disk["dataset"]["n_ratings"]


@pytest.mark.slow  # trains or starts processes: `make test` only
def test_same_seed_same_run(tiny_data: Path, tmp_path: Path) -> None:
    a = train_stage(
        build_config(data=str(tiny_data), preset="seed", out=tmp_path / "a", epochs=2, seed=5),
        verbose=0,
    ).manifest
    b = train_stage(
        build_config(data=str(tiny_data), preset="seed", out=tmp_path / "b", epochs=2, seed=5),
        verbose=0,
    ).manifest
    assert a.history == b.history

    def scores(manifest: Manifest) -> list[dict]:  # training_seconds is a timing, not a result
        return [
            {k: v for k, v in row.items() if k != "training_seconds"}
            for row in manifest.metrics["rows"]
        ]

    assert scores(a) == scores(b)


def train_cli(data: Path, out: Path, *flags: str) -> int:
    """`python -m job -q train` on ``data`` with the quick seed preset and one epoch."""
    return main(
        [
            "-q",
            "train",
            "--preset",
            "seed",
            "--epochs",
            "1",
            "--data",
            str(data),
            "--out",
            str(out),
            *flags,
        ]
    )


def test_test_fraction_zero_trains_on_everything(tiny_data: Path, tmp_path: Path) -> None:
    assert train_cli(tiny_data, tmp_path, "--test-fraction", "0") == 0
    run = load_run(tmp_path, read_manifest(tmp_path))
    assert run.manifest.dataset.split["test"] == 0
    assert run.manifest.metrics["evaluated_on"] == "validation"
    assert (run.ratings["split"] != 2).all()


def test_temporal_split_runs(tiny_data: Path, tmp_path: Path) -> None:
    assert train_cli(tiny_data, tmp_path, "--split", "temporal") == 0


def test_model_reloads_and_predicts_the_same(tiny_data: Path, tmp_path: Path) -> None:
    train_stage(build_config(data=str(tiny_data), preset="seed", out=tmp_path, epochs=1), verbose=0)
    run = load_run(tmp_path, read_manifest(tmp_path))
    first = example_for_user(tmp_path, user_id=3)
    again = example_for_user(tmp_path, user_id=3)
    pd.testing.assert_frame_equal(first.recommendations, again.recommendations)
    rated = set(run.ratings.loc[run.ratings.user_id == 3, "movie_id"])
    assert not rated & set(first.recommendations["movie_id"])


@pytest.mark.e2e
def test_shipped_dataset_default_preset_beats_the_movie_mean(shipped_run: Path) -> None:
    manifest = json.loads((shipped_run / "run.json").read_text())
    rows = {row["model"]: row for row in manifest["metrics"]["rows"]}
    preset = manifest["model"]["preset"]
    assert manifest["metrics"]["evaluated_on"] == "test"
    assert rows[preset]["mae"] < rows["movie mean"]["mae"]
    assert rows[preset]["rmse"] < rows["movie mean"]["rmse"]
    assert rows["global mean"]["mae"] > rows["movie mean"]["mae"]  # the article's ordering
    assert manifest["dataset"]["n_users"] == 610 and manifest["dataset"]["n_ratings"] == 100_836


@pytest.mark.e2e
def test_recommend_prints_the_articles_example(
    shipped_run: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["recommend", "--out", str(shipped_run), "--user", "557"]) == 0
    text = capsys.readouterr().out
    run = load_run(shipped_run, read_manifest(shipped_run))
    mine = run.ratings[run.ratings.user_id == 557]["rating"]
    # The article counted 23 of this user's ratings (its training share); all 27 count here.
    assert f"User #557 has rated {len(mine)} movies (avg. rating = {mine.mean():.1f})" in text
    assert "Top 5 movie recommendations" in text
    example = example_for_user(shipped_run, 557)
    assert len(example.recommendations) == 5
    assert "Spirited Away" in format_example(example)  # rated 5.0 by user 557, as in the article


def test_one_stage_runner_measures_and_records_once(tiny_run: Path, tmp_path: Path) -> None:
    """run_stage: the stage's value, its time, CPU and peak memory; run.json gets the record
    a stage returns (with the stage's time) and is left alone by a stage that returns none."""
    from dataclasses import dataclass

    from job.pipeline import STAGES, run_stage
    from job.runfolder.manifest import StageRecord

    assert STAGES == ("train", "score", "merge", "render", "publish")
    shutil.copy(tiny_run / "run.json", tmp_path / "run.json")
    before = (tmp_path / "run.json").read_bytes()
    plain = run_stage("score", tmp_path, lambda: 42)
    assert plain.value == 42 and plain.stage == "score"
    assert plain.wall_s >= 0 and plain.cpu_s >= 0 and plain.peak_rss_bytes > 0
    assert (tmp_path / "run.json").read_bytes() == before

    @dataclass(frozen=True)
    class Done:
        record: StageRecord

    read = read_manifest(tmp_path)
    measured = run_stage("merge", tmp_path, lambda: Done(StageRecord(read, {"merged_rows": {}})))
    after = read_manifest(tmp_path)
    assert after.timings == {**read.timings, "merge": round(measured.wall_s, 3)}
    assert after.extra == {**read.extra, "merged_rows": {}}


def test_run_all_publishes_to_the_target_it_parsed_before_training(
    tiny_data: Path, tmp_path: Path
) -> None:
    """Every stage in order, the publish stage last, to the target run_all parsed once."""
    from job.core.config import PublishOptions
    from job.pipeline import STAGES, run_all

    site = tmp_path / "site"
    config = build_config(
        data=str(tiny_data),
        out=tmp_path / "out",
        preset="seed",
        epochs=1,
        publish=PublishOptions(str(site), keep_runs=1),
    )
    result = run_all(config, verbose=0)
    assert [m.stage for m in result.stages] == list(STAGES)
    latest = json.loads((site / "latest.json").read_text(encoding="utf-8"))
    assert latest["run_id"] == result.run_id
    assert (site / "runs" / result.run_id / "site" / "index.html").is_file()


# ---------------------------------------------------------------------------------------
# Start-up: the first stage of each process records the time before it (the imports)


def new_process(monkeypatch: pytest.MonkeyPatch, age: float = 4.2) -> None:
    """As if a fresh process started ``age`` seconds before its first stage."""
    from job.core import timing

    monkeypatch.setattr(timing, "_startup_taken", False)
    monkeypatch.setattr(timing, "process_age", lambda: age)


def no_engine(monkeypatch: pytest.MonkeyPatch, events: list[object] | None = None) -> None:
    """Offline, with an empty cache: the SQL page's engine cannot be fetched."""
    from job.core.errors import DataError
    from job.site import sql

    def offline(cache_dir: Path) -> Path:
        if events is not None:
            events.append("fetch")
        raise DataError("could not download the engine (offline)")

    monkeypatch.setattr(sql, "fetch_engine", offline)


def test_train_records_the_start_up_of_its_process(
    tiny_data: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    from job import pipeline

    new_process(monkeypatch)
    config = build_config(data=str(tiny_data), preset="seed", out=tmp_path, epochs=1)
    with caplog.at_level("INFO", logger="job.pipeline"):
        pipeline.train(config, verbose=0)
    timings = read_manifest(tmp_path).timings
    assert timings["start-up"] == 4.2 and "train" in timings
    assert "start-up 4.2 s (imports)" in caplog.text


def test_each_stage_command_records_its_own_start_up_once(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """score, merge and render run alone, each in its own process: each start-up is in
    run.json (score's through its summary and merge); a second stage of one process adds none."""
    from job import pipeline
    from job.core.config import ScoreOptions

    out = tmp_path / "out"
    shutil.copytree(tiny_run, out)
    no_engine(monkeypatch)
    new_process(monkeypatch, 1.5)
    assert pipeline.score(out, options=ScoreOptions(top_k=5)).value.startup_seconds == 1.5
    new_process(monkeypatch, 2.5)
    pipeline.merge(out)
    new_process(monkeypatch, 3.5)
    pipeline.render(out, workers=1, cache_dir=tmp_path / "cache")
    pipeline.merge(out)  # the same process again: its start-up is counted already
    timings = read_manifest(out).timings
    assert timings["score start-up"] == 1.5 and timings["render start-up"] == 3.5
    assert timings["merge start-up"] == 2.5  # the first merge's, kept by the second
    assert {"score", "merge", "render"} <= set(timings)


def test_render_fetches_the_engine_before_its_stage_starts(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's download is its own step, outside the render stage's time."""
    from job import pipeline

    out = tmp_path / "out"
    shutil.copytree(scored_run, out)
    events: list[object] = []
    no_engine(monkeypatch, events)
    real = pipeline.run_stage

    def spy(stage: str, *args: object, **kwargs: object) -> object:
        events.append(("stage", stage))
        return real(stage, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "run_stage", spy)
    pipeline.render(out, workers=1, cache_dir=tmp_path / "cache")
    assert events == ["fetch", ("stage", "render")]
