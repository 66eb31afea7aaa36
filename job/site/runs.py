"""The Runs page and each run's "what changed" section: what render knows, and what the
pages read when a visitor opens them.

A run's site is rendered before it is published and never changes after, so it cannot know
the runs that come after it, nor, on a fresh runner, the ones before it. Publish keeps the
index of the kept runs at the bucket's prefix (``runs.json``, ``job.publish.runsindex``):
for each run its summary and what changed against the run before it. ``static/runs.js``
reads it by relative URL (``RUNS_INDEX_URL``) when the page opens, and fills the tables, the
chart and the index page's "what changed" section. Opened from a folder (``file://``, where
browsers refuse to fetch), or where there is no index, the pages show this run alone, from
what render writes here, and say so.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from job.core.baselines import BASELINE_NAMES
from job.site.data import SiteData

# From the site's root folder: the bucket's layout is PREFIX/runs/RUN_ID/site/, and the
# index is PREFIX/runs.json.
RUNS_INDEX_URL = "../../../runs.json"
# The model's metrics each run shows, as run.json's metrics rows (and runs.json) name them.
SUMMARY_METRICS = ("rmse", "mae", "ndcg_at_10", "coverage_at_10")


def this_run(data: SiteData) -> dict[str, Any]:
    """This run as the runs index describes a run: id, time, dataset, preset and the model's
    metrics (None where there is none)."""
    preset = data.model.get("preset")
    rows: list[Mapping[str, Any]] = [r for r in data.metrics if r.get("model") == preset]
    rows += [r for r in data.metrics if r.get("model") not in BASELINE_NAMES]
    row = rows[0] if rows else {}
    return {
        "run_id": data.run.get("run_id"),
        "created_at": data.run.get("created_at"),
        "dataset": data.run.get("dataset"),
        "preset": preset,
        **{name: _number(row.get(name)) for name in SUMMARY_METRICS},
    }


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number == number and abs(number) != float("inf") else None
