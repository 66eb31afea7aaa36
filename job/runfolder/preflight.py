"""What each stage needs before it starts: the one place that checks a stage's inputs.

``CHECKS`` maps each stage that reads a run folder to its checks; ``require`` runs them
and returns the manifest it read, which the stage then passes down instead of reading
run.json again. Cheap checks only (sizes, Parquet footers, zip checksums, DuckDB's
catalogue, a few facts compared with run.json): they find missing, empty, truncated and
corrupt files and files of another run, in seconds whatever the run's size.
"""

from __future__ import annotations

import errno
import json
import os
import zipfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job.core.errors import JobError
from job.core.files import disk_error, read_json
from job.core.layout import (
    ALSO_LIKED_FILE,
    DATABASE_FILE,
    ENCODING_FILE,
    MODEL_FILE,
    PART_FILE,
    PARTS_DIR,
    RANKER_FILE,
    RUN_JSON,
    SIMILAR_FILE,
    SITE_INDEX,
    dataset_file,
    part_path,
    remake,
    score_command,
)
from job.runfolder.manifest import Manifest, first_line, read_manifest, train_command

Check = Callable[[Path, Manifest], None]


def require_new_run(out: Path) -> None:
    """Before train: ``out`` (or, not made yet, its nearest parent) takes writes, so a
    read-only or misnamed --out fails now, not after training."""
    _check_writable(out)


def require(out: Path, stage: str) -> Manifest:
    """Check, before ``stage`` starts, that ``out`` holds the inputs it reads, all of one run
    and of this version of the job, and (for stages that write into it) that it is writable.
    Returns the run's manifest, read once here.

    Raises:
        JobError: one line naming the file, what is wrong with it and the command that
            remakes it.
    """
    if stage not in CHECKS:
        raise ValueError(f"unknown stage {stage!r} (train checks with require_new_run)")
    manifest = _check_manifest(out)
    for check in CHECKS[stage]:
        check(out, manifest)
    return manifest


def _check_manifest(out: Path) -> Manifest:
    if not out.is_dir():
        what = "not a folder" if out.exists() else "no such folder"
        raise JobError(f"{out}: no trained run here ({what}); {train_command(out)} first")
    if not (out / RUN_JSON).exists():
        raise JobError(f"{out}: no trained run here (no {RUN_JSON}); {train_command(out)} first")
    return read_manifest(out)


def _check_nonempty(path: Path, fix: str) -> None:
    if not path.exists():
        raise JobError(f"{path}: missing; {fix}")
    if not path.is_file():
        raise JobError(f"{path}: not a file; {fix}")
    if path.stat().st_size == 0:
        raise JobError(f"{path}: empty, probably an interrupted write; {fix}")


def _check_parquet(path: Path, fix: str, columns: tuple[str, ...] = ()) -> Any:
    """A Parquet file whose footer reads (a truncated file has none); returns its metadata."""
    import pyarrow.parquet as pq

    _check_nonempty(path, fix)
    try:
        metadata = pq.read_metadata(path)
    except (OSError, ValueError) as exc:
        raise JobError(f"{path}: not a readable Parquet file ({first_line(exc)}); {fix}") from None
    missing = [c for c in columns if c not in metadata.schema.names]
    if missing:
        raise JobError(f"{path}: no column {', '.join(missing)} (another version's file?); {fix}")
    return metadata


DATASET_COLUMNS = {
    "ratings": ("user_id", "movie_id", "rating", "timestamp", "split"),
    "movies": ("movie_id", "title", "genres"),
    "tags": ("movie_id", "tag"),
}


def _check_train_outputs(out: Path, manifest: Manifest) -> None:
    """model.keras, encoding.json and dataset/ of the train stage that wrote run.json."""
    fix = train_command(out, manifest)
    facts = manifest.dataset
    _check_model_files(out, manifest, fix)
    for table, columns in DATASET_COLUMNS.items():
        path = dataset_file(out, table)
        metadata = _check_parquet(path, fix, columns)
        if table == "ratings" and metadata.num_rows != facts.n_ratings:
            raise JobError(
                f"{path}: {metadata.num_rows} ratings, but {RUN_JSON} says {facts.n_ratings} "
                f"(a file of another run?); {fix}"
            )
    if manifest.ranker == "ease":  # a preset that ranks by predicted rating has none
        _check_ranker(out / RANKER_FILE, manifest, fix)


WARM_START_FIX = "point --warm-start at another run folder, or train without it"


