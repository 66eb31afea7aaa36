"""The templates are checked before any work; the filters format numbers, stars and metrics."""

from __future__ import annotations

import shutil
from pathlib import Path

import jinja2
import pytest

from job.core.errors import JobError
from job.site.templates import (
    check_templates,
    installed_templates,
    make_environment,
    markdown_code,
    metric_label,
    metric_value,
    stars,
)


def test_metrics_print_counts_as_integers_and_scores_to_four_places() -> None:
    assert metric_value(559, "ranked_users") == "559"
    assert metric_value(10083.0, "n") == "10,083"
    assert metric_value(0.837893, "rmse") == "0.8379"
    assert metric_value(19.178, "training_seconds") == "19.18"
    assert metric_value(None, "rmse") == metric_value(float("nan"), "mae") == "–"


def test_stars_round_to_half_stars() -> None:
    assert stars(5.0) == "★★★★★"
    assert stars(3.7) == "★★★½☆"
    assert stars(0.2) == "☆☆☆☆☆"
    assert metric_label("ndcg_at_10") == "nDCG@10"
    assert metric_label("precision_at_10") == "Precision@10"
    assert metric_label("rmse") == "RMSE"


def test_the_installed_templates_pass_their_check() -> None:
    assert check_templates() == installed_templates()


def test_a_missing_static_file_or_a_broken_template_is_named(tmp_path: Path) -> None:
    templates = tmp_path / "templates"
    shutil.copytree(installed_templates(), templates)
    (templates / "static" / "site.css").unlink()
    with pytest.raises(JobError, match=r"site static file site\.css missing"):
        check_templates(templates)
    shutil.copy(installed_templates() / "static" / "site.css", templates / "static" / "site.css")
    (templates / "runs.html").write_text("{% if %}")
    with pytest.raises(JobError, match=r"runs.html line 1: "):
        check_templates(templates)


def test_the_environment_escapes_and_refuses_undefined_names() -> None:
    env = make_environment(installed_templates())
    assert env.from_string("{{ x }}").render(x="<b>") == "&lt;b&gt;"
    with pytest.raises(jinja2.UndefinedError, match="no_such_name"):
        env.from_string("{{ no_such_name }}").render()
    assert markdown_code("a `b<c>` d") == "a <code>b&lt;c&gt;</code> d"
