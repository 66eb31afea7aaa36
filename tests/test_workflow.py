"""job/workflow.py: the shard plan and the two job summaries that run.yml's steps print.

The summaries are built from a real scored and merged run's run.json (``scored_run``); the
commands are run as the workflow runs them, `python -m job ... >> FILE`. The workflow itself
is executed in tests/test_workflow_executed.py.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from job.cli import main
from job.core.errors import ConfigError
from job.core.layout import RUN_JSON
from job.runfolder.manifest import Manifest, read_manifest
from job.workflow import (
    MAX_SHARDS,
    github_output,
    metrics_table,
    publish_summary,
    run_summary,
    shard_plan,
)

ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "20250101T000000Z-abc"


def _manifest(scored_run: Path, **changes: Any) -> Manifest:
    raw = json.loads((scored_run / RUN_JSON).read_text(encoding="utf-8"))
    raw.update(changes)
    return Manifest.from_dict(raw, scored_run / RUN_JSON)


def _table_rows(text: str) -> list[list[str]]:
    """The cells of every Markdown table row, the separator row left out."""
    rows = []
    for line in text.splitlines():
        if line.startswith("|") and not re.fullmatch(r"\|(-+:?\|)+", line):
            rows.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return rows


# ---------------------------------------------------------------------------------------------
# The shard plan


@pytest.mark.parametrize("shards", [1, 2, 16])
def test_shard_plan_is_every_index_once(shards: int) -> None:
    assert shard_plan(shards) == list(range(shards))


@pytest.mark.parametrize("shards", [0, -1, MAX_SHARDS + 1])
def test_shard_plan_refuses_what_a_matrix_cannot_run(shards: int) -> None:
    with pytest.raises(
        ConfigError, match=rf"--shards must be between 1 and {MAX_SHARDS} \(got {shards}\)"
    ):
        shard_plan(shards)


def test_github_output_is_one_line_that_fromjson_reads() -> None:
    line = github_output("shards", [0, 1, 2])
    assert line == "shards=[0,1,2]"
    name, value = line.split("=", 1)
    assert name == "shards" and json.loads(value) == [0, 1, 2]


# ---------------------------------------------------------------------------------------------
# The site job's summary


def test_metrics_table_has_a_row_per_model_and_leaves_out_empty_columns() -> None:
    rows: list[dict[str, Any]] = [
        {"model": "tuned", "rmse": 0.87126, "mae": 0.66, "n": 100, "accuracy": None},
        {"model": "global|mean", "rmse": 1.04, "mae": 0.83, "n": 100, "accuracy": None},
        {"model": "popularity", "rmse": None, "mae": None, "n": 100, "accuracy": None},
    ]
    table = metrics_table(rows)
    cells = _table_rows("\n".join(table))
    assert cells[0] == ["model", "rmse", "mae", "n"], "accuracy is empty in every row"
    assert cells[1] == ["tuned", "0.8713", "0.6600", "100"]
    assert cells[2][0] == "global\\|mean", "a | in a cell would split it"
    assert cells[3] == ["popularity", "", "", "100"]
    assert len(table) == 2 + len(rows)


def test_run_summary_of_a_real_run(scored_run: Path) -> None:
    manifest = read_manifest(scored_run)
    text = run_summary(manifest, "cpu")
    assert text.startswith(f"## Run {manifest.run_id}\n")
    assert f"preset `{manifest.model.preset}`" in text
    assert f"{manifest.model.epochs_run} epoch(s) on the cpu runner" in text
    scoring = manifest.extra["scoring"]
    assert f"in {scoring['shards']} shard(s): top {scoring['top_k']} per user" in text
    assert f"Metrics on the {manifest.metrics['evaluated_on']} ratings:" in text
    cells = _table_rows(text)
    assert cells[0][:3] == ["model", "rmse", "mae"]
    assert [row[0] for row in cells[1:]] == [r["model"] for r in manifest.metrics["rows"]]
    for row, metrics in zip(cells[1:], manifest.metrics["rows"], strict=True):
        if metrics["rmse"] is not None:
            assert row[1] == f"{metrics['rmse']:.4f}"
    assert "`results` artifact" in text


def test_run_summary_without_scoring_or_runner(scored_run: Path) -> None:
    raw = json.loads((scored_run / RUN_JSON).read_text(encoding="utf-8"))
    raw.pop("scoring")
    text = run_summary(Manifest.from_dict(raw, scored_run / RUN_JSON))
    assert "shard(s)" not in text and "runner" not in text
    assert "| model |" in text


def test_run_summary_names_kept_predictions(scored_run: Path) -> None:
    raw = json.loads((scored_run / RUN_JSON).read_text(encoding="utf-8"))
    raw["scoring"] = {**raw["scoring"], "keep_top": 20, "shards": 2}
    text = run_summary(Manifest.from_dict(raw, scored_run / RUN_JSON))
    assert "in 2 shard(s)" in text and "20 predictions kept per user" in text


# ---------------------------------------------------------------------------------------------
# The publish job's summary


def test_publish_summary_links_the_site_and_the_run() -> None:
    text = publish_summary(RUN_ID, "s3://bucket/movielens", "https://d111.cloudfront.net/")
    assert text.splitlines() == [
        "## Published",
        "",
        "- Site: https://d111.cloudfront.net/ (always the latest run)",
        # The layout job/publish writes: PREFIX/runs/RUN_ID/site/index.html.
        f"- This run: https://d111.cloudfront.net/runs/{RUN_ID}/site/index.html",
        f"- Data: https://d111.cloudfront.net/runs/{RUN_ID}/recommendations.duckdb",
        f"- Stored under `s3://bucket/movielens/runs/{RUN_ID}/`",
    ]


def test_publish_summary_without_a_site_address_says_where_it_is_stored() -> None:
    text = publish_summary(RUN_ID, "s3://bucket/movielens/", "")
    assert f"`s3://bucket/movielens/runs/{RUN_ID}/`" in text
    assert "http" not in text and "SITE_URL" in text


# ---------------------------------------------------------------------------------------------
# The commands, as the workflow calls them


def _appended(command: str, file: Path) -> subprocess.CompletedProcess[str]:
    """`python -m job COMMAND >> FILE`, as run.yml's steps write $GITHUB_OUTPUT/_STEP_SUMMARY."""
    return subprocess.run(
        ["bash", "-ec", f'{shlex.join([sys.executable, "-m", "job"])} {command} >> "$FILE"'],
        cwd=ROOT,
        env={"PATH": "/usr/bin:/bin", "FILE": str(file), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_shard_plan_command_appends_the_output(tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n", encoding="utf-8")
    proc = _appended("shard-plan --shards 4", output)
    assert proc.returncode == 0, proc.stderr
    assert output.read_text(encoding="utf-8") == "earlier=1\nshards=[0,1,2,3]\n"


def test_shard_plan_command_refuses_a_bad_count_and_appends_nothing(tmp_path: Path) -> None:
    output = tmp_path / "github_output"
    output.write_text("earlier=1\n", encoding="utf-8")
    proc = _appended("shard-plan --shards 0", output)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"error: --shards must be between 1 and {MAX_SHARDS} (got 0); "
        f"GitHub runs at most {MAX_SHARDS} jobs from one matrix"
    ]
    assert output.read_text(encoding="utf-8") == "earlier=1\n"


def test_summary_commands_append_markdown(scored_run: Path, tmp_path: Path) -> None:
    summary = tmp_path / "summary.md"
    out = f'"{scored_run}"'
    assert _appended(f"run-summary {out} --runner gpu", summary).returncode == 0
    first = summary.read_text(encoding="utf-8")
    assert first == run_summary(read_manifest(scored_run), "gpu") + "\n"
    proc = _appended(f'publish-summary {out} s3://b/p --site-url ""', summary)
    assert proc.returncode == 0, proc.stderr
    run_id = read_manifest(scored_run).run_id
    assert summary.read_text(encoding="utf-8") == first + publish_summary(run_id, "s3://b/p") + "\n"


def test_summary_of_a_folder_without_a_run_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run-summary", str(tmp_path)]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith(f"error: {tmp_path / RUN_JSON}: not found")
