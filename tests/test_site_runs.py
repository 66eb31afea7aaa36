"""job.site.runs: what render writes of this run for the Runs page and the index's "what
changed" section (the rest comes from the bucket's runs.json at view time: test_browser.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from site_support import Page, build_fixed_run

from job import site
from job.publish.runsindex import SUMMARY_METRICS as PUBLISHED_METRICS
from job.publish.runsindex import run_summary
from job.site.runs import RUNS_INDEX_URL, SUMMARY_METRICS, this_run


@pytest.fixture(scope="module")
def fixed_run(tiny_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_fixed_run(tiny_run, tmp_path_factory.mktemp("site") / "out")


def test_this_run_is_the_presets_metrics_row(fixed_run: Path) -> None:
    data, _ = site.load_site_data(fixed_run)
    found = this_run(data)
    assert found["run_id"] == data.run["run_id"] and found["preset"] == "seed"
    assert (found["rmse"], found["mae"], found["ndcg_at_10"]) == (0.87, 0.67, 0.31)
    assert found["coverage_at_10"] is None  # the fixed run's metrics table has none


def test_the_site_and_the_runs_index_describe_a_run_alike() -> None:
    """Render reads the metrics from the database, publish from run.json: the same names."""
    assert SUMMARY_METRICS == PUBLISHED_METRICS
    assert set(run_summary({})) == {"dataset", "preset", *SUMMARY_METRICS}


def test_runs_page_shows_this_run_and_where_the_index_is(fixed_run: Path) -> None:
    html = (fixed_run / "site" / "runs.html").read_text()
    page = Page(html)
    manifest = json.loads((fixed_run / "run.json").read_text())
    rows = page.tables[0]
    assert rows[0] == ["Run", "Dataset", "Preset", "RMSE", "MAE", "nDCG@10", "Coverage@10"]
    assert rows[1][3:] == ["0.8700", "0.6700", "0.3100", "–"]
    assert "this run" in rows[1][0]
    assert f'data-index="{RUNS_INDEX_URL}"' in html
    assert f'data-run="{data_run(fixed_run)}"' in html
    assert manifest["run_id"]
    assert 'src="static/runs.js"' in html
    index = (fixed_run / "site" / "index.html").read_text()
    assert 'id="changes-summary"' in index and 'src="static/runs.js"' in index


def data_run(out: Path) -> str:
    data, _ = site.load_site_data(out)
    return str(data.run["run_id"])
