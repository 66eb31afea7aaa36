"""Publish a finished run's site and data to S3-compatible storage or a local folder.

Layout under the target (``s3://BUCKET/PREFIX`` or a folder)::

    PREFIX/runs/RUN_ID/site/...                    the static site (relative links only)
    PREFIX/runs/RUN_ID/recommendations.duckdb      the site links to ../recommendations.duckdb
    PREFIX/runs/RUN_ID/parquet/*.parquet
    PREFIX/runs/RUN_ID/run.json
    PREFIX/runs/RUN_ID/model.keras, encoding.json  the model, for the next run's warm start
    PREFIX/runs/RUN_ID/published.json              completion marker, written last
    PREFIX/latest.json                             {"run_id", "created_at", "site", ...}
    PREFIX/index.html                              redirect to runs/RUN_ID/site/index.html
    PREFIX/runs.json                               the kept runs' metrics and what changed

Why this shape: everything of a run goes under its own immutable prefix first (long cache);
only when every object and the marker are listed are the two small entry points switched,
``latest.json`` by compare-and-swap, ``index.html`` after it. A reader therefore sees either
the previous run or the new one, never half of one, and a failed or killed upload leaves the
previous site serving. Publishers racing to one target keep to the rules in ``core``: the
entry points only move to newer complete runs, and pruning never takes the named run, a newer
one, or one being uploaded. Re-publishing the same run
compares checksums and uploads only what is missing or changed, so a retry resumes cheaply
and a repeat is a no-op.

Modules: ``core`` (the algorithm, once), ``storage`` (the interface it needs), ``s3`` and
``local`` (its two implementations), ``runsindex`` (runs.json and what changed between two
runs' top 10s), ``runfiles`` (the run's files, content types, entry
points), ``pull`` (the latest run's model, for a warm start) and ``target`` (URL parsing).
"""

from job.publish.core import IMMUTABLE_CACHE, PublishSummary, publish
from job.publish.entries import ENTRY_CACHE
from job.publish.runfiles import content_type, redirect_page
from job.publish.target import PublishTarget, parse_target

__all__ = [
    "ENTRY_CACHE",
    "IMMUTABLE_CACHE",
    "PublishSummary",
    "PublishTarget",
    "content_type",
    "parse_target",
    "publish",
    "redirect_page",
]
