"""Every stage on damaged, partial and foreign run folders: one line naming the file, what
is wrong and the command that remakes it; exit 1; nothing written (issue 15).

Each case copies a complete run (trained, scored, merged, rendered), damages it, runs one
stage through the CLI as a user would, and compares the folder before and after.
"""

from __future__ import annotations

import json
import shutil
import zipfile
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hardening import (
    dead_temporary,
    empty,
    garbage,
    one_error_line,
    record,
    scramble_middle,
    scramble_parquet_pages,
    snapshot,
    temporaries,
    truncate,
)

import job.core.layout as rf
from job.cli import main
from job.pipeline import render

Damage = Callable[[Path], None]


@pytest.fixture(scope="module")
def full_run(scored_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``scored_run`` rendered too: every stage's outputs. Read-only; cases copy it."""
    out = tmp_path_factory.mktemp("full") / "out"
    shutil.copytree(scored_run, out)
    render(out, workers=1)
    return out


# ---------------------------------------------------------------------------------------
# Ways to damage a run folder


def _edit_json(rel: str, edit: Callable[[dict], object]) -> Damage:
    def damage(out: Path) -> None:
        path = out / rel
        path.write_text(json.dumps(edit(json.loads(path.read_text()))))

    return damage


def _on(rel: str, how: Callable[[Path], None]) -> Damage:
    return lambda out: how(out / rel)


def _remove(rel: str) -> Damage:
    def damage(out: Path) -> None:
        path = out / rel
        shutil.rmtree(path) if path.is_dir() else path.unlink()

    return damage


def _without(raw: dict, key: str) -> dict:
    return {k: v for k, v in raw.items() if k != key}


def _model_of_another_run(out: Path) -> None:
    """model.keras with its config saying 51 users: another run's model, same archive."""
    path = out / "model.keras"
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    config = json.loads(members["config.json"])
    config["config"]["n_users"] += 1
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def _ranked_by_ease(damage: Damage) -> Damage:
    """``damage`` on the run made one that ranks by the EASE ranker: run.json says so and a
    ranker.npz of its catalogue is there (the seed preset's runs rank by predicted rating
    and have none)."""

    def damaged(out: Path) -> None:
        import numpy as np

        from job.models.itemitem import Ease, WatchAndLike

        raw = json.loads((out / "run.json").read_text())
        raw["config"]["model"]["ranker"] = "ease"
        (out / "run.json").write_text(json.dumps(raw))
        n_movies = raw["dataset"]["n_movies"]
        none = Ease(np.zeros(0, np.int64), np.zeros((0, 0), np.float32), n_movies, 1.0)
        WatchAndLike(watch=none, like=none).save(out / "ranker.npz")
        damage(out)

    return damaged


def _ranker_of_another_run(out: Path) -> None:
    """ranker.npz saying 81 movies: another run's ranker, a whole archive."""
    import numpy as np

    path = out / "ranker.npz"
    with np.load(path) as saved:
        arrays = {name: saved[name] for name in saved.files}
    arrays["n_movies"] = np.asarray(int(arrays["n_movies"]) + 1)
    with path.open("wb") as f:
        np.savez(f, **arrays)


def _fewer_ratings(out: Path) -> None:
    path = out / "dataset" / "ratings.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 10), path)


def _tags_of_another_version(out: Path) -> None:
    pq.write_table(pa.table({"a": [1], "b": ["x"]}), out / "dataset" / "tags.parquet")


def _fewer_predictions(out: Path) -> None:
    path = out / "parts" / "predictions-00000-of-00001.parquet"
    table = pq.read_table(path)
    pq.write_table(table.slice(0, table.num_rows - 10), path)


def _half_of_two_shards(out: Path) -> None:
    """Shard 0 of 2 complete (a copy of the single shard), shard 1 never scored."""
    parts = out / "parts"
    for name in ("predictions", "top_k"):
        (parts / f"{name}-00000-of-00001.parquet").rename(parts / f"{name}-00000-of-00002.parquet")
    (parts / "score-00000-of-00001.json").rename(parts / "score-00000-of-00002.json")


def _database_of_another_run(out: Path) -> None:
    import duckdb

    with duckdb.connect(str(out / "recommendations.duckdb")) as con:
        con.execute("UPDATE runs SET run_id = '20250101T000000Z-0ther000'")


def _database_without_runs(out: Path) -> None:
    import duckdb

    with duckdb.connect(str(out / "recommendations.duckdb")) as con:
        con.execute("DROP TABLE runs")


def _site_of_another_run(out: Path) -> None:
    index = out / "site" / "index.html"
    run_id = json.loads((out / "run.json").read_text())["run_id"]
    index.write_text(index.read_text().replace(run_id, "20250101T000000Z-0ther000"))


def _out_is_a_file(out: Path) -> None:
    shutil.rmtree(out)
    out.write_text("not a folder\n")


# (case, stage, damage, what the line must say)
CASES: list[tuple[str, str, Damage, str]] = [
    (
        "no run folder",
        "score",
        lambda out: shutil.rmtree(out),
        "no trained run here (no such folder)",
    ),
    ("--out is a file", "score", _out_is_a_file, "no trained run here (not a folder)"),
    ("run.json missing", "score", _remove("run.json"), "no trained run here (no run.json)"),
    ("run.json empty", "score", _on("run.json", empty), "run.json: empty, probably truncated"),
    ("run.json truncated", "score", _on("run.json", truncate), "run.json: not valid JSON"),
    (
        "run.json not an object",
        "score",
        _edit_json("run.json", lambda r: [r]),
        "not a run manifest",
    ),
    (
        "run.json without dataset",
        "score",
        _edit_json("run.json", lambda r: _without(r, "dataset")),
        "incomplete or damaged manifest (KeyError: 'dataset')",
    ),
    (
        "run.json with a wrong type",
        "score",
        _edit_json("run.json", lambda r: {**r, "dataset": {**r["dataset"], "n_users": "50"}}),
        "dataset.n_users is '50'",
    ),
    (
        "run.json of an older job",
        "merge",
        _edit_json("run.json", lambda r: _without(r, "format")),
        "written by another version of the job (format 1",
    ),
    ("model missing", "score", _remove("model.keras"), "model.keras: missing"),
    ("model empty", "score", _on("model.keras", empty), "model.keras: empty"),
    ("model truncated", "score", _on("model.keras", truncate), "not a whole Keras archive"),
    ("model corrupt", "recommend", _on("model.keras", scramble_middle), "model.keras: damaged"),
    ("model of another run", "score", _model_of_another_run, "a model of 51 users x 80 movies"),
    (
        "ranker truncated",
        "score",
        _ranked_by_ease(_on("ranker.npz", truncate)),
        "ranker.npz: damaged, not a whole NumPy archive",
    ),
    (
        "ranker missing",
        "score",
        _ranked_by_ease(_remove("ranker.npz")),
        "ranker.npz: missing",
    ),
    (
        "ranker of another run",
        "recommend",
        _ranked_by_ease(_ranker_of_another_run),
        "a ranker of 81 movies",
    ),
    (
        "also_liked truncated",
        "merge",
        _on("also_liked.parquet", truncate),
        "also_liked.parquet: not a readable Parquet file",
    ),
    (
        "links corrupt",
        "merge",
        _on("dataset/links.parquet", garbage),
        "links.parquet: not a readable Parquet file",
    ),
    ("encoding missing", "score", _remove("encoding.json"), "encoding.json: missing"),
    ("encoding truncated", "recommend", _on("encoding.json", truncate), "not valid JSON"),
    (
        "encoding of another run",
        "score",
        _edit_json("encoding.json", lambda r: {**r, "user_ids": r["user_ids"][:-1]}),
        "49 users and 80 movies, but run.json says 50 and 80",
    ),
    (
        "encoding of another shape",
        "merge",
        _edit_json("encoding.json", lambda r: {"users": r["user_ids"]}),
        "encoding.json: damaged (no user_ids",
    ),
    ("dataset missing", "score", _remove("dataset"), "ratings.parquet: missing"),
    (
        "ratings truncated",
        "score",
        _on("dataset/ratings.parquet", truncate),
        "ratings.parquet: not a readable Parquet file",
    ),
    (
        "movies corrupt",
        "merge",
        _on("dataset/movies.parquet", garbage),
        "movies.parquet: not a readable Parquet file",
    ),
    ("ratings of another run", "score", _fewer_ratings, "740 ratings, but run.json says 750"),
    ("tags of another version", "merge", _tags_of_another_version, "tags.parquet: no column"),
    (
        "similar truncated",
        "merge",
        _on("similar.parquet", truncate),
        "similar.parquet: not a readable Parquet file",
    ),
    ("no parts", "merge", _remove("parts"), "parts: no scored parts"),
    (
        "part truncated",
        "merge",
        _on("parts/predictions-00000-of-00001.parquet", truncate),
        "predictions-00000-of-00001.parquet: not a readable Parquet file",
    ),
    (
        "part pages corrupt",
        "merge",
        _on("parts/predictions-00000-of-00001.parquet", scramble_parquet_pages),
        "predictions-00000-of-00001.parquet: damaged (",
    ),
    (
        "part summary truncated",
        "merge",
        _on("parts/score-00000-of-00001.json", truncate),
        "score-00000-of-00001.json: not valid JSON",
    ),
    (
        "parts of another run",
        "merge",
        _edit_json("parts/score-00000-of-00001.json", lambda r: {**r, "run_id": "old"}),
        "scored for run old",
    ),
    (
        "part and summary disagree",
        "merge",
        _fewer_predictions,
        "3240 rows, but score-00000-of-00001.json says 3250",
    ),
    ("a shard missing", "merge", _half_of_two_shards, "shard(s) 1/2 missing or unfinished"),
    ("database missing", "render", _remove("recommendations.duckdb"), "duckdb: missing"),
    ("database empty", "render", _on("recommendations.duckdb", empty), "duckdb: empty"),
    (
        "database truncated",
        "render",
        _on("recommendations.duckdb", truncate),
        "not a readable DuckDB database",
    ),
    (
        "database corrupt",
        "publish",
        _on("recommendations.duckdb", garbage),
        "not a readable DuckDB",
    ),
    (
        "database of another run",
        "render",
        _database_of_another_run,
        "holds 20250101T000000Z-0ther000, but",
    ),
    (
        "database of an older job",
        "publish",
        _database_without_runs,
        "no runs table (made by another version",
    ),
    ("site missing", "publish", _remove("site"), "site/index.html: missing"),
    ("site of another run", "publish", _site_of_another_run, "rendered for another run"),
    ("run.json truncated", "publish", _on("run.json", truncate), "run.json: not valid JSON"),
    ("--out is a file", "train", _out_is_a_file, "not a folder; choose another --out"),
]


def _argv(stage: str, out: Path, target: Path, data: Path) -> list[str]:
    if stage == "publish":
        return ["-q", "publish", str(out), str(target)]
    if stage == "recommend":
        return ["-q", "recommend", "--out", str(out), "--user", "1"]
    if stage == "train":
        return ["-q", "train", "--data", str(data), "--out", str(out), "--preset", "seed"]
    extra = ["--top-k", "5"] if stage == "score" else []
    return ["-q", stage, "--out", str(out), *extra]


@pytest.mark.parametrize(
    ("case", "stage", "damage", "says"),
    CASES,
    ids=[f"{stage}: {case}" for case, stage, _, _ in CASES],
)
def test_damaged_folder_is_one_line_and_nothing_written(
    case: str,
    stage: str,
    damage: Damage,
    says: str,
    full_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out, target = tmp_path / "out", tmp_path / "published"
    shutil.copytree(full_run, out)
    damage(out)
    before = snapshot(out)
    capsys.readouterr()

    data = Path(json.loads((full_run / "run.json").read_text())["config"]["data"])
    code = main(_argv(stage, out, target, data))

    err = capsys.readouterr().err
    line = one_error_line(err)
    record(case, stage, line, code, out, target)
    assert code == 1, err
    assert says in line, line
    assert str(out) in line, "the line names the file or folder"
    if stage != "train":
        assert "`python -m job " in line, "the line names the command that remakes it"
    assert snapshot(out) == before, "a refused stage wrote nothing"
    assert not target.exists()


def test_every_stage_checks_through_require() -> None:
    """One place checks a stage's inputs: job.runfolder.preflight has a check for every stage after
    train, and each stage's module calls require (train: require_new_run)."""
    from job.runfolder.preflight import CHECKS, STAGES

    sources = {
        "train": "job/stages/train.py",
        "score": "job/stages/score.py",
        "recommend": "job/stages/recommend.py",
        "merge": "job/stages/merge.py",
        "render": "job/site/render.py",
        "publish": "job/cli.py",
    }
    root = Path(__file__).resolve().parents[1]
    assert set(sources) == set(STAGES) == {"train", *CHECKS}
    assert "require_new_run(" in (root / sources.pop("train")).read_text()
    for stage, source in sources.items():
        assert CHECKS[stage], f"no checks for {stage}"
        text = (root / source).read_text()
        assert f'require(args.out, "{stage}")' in text or f'require(out, "{stage}")' in text, (
            f"{source} does not call require(..., {stage!r})"
        )


# ---------------------------------------------------------------------------------------
# Re-runs into folders that earlier runs left behind: a correct result


def test_train_again_into_a_damaged_folder(
    full_run: Path, tiny_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """train into a folder of a damaged earlier run, with a killed writer's temporaries:
    a complete new run, none of the old one's later outputs, no temporaries."""
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    truncate(out / "model.keras")
    (out / "run.json").write_text("{")
    dead_temporary(out / "model.keras", ".keras").write_bytes(b"half")
    (out / ".dataset.0abc1234.tmp").mkdir()  # an older version's temporary
    (out / rf.RANKER_FILE).write_bytes(b"an earlier ease-ranked run's")  # seed makes none
    data = Path(json.loads((tiny_run / "run.json").read_text())["config"]["data"])

    code = main(
        ["-q", "train", "--data", str(data), "--out", str(out), "--preset", "seed", "--epochs", "1"]
    )

    record("train again into a damaged folder", "train", "(a new complete run)", code)
    assert code == 0, capsys.readouterr().err
    assert not temporaries(out)
    assert {p.name for p in out.iterdir()} == {
        rf.RUN_JSON,
        rf.MODEL_FILE,
        rf.ENCODING_FILE,
        rf.HISTORY_FILE,
        rf.METRICS_FILE,
        rf.SIMILAR_FILE,
        rf.ALSO_LIKED_FILE,
        rf.DATASET_DIR,
    }, "the train outputs, none of the earlier run's later ones"
    assert main(["-q", "score", "--out", str(out), "--top-k", "5"]) == 0
    assert main(["-q", "merge", "--out", str(out)]) == 0


def test_score_again_over_parts_of_another_run(
    full_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """score into a folder holding another run's 2-shard parts and a dead temporary: the
    stale parts go, the new part is whole, merge builds the same tables."""
    out = tmp_path / "out"
    shutil.copytree(full_run, out)
    parts = out / "parts"
    for i in range(2):
        for name in ("predictions", "top_k"):
            shutil.copy(
                parts / f"{name}-00000-of-00001.parquet", parts / f"{name}-{i:05d}-of-00002.parquet"
            )
        summary = json.loads((parts / "score-00000-of-00001.json").read_text())
        (parts / f"score-{i:05d}-of-00002.json").write_text(
            json.dumps({**summary, "run_id": "old"})
        )
    dead_temporary(parts / "top_k-00000-of-00001.parquet", ".parquet").write_bytes(b"x")
    before = pd.read_parquet(parts / "predictions-00000-of-00001.parquet")

    code = main(["-q", "score", "--out", str(out), "--top-k", "5"])

    record(
        "score again over another run's parts",
        "score",
        "(stale parts removed, a correct result)",
        code,
    )
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in parts.iterdir()) == [
        "predictions-00000-of-00001.parquet",
        "score-00000-of-00001.json",
        "top_k-00000-of-00001.parquet",
    ]
    pd.testing.assert_frame_equal(
        pd.read_parquet(parts / "predictions-00000-of-00001.parquet"), before
    )
    assert main(["-q", "merge", "--out", str(out)]) == 0
