"""The scored parts: written whole or not at all, in bounded row groups; stale ones removed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from job.core.files import write_json
from job.core.layout import part_path, summary_path
from job.stages.parts import PREDICTIONS_SCHEMA, parquet_part, remove_stale_parts


def test_parquet_part_appears_only_when_complete(tmp_path: Path) -> None:
    path = tmp_path / "parts" / "predictions-00000-of-00001.parquet"
    rows = {
        "user_id": np.array([1, 1, 2]),
        "movie_id": np.array([5, 6, 5]),
        "predicted_rating": np.array([3.5, 4.0, 2.0], "float32"),
        "score": np.array([0.3, 0.2, 0.1], "float32"),
        "cold_start": np.array([False, True, False]),
        "rank": np.array([1, 2, 1]),  # extra columns are ignored
    }
    with pytest.raises(RuntimeError), parquet_part(path, PREDICTIONS_SCHEMA) as part:
        part.write(rows)
        raise RuntimeError("scoring failed")
    assert list(path.parent.iterdir()) == []
    with parquet_part(path, PREDICTIONS_SCHEMA, row_group_rows=4) as part:
        for _ in range(3):
            part.write(rows)
    table = pq.read_table(path)
    assert table.schema == PREDICTIONS_SCHEMA and table.num_rows == 9
    groups = pq.ParquetFile(path).metadata
    sizes = [groups.row_group(i).num_rows for i in range(groups.num_row_groups)]
    assert sizes == [4, 2, 3]  # buffered to at least 4 rows, written in groups of at most 4
    assert [p.name for p in path.parent.iterdir()] == [path.name]


def fake_shard(parts: Path, index: int, count: int, run_id: str) -> None:
    parts.mkdir(parents=True, exist_ok=True)
    for table in ("predictions", "top_k"):
        part_path(parts, table, index, count).write_bytes(b"")
    write_json(summary_path(parts, index, count), {"run_id": run_id})


def test_only_another_runs_parts_go_and_a_scoring_shard_spares_its_siblings(
    tmp_path: Path,
) -> None:
    parts = tmp_path / "parts"
    fake_shard(parts, 0, 2, "new")
    fake_shard(parts, 1, 2, "old")
    fake_shard(parts, 0, 1, "old")
    # Shard 0/2 scoring now: 1/2 may be its sibling being replaced, the 1-shard run is stale.
    removed = remove_stale_parts(parts, "new", shard=(0, 2))
    assert sorted(p.name for p in removed) == [
        "predictions-00000-of-00001.parquet",
        "score-00000-of-00001.json",
        "top_k-00000-of-00001.parquet",
    ]
    removed = remove_stale_parts(parts, "new")
    assert sorted(p.name for p in removed) == [
        "predictions-00001-of-00002.parquet",
        "score-00001-of-00002.json",
        "top_k-00001-of-00002.parquet",
    ]
    assert summary_path(parts, 0, 2).exists()
