"""Scored parts: one Parquet file per table and shard, streamed block by block.

The score stage writes them (``parts/``); the merge stage finds the complete set, checks it
belongs together and builds the tables users query from it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from job.core.errors import JobError
from job.core.files import atomic_path, read_json
from job.core.layout import (
    PART_FILE,
    part_path,
    summary_path,
)

log = logging.getLogger(__name__)

PREDICTIONS_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("movie_id", pa.int64()),
        ("predicted_rating", pa.float32()),
        ("score", pa.float32()),
        ("cold_start", pa.bool_()),
    ]
)
TOP_K_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("rank", pa.int32()),
        ("movie_id", pa.int64()),
        ("predicted_rating", pa.float32()),
        ("score", pa.float32()),
        ("because_movie_id", pa.int64()),
        ("cold_start", pa.bool_()),
    ]
)
# Rows per Parquet row group: DuckDB reads row groups in parallel; a group this size
# compresses well and stays small to hold (docs/benchmarks.md, "Design measurements").
ROW_GROUP_ROWS = 1 << 20


class PartWriter:
    """Appends column arrays to an open Parquet file, in row groups of ``row_group_rows``."""

    def __init__(self, writer: pq.ParquetWriter, schema: pa.Schema, row_group_rows: int) -> None:
        self.writer = writer
        self.schema = schema
        self.row_group_rows = row_group_rows
        self.buffer: list[pa.RecordBatch] = []
        self.buffered = 0
        self.rows = 0

    def write(self, columns: Mapping[str, np.ndarray]) -> None:
        """Append rows; ``columns`` holds (at least) every column of the schema."""
        batch = pa.record_batch(
            [
                column
                if isinstance(column := columns[f.name], pa.Array)
                else pa.array(column, f.type)
                for f in self.schema
            ],
            schema=self.schema,
        )
        self.buffer.append(batch)
        self.buffered += batch.num_rows
        self.rows += batch.num_rows
        if self.buffered >= self.row_group_rows:
            self.flush()

    def flush(self) -> None:
        if self.buffer:
            table = pa.Table.from_batches(self.buffer, schema=self.schema)
            self.writer.write_table(table, row_group_size=self.row_group_rows)
        self.buffer, self.buffered = [], 0


@contextlib.contextmanager
def parquet_part(
    path: Path, schema: pa.Schema, row_group_rows: int = ROW_GROUP_ROWS
) -> Iterator[PartWriter]:
    """A zstd Parquet file written in pieces; it appears under ``path`` only if all went well."""
    with atomic_path(path) as tmp:
        writer = pq.ParquetWriter(tmp, schema, compression="zstd")
        try:
            part = PartWriter(writer, schema, row_group_rows)
            yield part
            part.flush()
        finally:
            writer.close()


def remove_stale_parts(
    parts: Path, run_id: str, shard: tuple[int, int] | None = None
) -> list[Path]:
    """Delete the parts of shards scored for another (older) trained run; return them.

    They can never be merged with this run, and leaving them would make ``merge`` see a mix.
    A shard ``(index, count)`` scoring now leaves the other shards of its count alone: their
    own processes may be replacing them at this moment (shards started at once on one
    folder), and each replaces its own.
    """
    removed: list[Path] = []
    for summary in sorted(parts.glob("score-*-of-*.json")):
        match = PART_FILE.match(summary.name)
        if not match or _summary_run_id(summary) == run_id:
            continue
        index, count = int(match.group(2)), int(match.group(3))
        if shard is not None and count == shard[1] and index != shard[0]:
            continue
        for path in (
            summary,
            part_path(parts, "predictions", index, count),
            part_path(parts, "top_k", index, count),
        ):
            try:  # another shard's process may be removing the same stale files
                path.unlink()
            except FileNotFoundError:
                continue
            removed.append(path)
    return removed


def _summary_run_id(path: Path) -> str | None:
    try:
        return str(read_json(path).get("run_id"))
    except (JobError, OSError, ValueError, AttributeError):
        return None


@dataclass(frozen=True)
class Parts:
    """Every shard's parts of one scored run, in shard order."""

    count: int
    predictions: list[Path]
    top_k: list[Path]
    summaries: list[dict[str, Any]]


def find_parts(parts: Path, run_id: str) -> Parts:
    """The complete set of parts in ``parts``, checked to belong together.

    Raises:
        JobError: no parts; parts of different shard counts; a shard missing; parts scored
            for another run or with different flags.
    """
    out = parts.parent
    found: dict[int, set[tuple[str, int]]] = {}
    for path in parts.glob("*") if parts.is_dir() else []:
        match = PART_FILE.match(path.name)
        if match:
            found.setdefault(int(match.group(3)), set()).add((match.group(1), int(match.group(2))))
    if not found:
        raise JobError(f"{parts}: no scored parts; run `python -m job score --out {out}` first")
    if len(found) > 1:
        counts = sorted(found)
        raise JobError(
            f"{parts}: parts of different shard counts ({', '.join(map(str, counts))}) "
            f"are mixed; delete the stale ones (e.g. {parts}/*-of-{counts[0]:05d}.*) "
            "and merge again"
        )
    ((count, present),) = found.items()
    kinds = ("predictions", "top_k", "score")
    missing = [i for i in range(count) if any((kind, i) not in present for kind in kinds)]
    if missing:
        listed = ", ".join(f"{i}/{count}" for i in missing[:5]) + (
            ", ..." if len(missing) > 5 else ""
        )
        raise JobError(
            f"{parts}: shard(s) {listed} missing or unfinished; run "
            f"`python -m job score --out {out} --shard {missing[0]}/{count}` for each, "
            "then merge"
        )
    summaries = [read_json(summary_path(parts, i, count)) for i in range(count)]
    for i, summary in enumerate(summaries):
        if summary.get("run_id") != run_id:
            raise JobError(
                f"{summary_path(parts, i, count)}: scored for run {summary.get('run_id')}, "
                f"but {out} holds run {run_id}; score it again"
            )
        settings = (summary.get("top_k"), summary.get("keep_top"))
        first = (summaries[0].get("top_k"), summaries[0].get("keep_top"))
        if settings != first:
            raise JobError(
                f"{parts}: shards scored with different --top-k/--keep-top ({first} and "
                f"{settings} in shard {i}/{count}); score every shard with the same flags"
            )
    return Parts(
        count=count,
        predictions=[part_path(parts, "predictions", i, count) for i in range(count)],
        top_k=[part_path(parts, "top_k", i, count) for i in range(count)],
        summaries=summaries,
    )
