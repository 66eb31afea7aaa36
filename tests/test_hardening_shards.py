"""Concurrent shards on one folder (issue 15): N ``score --shard I/N`` processes started at
once on one run folder, as AWS Batch array jobs on a shared file system do, all finish;
their parts are whole; ``merge`` builds the same tables as one process.

The folder also holds another run's parts, of this shard count and of another: each shard
removes its own stale files and the other count's, and no process deletes what another
has just written (the race ``remove_stale_parts`` once had).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from hardening import CLI, ROOT, record, subprocess_env, temporaries

from job.cli import main
from job.core.layout import part_path, summary_path
from job.runfolder.preflight import require

N = 4


def _stale_parts(parts: Path, scored_run: Path, count: int) -> None:
    """``count`` shards' parts of another run (copies of scored_run's one shard)."""
    one = scored_run / "parts"
    summary = json.loads(summary_path(one, 0, 1).read_text())
    for i in range(count):
        for table in ("predictions", "top_k"):
            shutil.copy(part_path(one, table, 0, 1), part_path(parts, table, i, count))
        summary_path(parts, i, count).write_text(json.dumps({**summary, "run_id": "old"}))


def query(out: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(out / "recommendations.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def test_concurrent_shards_merge_to_the_single_process_tables(
    tiny_run: Path, scored_run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("parts", "parquet", "*.duckdb"))
    parts = out / "parts"
    parts.mkdir()
    _stale_parts(parts, scored_run, 1)
    _stale_parts(parts, scored_run, N)

    started = time.monotonic()
    processes = [
        subprocess.Popen(
            [*CLI, "-q", "score", "--out", str(out), "--shard", f"{i}/{N}", "--top-k", "5"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
        )
        for i in range(N)
    ]
    results = [p.communicate(timeout=300) for p in processes]
    seconds = time.monotonic() - started

    for i, (process, (_, err)) in enumerate(zip(processes, results, strict=True)):
        assert process.returncode == 0, f"shard {i}/{N}: {err}"
        assert "Traceback" not in err
    assert sorted(p.name for p in parts.iterdir()) == sorted(
        name
        for i in range(N)
        for name in (
            part_path(parts, "predictions", i, N).name,
            part_path(parts, "top_k", i, N).name,
            summary_path(parts, i, N).name,
        )
    ), "each shard's three files, nothing stale, no temporaries"
    assert not temporaries(out)
    require(out, "merge")  # every part whole, of this run, rows as its summary says
    summaries = [json.loads(summary_path(parts, i, N).read_text()) for i in range(N)]
    assert min(s["users"] for s in summaries) > 0

    capsys.readouterr()
    assert main(["-q", "merge", "--out", str(out)]) == 0, capsys.readouterr().err
    rows = {}
    for table, order in (("predictions", "user_id, movie_id"), ("top_k", "user_id, rank")):
        sql = f"SELECT * FROM {table} ORDER BY {order}"
        sharded, single = query(out, sql), query(scored_run, sql)
        pd.testing.assert_frame_equal(sharded, single)
        rows[table] = len(sharded)
    figures = (
        f"{N} processes at once in {seconds:.1f} s: {rows['predictions']:,} predictions and "
        f"{rows['top_k']:,} top_k rows, equal to one process"
    )
    print(figures)
    record(f"{N} shards at once on one folder", "score + merge", f"({figures})", 0)


def test_a_shard_never_removes_another_shards_fresh_part(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving the subprocess test can only hope to hit: shard 1 has renamed its new
    part into place but not yet replaced its stale summary when shard 0 starts. Shard 0
    removes its own stale files and the other count's, never shard 1's; and a stale file
    another process removed first is no error."""
    from job.stages.parts import remove_stale_parts

    parts = tmp_path / "parts"
    parts.mkdir()
    _stale_parts(parts, scored_run, 1)
    _stale_parts(parts, scored_run, 2)
    fresh = part_path(parts, "predictions", 1, 2)
    fresh.write_bytes(b"shard 1's new part")  # its summary still says run "old"
    gone = part_path(parts, "top_k", 0, 1)
    unlink = Path.unlink

    def raced(self: Path, missing_ok: bool = False) -> None:
        if self == gone:
            unlink(self)
            raise FileNotFoundError(self)  # another shard's process removed it first
        unlink(self, missing_ok=missing_ok)

    monkeypatch.setattr(Path, "unlink", raced)
    removed = remove_stale_parts(parts, "new", (0, 2))

    assert sorted(p.name for p in removed) == [
        "predictions-00000-of-00001.parquet",
        "predictions-00000-of-00002.parquet",
        "score-00000-of-00001.json",
        "score-00000-of-00002.json",
        "top_k-00000-of-00002.parquet",
    ]
    assert fresh.read_bytes() == b"shard 1's new part"
    assert sorted(p.name for p in parts.iterdir()) == [
        "predictions-00001-of-00002.parquet",
        "score-00001-of-00002.json",
        "top_k-00001-of-00002.parquet",
    ]
    record("a shard starts while another writes", "score", "(the other's new part is kept)", 0)