def require_previous_run(folder: Path) -> Manifest:
    """Before train with ``--warm-start FOLDER``: the run it names (a run folder, or one
    downloaded by ``pull-latest``) has a whole run.json, model.keras and encoding.json, all
    of one run. Returns its manifest.

    Raises:
        JobError: one line naming the file and what is wrong with it.
    """
    if not folder.is_dir():
        what = "not a folder" if folder.exists() else "no such folder"
        raise JobError(f"--warm-start {folder}: no run to start from ({what}); {WARM_START_FIX}")
    if not (folder / RUN_JSON).exists():
        raise JobError(f"{folder}: no run to start from (no {RUN_JSON}); {WARM_START_FIX}")
    manifest = read_manifest(folder)
    _check_model_files(folder, manifest, WARM_START_FIX)
    return manifest


def _check_model_files(out: Path, manifest: Manifest, fix: str) -> None:
    """model.keras and encoding.json, whole and made for run.json's users and movies."""
    facts = manifest.dataset
    _check_model(out / MODEL_FILE, manifest, fix)
    encoding = out / ENCODING_FILE
    _check_nonempty(encoding, fix)
    raw = read_json(encoding, fix)
    if not isinstance(raw, dict) or not all(
        isinstance(raw.get(k), list) and all(isinstance(i, int) for i in raw[k])
        for k in ("user_ids", "movie_ids")
    ):
        raise JobError(f"{encoding}: damaged (no user_ids and movie_ids lists of ids); {fix}")
    sizes = (len(raw["user_ids"]), len(raw["movie_ids"]))
    if sizes != (facts.n_users, facts.n_movies):
        raise JobError(
            f"{encoding}: {sizes[0]} users and {sizes[1]} movies, but {RUN_JSON} says "
            f"{facts.n_users} and {facts.n_movies} (a file of another run?); {fix}"
        )


