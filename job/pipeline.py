"""The stage order: ``run_all`` runs every stage of one run, as the CLI's ``run`` and the
benchmarks do. Each stage also runs alone on a previous run's folder (see ``job.cli``)."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from job.config import Config
from job.publish import parse_target, publish
from job.score import Shard, score_stage
from job.site import check_templates, render_site
from job.store import merge_stage
from job.train import train_stage

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    run_id: str
    site_url: str | None  # where the run was published, if it was
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage


def run_all(config: Config, verbose: int = 1) -> RunResult:
    """Train, score every user, merge, render, and publish if ``config.publish`` says where.

    Everything that can be checked before training is: the options are validated when the
    ``Config`` is made, and the publish target and the site templates are checked here, so a
    typo or a broken install fails in seconds, not after minutes of training.
    """
    if config.publish:
        parse_target(config.publish.target)
    check_templates()
    seconds: dict[str, float] = {}

    def timed(stage: str, started: float) -> None:
        seconds[stage] = round(time.perf_counter() - started, 3)

    started = time.perf_counter()
    manifest = train_stage(config, verbose=verbose)
    timed("train", started)
    log.info("run %s written to %s", manifest.run_id, config.out)
    started = time.perf_counter()
    score_stage(config.out, Shard(), config.score)
    timed("score", started)
    started = time.perf_counter()
    merge_stage(config.out)
    timed("merge", started)
    started = time.perf_counter()
    summary = render_site(config.out)
    timed("render", started)
    log.info("site written to %s (open %s)", summary.site, summary.site / "index.html")
    url = None
    if config.publish:
        started = time.perf_counter()
        url = publish(
            config.out,
            config.publish.target,
            endpoint_url=config.publish.endpoint_url,
            keep_runs=config.publish.keep_runs,
        ).url
        timed("publish", started)
    return RunResult(manifest.run_id, url, seconds)
