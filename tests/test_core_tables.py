"""job.core.tables: the catalogue is what merge writes, table for table and column for column."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from job.core.layout import DATABASE_FILE
from job.core.tables import CATALOG, table
from job.stages.merge import TABLES


def describe(database: Path) -> dict[str, list[tuple[str, str]]]:
    with duckdb.connect(str(database), read_only=True) as con:
        names = [name for (name,) in con.execute("SHOW TABLES").fetchall()]
        return {
            name: [(row[0], row[1]) for row in con.execute(f"DESCRIBE {name}").fetchall()]
            for name in names
        }


def test_the_catalogue_names_every_table_merge_writes() -> None:
    assert sorted(t.name for t in CATALOG) == sorted(TABLES)


def test_the_catalogue_is_the_database(scored_run: Path) -> None:
    found = describe(scored_run / DATABASE_FILE)
    assert sorted(found) == sorted(t.name for t in CATALOG)
    for entry in CATALOG:
        documented = [(c.name, c.type) for c in entry.columns]
        columns = found[entry.name]
        assert columns[: len(documented)] == documented, entry.name
        if not entry.open_ended:
            assert len(columns) == len(documented), f"{entry.name}: undocumented {columns}"


def test_table_by_name() -> None:
    assert table("top_k").column_names[:3] == ("user_id", "rank", "movie_id")
    with pytest.raises(KeyError):
        table("nope")
