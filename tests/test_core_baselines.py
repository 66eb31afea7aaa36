"""job.core.baselines: the baseline names are the rows job.stages.evaluate writes beside the model's."""

from __future__ import annotations

import json
from pathlib import Path

from job.core.baselines import BASELINE_NAMES, EASE, POPULARITY
from job.site.chart import best_baseline


def test_names_are_distinct_and_include_the_ranking_baselines() -> None:
    assert len(set(BASELINE_NAMES)) == len(BASELINE_NAMES)
    assert POPULARITY in BASELINE_NAMES and EASE in BASELINE_NAMES


def test_evaluate_writes_one_row_per_baseline_after_the_model(tiny_run: Path) -> None:
    manifest = json.loads((tiny_run / "run.json").read_text())
    models = [row["model"] for row in manifest["metrics"]["rows"]]
    assert models[1:] == list(BASELINE_NAMES)  # the model's own row comes first
    assert models[0] not in BASELINE_NAMES
    # The site's chart finds its baseline among them by these names.
    found = best_baseline(manifest["metrics"]["rows"])
    assert found is not None and found[0] in BASELINE_NAMES[:3]  # a rating baseline has an MAE
