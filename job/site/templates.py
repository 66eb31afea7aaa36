"""The site's templates and its one Jinja2 environment: the pages and static files it needs,
checked before any work, and the filters the pages format numbers, stars and metrics with."""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import jinja2
import markupsafe

from job.core.baselines import BASELINE_NAMES
from job.core.errors import JobError
from job.site.chart import _finite
from job.site.sql import BROWSER_MODULE

# Every page template and static file the site needs; `check_templates` looks for each before
# any work starts (the static folder is copied whole, so these are its required part).
PAGE_TEMPLATES = (
    "_macros.html",
    "base.html",
    "index.html",
    "movie.html",
    "popular.html",
    "runs.html",
    "sql.html",
    "taste.html",
    "user.html",
)
STATIC_FILES = (
    "site.css",
    "search.js",
    "taste.js",
    "runs.js",
    "sql.js",
    "vendor/minisearch.min.js",
    BROWSER_MODULE,
)


def installed_templates() -> Path:
    """The templates installed with the job: the top-level ``site_templates/`` travels in the
    wheel as the package ``job.site_templates`` (an editable install maps it to the source)."""
    try:
        return Path(str(resources.files("job.site_templates")))
    except ModuleNotFoundError:
        raise JobError(
            "no site templates installed with the job (package job.site_templates is missing): "
            "reinstall it (pip install movielens-job, or make run from a checkout)"
        ) from None


def check_templates(templates: Path | None = None) -> Path:
    """The template folder, once every page template parses and every static file is there.

    Cheap (it parses a few templates), so ``run`` calls it before training, like the publish
    target's check: a broken install fails at once instead of after the expensive stages.

    Raises:
        JobError: a template or static file is missing, or a template does not parse.
    """
    templates = templates or installed_templates()
    env = make_environment(templates)
    for name in PAGE_TEMPLATES:
        try:
            env.get_template(name)
        except jinja2.TemplateNotFound:
            raise JobError(
                f"site template {name} missing in {templates}: reinstall the job"
            ) from None
        except jinja2.TemplateSyntaxError as exc:
            raise JobError(
                f"site template {templates / name} line {exc.lineno}: {exc.message}"
            ) from None
    for name in STATIC_FILES:
        if not (templates / "static" / name).is_file():
            raise JobError(
                f"site static file {name} missing in {templates / 'static'}: reinstall the job"
            )
    return templates


def make_environment(templates: Path) -> jinja2.Environment:
    """The one Jinja2 environment: autoescaping on, a missing variable is an error."""
    if not (templates / "base.html").is_file():
        raise JobError(f"no site templates in {templates} (base.html missing)")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates)),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        thousands=lambda n: f"{int(n):,}",
        num=_number,
        stars=stars,
        genre_list=lambda genres: ", ".join(genres) if genres else "(no genres listed)",
        metric_label=metric_label,
        metric_value=metric_value,
        markdown_code=markdown_code,
    )
    env.globals["baseline_names"] = BASELINE_NAMES
    return env


def markdown_code(text: str) -> markupsafe.Markup:
    """``text`` escaped, its `backquoted` spans as <code>: the tables' catalogue is written
    once, for the docs (Markdown) and for the SQL page (HTML)."""
    parts = str(markupsafe.escape(text)).split("`")
    return markupsafe.Markup(
        "".join(f"<code>{part}</code>" if i % 2 else part for i, part in enumerate(parts))
    )


METRIC_LABELS = {
    "rmse": "RMSE",
    "mae": "MAE",
    "ndcg": "nDCG",
    "map": "MAP",
    "mrr": "MRR",
    "auc": "AUC",
    "training_seconds": "Fit time (s)",
    "ranked_users": "Ranked users",
}


def _number(value: Any, digits: int = 3) -> str:
    """A number to ``digits`` decimals; a dash where there is none."""
    return "–" if value is None or not _finite(value) else f"{float(value):.{digits}f}"


# How a metrics column prints, by its meaning rather than by the type a row happens to hold:
# counts as integers, seconds to two decimals, scores (errors, ranking metrics) to four.
COUNT_COLUMNS = ("n", "ranked_users")
SECONDS_COLUMNS = ("training_seconds",)


def metric_value(value: Any, column: str) -> str:
    """One cell of the metrics table: "559", "19.18", "0.8379"; a dash where there is none."""
    if value is None or not _finite(value):
        return "–"
    if column in COUNT_COLUMNS:
        return f"{round(float(value)):,}"
    return _number(value, 2 if column in SECONDS_COLUMNS else 4)


def metric_label(column: str) -> str:
    """A metrics column as a table header: "rmse" -> "RMSE", "recall_at_10" -> "Recall@10"."""
    if column in METRIC_LABELS:
        return METRIC_LABELS[column]
    name, _, k = column.partition("_at_")
    name = METRIC_LABELS.get(name, name.replace("_", " ").capitalize())
    return f"{name}@{k}" if k else name


def stars(rating: float, high: float = 5.0) -> str:
    """A rating as five stars, to the nearest half: 3.7 -> "★★★½☆"."""
    halves = round(max(0.0, min(rating, high)) * 2)
    full, half = divmod(halves, 2)
    return "★" * full + ("½" if half else "") + "☆" * (int(high) - full - half)
