"""The run folder's names: each defined once, and the part names parse back."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.core import layout


@pytest.mark.parametrize(("table", "index", "count"), [("predictions", 0, 1), ("top_k", 7, 12)])
def test_part_names_parse_back(table: str, index: int, count: int) -> None:
    parts = Path("out") / layout.PARTS_DIR
    for path, kind in (
        (layout.part_path(parts, table, index, count), table),
        (layout.summary_path(parts, index, count), "score"),
    ):
        assert path.parent == parts
        match = layout.PART_FILE.match(path.name)
        assert match is not None, path.name
        assert (match.group(1), int(match.group(2)), int(match.group(3))) == (kind, index, count)


def test_part_file_refuses_other_names() -> None:
    for name in (
        "predictions-1-of-2.parquet",
        "top_k-00001-of-00002.csv",
        "other-00000-of-00001.json",
    ):
        assert layout.PART_FILE.match(name) is None, name


def test_every_name_is_distinct_and_later_outputs_are_known() -> None:
    names = [
        getattr(layout, n)
        for n in dir(layout)
        if n.isupper() and isinstance(getattr(layout, n), str)
    ]
    assert len(names) == len(set(names)), "a name defined twice"
    assert set(layout.DOWNSTREAM_OUTPUTS) <= set(names)
    assert layout.SITE_INDEX.startswith(layout.SITE_DIR + "/")
    assert set(layout.PUBLISHED_FILES) | set(layout.PUBLISHED_DIRS) <= set(names)


def test_dataset_file_and_commands() -> None:
    out = Path("/runs/a")
    assert layout.dataset_file(out, "ratings") == out / "dataset" / "ratings.parquet"
    assert layout.remake("merge", out) == "run `python -m job merge --out /runs/a`"
    assert "--shard" not in layout.score_command(out)
    assert "--shard 2/4" in layout.score_command(out, 2, 4)