def _check_ranker(path: Path, manifest: Manifest, fix: str) -> None:
    """A whole NumPy archive (every member's CRC) of this run's catalogue."""
    import numpy as np

    _check_nonempty(path, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
        if broken is None:
            with np.load(path) as saved:
                n_movies = int(saved["n_movies"])
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as exc:
        raise JobError(
            f"{path}: damaged, not a whole NumPy archive ({first_line(exc)}); {fix}"
        ) from None
    if broken is not None:
        raise JobError(f"{path}: damaged ({broken} fails its checksum); {fix}")
    if n_movies != manifest.dataset.n_movies:
        raise JobError(
            f"{path}: a ranker of {n_movies} movies, but {RUN_JSON} says "
            f"{manifest.dataset.n_movies} (a file of another run?); {fix}"
        )


def _check_model(path: Path, manifest: Manifest, fix: str) -> None:
    """A whole Keras archive (every member's CRC) made for this run's users and movies."""
    _check_nonempty(path, fix)
    try:
        with zipfile.ZipFile(path) as archive:
            broken = archive.testzip()
            config = json.loads(archive.read("config.json")) if broken is None else None
    except (zipfile.BadZipFile, zlib.error, EOFError, KeyError, ValueError, OSError) as exc:
        raise JobError(
            f"{path}: damaged, not a whole Keras archive ({first_line(exc)}); {fix}"
        ) from None
    if broken is not None:
        raise JobError(f"{path}: damaged ({broken} fails its checksum); {fix}")
    inner = config.get("config") if isinstance(config, dict) else None
    if isinstance(inner, dict):
        sizes = (inner.get("n_users"), inner.get("n_movies"))
        expected = (manifest.dataset.n_users, manifest.dataset.n_movies)
        if None not in sizes and sizes != expected:
            raise JobError(
                f"{path}: a model of {sizes[0]} users x {sizes[1]} movies, but {RUN_JSON} says "
                f"{expected[0]} x {expected[1]} (a file of another run?); {fix}"
            )


def _check_merge_inputs(out: Path, manifest: Manifest) -> None:
    """What merge reads beside the parts: the neighbour tables (and links, where there are)."""
    fix = train_command(out, manifest)
    _check_parquet(out / SIMILAR_FILE, fix)
    _check_parquet(out / ALSO_LIKED_FILE, fix)
    if dataset_file(out, "links").exists():  # older runs have none; merge copes
        _check_parquet(dataset_file(out, "links"), fix)


def _check_parts(out: Path, manifest: Manifest) -> None:
    """Every scored part whole and of this run; ``job.stages.merge.find_parts`` then checks the
    set is complete and scored with the same flags."""
    parts = out / PARTS_DIR
    found = sorted(p for p in parts.iterdir() if PART_FILE.match(p.name)) if parts.is_dir() else []
    if not found:
        raise JobError(f"{parts}: no scored parts; {score_command(out)}")
    for path in found:
        match = PART_FILE.match(path.name)
        assert match is not None
        if match.group(1) != "score":
            continue
        index, count = int(match.group(2)), int(match.group(3))
        fix = score_command(out, index, count)
        summary = read_json(path, fix)
        if not isinstance(summary, dict) or not all(
            isinstance(summary.get(k), int) for k in ("prediction_rows", "top_k_rows")
        ):
            raise JobError(f"{path}: damaged (not a shard's summary); {fix}")
        if summary.get("run_id") != manifest.run_id:
            raise JobError(
                f"{path}: scored for run {summary.get('run_id')}, but {out / RUN_JSON} is run "
                f"{manifest.run_id}; {fix}"
            )
        for table, key in (("predictions", "prediction_rows"), ("top_k", "top_k_rows")):
            part = part_path(parts, table, index, count)
            if not part.exists():
                continue  # find_parts names the missing shard
            rows = _check_parquet(part, fix).num_rows
            if rows != summary[key]:
                raise JobError(
                    f"{part}: {rows} rows, but {path.name} says {summary[key]} (an interrupted "
                    f"or mixed scoring); {fix}"
                )
    for path in found:  # parts whose shard has no summary yet: whole, at least
        if path.suffix == ".parquet":
            match = PART_FILE.match(path.name)
            assert match is not None
            _check_parquet(path, score_command(out, int(match.group(2)), int(match.group(3))))


def damaged_part(out: Path, paths: list[Path], exc: BaseException) -> JobError:
    """A part that DuckDB could not read past its footer, named by reading each in full (on
    this error path only: a whole read of every part costs as much as the merge)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    for path in paths:
        try:
            pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as damage:
            match = PART_FILE.match(path.name)
            fix = score_command(out, int(match.group(2)), int(match.group(3))) if match else ""
            return JobError(f"{path}: damaged ({first_line(damage)}); {fix}")
    return JobError(
        f"{out / PARTS_DIR}: cannot read the parts ({first_line(exc)}); {score_command(out)}"
    )


def _check_database(out: Path, manifest: Manifest) -> None:
    """recommendations.duckdb opens, and its runs table holds this run alone."""
    import duckdb

    db = out / DATABASE_FILE
    fix = remake("merge", out)
    _check_nonempty(db, fix)
    try:
        con = duckdb.connect(str(db), read_only=True)
        try:
            tables = {
                r[0] for r in con.execute("SELECT table_name FROM duckdb_tables()").fetchall()
            }
            ids = (
                {r[0] for r in con.execute("SELECT run_id FROM runs").fetchall()}
                if "runs" in tables
                else None
            )
        finally:
            con.close()
    except duckdb.Error as exc:
        raise JobError(
            f"{db}: damaged, not a readable DuckDB database ({first_line(exc)}); {fix}"
        ) from None
    if ids is None:
        raise JobError(f"{db}: no runs table (made by another version of the job?); {fix}")
    if ids != {manifest.run_id}:
        held = ", ".join(sorted(map(str, ids))) or "no run"
        raise JobError(
            f"{db}: holds {held}, but {out / RUN_JSON} is run {manifest.run_id} (merged for "
            f"another run); {fix}"
        )


def damaged_database(out: Path, exc: BaseException) -> JobError:
    """A DuckDB error while reading recommendations.duckdb, as the one line that says so."""
    return JobError(f"{out / DATABASE_FILE}: damaged ({first_line(exc)}); {remake('merge', out)}")


def _check_site(out: Path, manifest: Manifest) -> None:
    index = out / SITE_INDEX
    fix = remake("render", out)
    _check_nonempty(index, fix)
    try:
        page = index.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise JobError(f"{index}: cannot read ({first_line(exc)}); {fix}") from None
    if manifest.run_id not in page:
        raise JobError(f"{index}: rendered for another run than {manifest.run_id}; {fix}")


def _check_writable(folder: Path) -> None:
    """The folder a stage writes into (or, not made yet, its nearest parent) takes writes."""
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise JobError(f"{existing}: not a folder; choose another --out")
    if os.access(existing, os.W_OK | os.X_OK):
        return
    readonly = bool(os.statvfs(existing).f_flag & os.ST_RDONLY)
    number = errno.EROFS if readonly else errno.EACCES
    error = disk_error(OSError(number, os.strerror(number)), folder)
    assert error is not None
    raise error


def _writable_out(out: Path, manifest: Manifest) -> None:
    _check_writable(out)


def _writable_parts(out: Path, manifest: Manifest) -> None:
    _check_writable(out / PARTS_DIR)


# Each stage after train, and what it checks, in order (the first failure is reported).
CHECKS: dict[str, tuple[Check, ...]] = {
    "score": (_check_train_outputs, _writable_parts),
    "recommend": (_check_train_outputs,),
    "merge": (_check_train_outputs, _check_merge_inputs, _check_parts, _writable_out),
    "render": (_check_database, _writable_out),
    "publish": (_check_database, _check_site),
}
STAGES = ("train", *CHECKS)
