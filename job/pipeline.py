"""The stages of one run, in order, and the one hook every stage runs through.

``STAGES`` is the order; ``run_stage`` is the per-stage hook (wall and CPU time, peak
memory, and the stage's record in run.json); ``train``, ``score``, ``merge``, ``render``
and ``publish`` run one stage through it. ``run_all`` (``python -m job run``), the
single-stage commands (``job.cli``) and ``bench-job`` (``job.benchjob``) all use them.

The stage modules are imported when their stage runs: ``merge``, ``render`` and ``publish``
never load Keras (an import of seconds).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from job.core.config import Config, PublishOptions, ScoreOptions
from job.core.memory import cpu_seconds, peak_rss, reset_peak_rss
from job.runfolder.manifest import StageRecord

if TYPE_CHECKING:
    from job.publish import PublishSummary, PublishTarget
    from job.site import SiteSummary
    from job.stages.merge import MergeOutputs
    from job.stages.score import ScoreSummary, Shard
    from job.stages.train import TrainOutputs

log = logging.getLogger(__name__)

STAGES = ("train", "score", "merge", "render", "publish")

T = TypeVar("T")


@dataclass(frozen=True)
class Measured(Generic[T]):
    """A stage's result and what it cost."""

    stage: str
    value: T
    wall_s: float
    cpu_s: float  # this process and the child processes it waited for
    peak_rss_bytes: int  # this process during the stage (Linux's VmHWM, reset before it)


def run_stage(stage: str, out: Path, body: Callable[[], T]) -> Measured[T]:
    """Run one stage: time it, take its peak memory, and write its record (if its result
    carries one, as merge's and render's do) into ``out``'s run.json, once, when it is done.
    Train writes run.json itself, last, as the mark of a finished run; score writes none
    (shards run in parallel); publish uploads run.json and leaves it as it was."""
    reset_peak_rss()
    cpu, started = cpu_seconds(), time.perf_counter()
    log.debug("%s ...", stage)
    value = body()
    wall = time.perf_counter() - started
    measured = Measured(stage, value, wall, cpu_seconds() - cpu, peak_rss())
    record = getattr(value, "record", None)
    if isinstance(record, StageRecord):
        record.write(out, stage, wall)
    log.debug("%s took %.1f s (%.1f CPU s)", stage, wall, measured.cpu_s)
    return measured


def train(config: Config, verbose: int = 1) -> Measured[TrainOutputs]:
    from job.stages.train import train_stage

    measured = run_stage("train", config.out, lambda: train_stage(config, verbose=verbose))
    log.info("run %s written to %s", measured.value.manifest.run_id, config.out)
    return measured


def score(
    out: Path, shard: Shard | None = None, options: ScoreOptions | None = None
) -> Measured[ScoreSummary]:
    from job.stages.score import score_stage

    return run_stage("score", out, lambda: score_stage(out, shard, options))


def merge(out: Path) -> Measured[MergeOutputs]:
    from job.stages.merge import merge_stage

    return run_stage("merge", out, lambda: merge_stage(out))


def render(
    out: Path, workers: int | None = None, cache_dir: Path | None = None
) -> Measured[SiteSummary]:
    from job.site import render_site

    measured = run_stage(
        "render", out, lambda: render_site(out, workers=workers, cache_dir=cache_dir)
    )
    site = measured.value.site
    log.info("site written to %s (open %s)", site, site / "index.html")
    return measured


def publish(
    out: Path, options: PublishOptions, target: PublishTarget | None = None
) -> Measured[PublishSummary]:
    """The publish stage; ``target``: ``options.target`` already parsed (by ``run_all``)."""
    from job.publish import publish as upload

    where = target or options.target
    return run_stage(
        "publish",
        out,
        lambda: upload(out, where, endpoint_url=options.endpoint_url, keep_runs=options.keep_runs),
    )


@dataclass(frozen=True)
class RunResult:
    run_id: str
    site_url: str | None  # where the run was published, if it was
    seconds: dict[str, float] = field(default_factory=dict)  # wall time of each stage
    stages: list[Measured[Any]] = field(default_factory=list)


def run_all(
    config: Config,
    verbose: int = 1,
    observe: Callable[[Measured[Any]], None] | None = None,
) -> RunResult:
    """Every stage in ``STAGES`` order on one run: train, score every user, merge, render,
    and publish if ``config.publish`` says where. ``observe`` sees each stage as it ends.

    Everything that can be checked before training is: the options are validated when the
    ``Config`` is made, and the publish target and the site templates are checked here, so a
    typo or a broken install fails in seconds, not after minutes of training.
    """
    target = None
    if config.publish:
        from job.publish import parse_target

        target = parse_target(config.publish.target)
    from job.site import check_templates

    check_templates()
    out = config.out
    bodies: dict[str, Callable[[], Measured[Any]]] = {
        "train": lambda: train(config, verbose),
        "score": lambda: score(out, None, config.score),
        "merge": lambda: merge(out),
        "render": lambda: render(out, cache_dir=config.cache_dir),
    }
    if config.publish:
        options = config.publish
        bodies["publish"] = lambda: publish(out, options, target)
    done: list[Measured[Any]] = []
    for stage in STAGES:
        if stage in bodies:
            done.append(bodies[stage]())
            if observe:
                observe(done[-1])
    first, last = done[0].value, done[-1].value
    return RunResult(
        run_id=first.manifest.run_id,
        site_url=last.url if config.publish else None,
        seconds={m.stage: round(m.wall_s, 3) for m in done},
        stages=done,
    )
