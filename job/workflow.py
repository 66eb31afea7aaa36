"""What the GitHub workflow (.github/workflows/run.yml) needs besides the stages themselves:
the scoring matrix's shard plan and the two job summaries, as tested Python rather than YAML.

Each command prints its result on stdout and the workflow appends it where GitHub reads it::

    python -m job shard-plan --shards "$SHARDS" >> "$GITHUB_OUTPUT"
    python -m job run-summary out --runner "$RUNNER_KIND" >> "$GITHUB_STEP_SUMMARY"
    python -m job publish-summary out "s3://$BUCKET/$PREFIX" --site-url "$SITE_URL" >> "$GITHUB_STEP_SUMMARY"

A command that fails prints nothing on stdout, so the file it is appended to is left as it was.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.core.errors import ConfigError

if TYPE_CHECKING:
    from job.runfolder.manifest import Manifest

# GitHub runs at most 256 jobs from one matrix.
MAX_SHARDS = 256
RESULTS_ARTIFACT = "results"  # the site job's upload of the whole run folder (run.yml)


def shard_plan(shards: int) -> list[int]:
    """The shard indexes the scoring matrix runs: 0 .. shards-1."""
    if not 1 <= shards <= MAX_SHARDS:
        raise ConfigError(
            f"--shards must be between 1 and {MAX_SHARDS} (got {shards}); "
            f"GitHub runs at most {MAX_SHARDS} jobs from one matrix"
        )
    return list(range(shards))


def github_output(name: str, value: Any) -> str:
    """One `name=value` line of $GITHUB_OUTPUT, the value as compact JSON (fromJSON reads it)."""
    return f"{name}={json.dumps(value, separators=(',', ':'))}"


def _cell(value: Any) -> str:
    """A Markdown table cell: floats to 4 places, nothing for a missing value, `|` escaped."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value).replace("|", "\\|")


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int) else _cell(value)


def metrics_table(rows: list[dict[str, Any]]) -> list[str]:
    """run.json's metrics rows as a Markdown table: one row per model and baseline, the
    columns in the order the rows give them, a column no row fills left out."""
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns and c != "model"]
    columns = [c for c in columns if any(row.get(c) is not None for row in rows)]
    lines = [
        "| model | " + " | ".join(columns) + " |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    for row in rows:
        cells = [
            f"{row[c]:.1f}"
            if c.endswith("seconds") and isinstance(row.get(c), float)
            else _cell(row.get(c))
            for c in columns
        ]
        lines.append(f"| {_cell(row.get('model'))} | " + " | ".join(cells) + " |")
    return lines


def run_summary(manifest: Manifest, runner: str | None = None) -> str:
    """The site job's summary: what ran, on what, and its held-out metrics against the baselines."""
    dataset, model = manifest.dataset, manifest.model
    scoring = manifest.extra.get("scoring") or {}
    where = f" on the {runner} runner" if runner else ""
    lines = [
        f"## Run {manifest.run_id}",
        "",
        f"Dataset `{dataset.name}` ({_count(dataset.n_users)} users, "
        f"{_count(dataset.n_movies)} movies, {_count(dataset.n_ratings)} ratings), "
        f"preset `{model.preset}`, {model.epochs_run} epoch(s){where}.",
    ]
    if scoring:
        keep = scoring.get("keep_top")
        kept = f", {keep} predictions kept per user" if keep else ", every unwatched movie kept"
        lines.append(
            f"Scored {_count(scoring.get('users'))} users in {scoring.get('shards')} shard(s): "
            f"top {scoring.get('top_k')} per user{kept}."
        )
    rows = manifest.metrics.get("rows") or []
    if rows:
        evaluated_on = manifest.metrics.get("evaluated_on", "held-out")
        lines += ["", f"Metrics on the {evaluated_on} ratings:", "", *metrics_table(rows)]
    lines += [
        "",
        f"The outputs (site, DuckDB, Parquet) are attached to this run as the "
        f"`{RESULTS_ARTIFACT}` artifact.",
    ]
    return "\n".join(lines)


def publish_summary(run_id: str, target: str, site_url: str = "") -> str:
    """The publish job's summary: where the site and this run's files are.

    `site_url` is the address the prefix is served from (the repository variable SITE_URL);
    without it only the storage location can be given.
    """
    stored = f"{target.rstrip('/')}/runs/{run_id}/"
    lines = ["## Published", ""]
    if site := site_url.rstrip("/"):
        lines += [
            f"- Site: {site}/ (always the latest run)",
            f"- This run: {site}/runs/{run_id}/site/index.html",
            f"- Data: {site}/runs/{run_id}/recommendations.duckdb",
        ]
    lines.append(f"- Stored under `{stored}`")
    if not site:
        lines.append("- Set the repository variable SITE_URL to link the site from here.")
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# The commands (python -m job shard-plan | run-summary | publish-summary)


def _cmd_shard_plan(args: argparse.Namespace) -> int:
    print(github_output("shards", shard_plan(args.shards)))
    return 0


def _cmd_run_summary(args: argparse.Namespace) -> int:
    from job.runfolder.manifest import read_manifest

    print(run_summary(read_manifest(args.out), args.runner or None))
    return 0


def _cmd_publish_summary(args: argparse.Namespace) -> int:
    from job.runfolder.manifest import read_manifest

    print(publish_summary(read_manifest(args.out).run_id, args.target, args.site_url))
    return 0


def add_commands(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
    parents: list[argparse.ArgumentParser],
) -> None:
    """Register the workflow's commands on the CLI's subcommands (``parents``: shared flags)."""

    def command(name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, description=help, parents=parents)
        sub.set_defaults(handler=handler)
        return sub

    plan = command(
        "shard-plan",
        _cmd_shard_plan,
        "Print the workflow's scoring matrix, shards=[0,...,N-1], for $GITHUB_OUTPUT.",
    )
    plan.add_argument("--shards", type=int, required=True, help="number of scoring shards")

    summary = command(
        "run-summary",
        _cmd_run_summary,
        "Print a finished run's job summary (Markdown: what ran, its metrics against the baselines).",
    )
    summary.add_argument("out", type=Path, help="the run's output folder")
    summary.add_argument("--runner", help="the runner it trained on, e.g. cpu or gpu")

    published = command(
        "publish-summary",
        _cmd_publish_summary,
        "Print the publish job's summary (Markdown: the site's and this run's addresses).",
    )
    published.add_argument("out", type=Path, help="the published run's output folder")
    published.add_argument("target", help="where it was published, s3://BUCKET/PREFIX")
    published.add_argument(
        "--site-url", default="", help="the address the prefix is served from (empty: none)"
    )
