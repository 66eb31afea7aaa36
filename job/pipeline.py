"""The stages of one run, in order, and the one hook every stage runs through.

``STAGES`` is the order; ``run_stage`` is the per-stage hook (wall and CPU time, peak
memory, and the stage's record in run.json); ``train``, ``score``, ``merge``, ``render``
and ``publish`` run one stage through it. The first stage of a process also reports the
process's start-up (its imports) as a timing of its own: "start-up" for train (``train``,
``run``), "STAGE start-up" for a stage command run alone. ``run_all`` (``python -m job run``), the
single-stage commands (``job.cli``) and ``bench-job`` (``job.benchjob``) all use them.

The stage modules are imported when their stage runs: ``merge``, ``render`` and ``publish``
never load Keras (an import of seconds).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from job.core.config import Config, PublishOptions, ScoreOptions, default_cache_dir
from job.core.memory import peak_rss, reset_peak_rss
from job.core.timing import Stopwatch, first_stage_startup
from job.runfolder.manifest import StageRecord, read_manifest, with_stage, write_manifest

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
    startup_s: float | None = None  # the process's start-up, when this was its first stage


def startup_label(stage: str) -> str:
    """run.json's name for the start-up of a process whose first stage is ``stage``."""
    return "start-up" if stage == "train" else f"{stage} start-up"


def run_stage(
    stage: str, out: Path, body: Callable[[], T], startup: float | None = None
) -> Measured[T]:
    """Run one stage: time it, take its peak memory, and write its record (if its result
    carries one, as merge's and render's do) into ``out``'s run.json, once, when it is done.
    Train writes run.json itself, last, as the mark of a finished run; score writes none
    (shards run in parallel); publish uploads run.json and leaves it as it was.

    ``startup``: the process's start-up when this is its first stage (``first_stage_startup``),
    logged, and recorded beside the stage's own time where the stage writes a record."""
    if startup is not None:
        log.info("%s %.1f s (imports)", startup_label(stage), startup)
    reset_peak_rss()
    watch = Stopwatch()
    log.debug("%s ...", stage)
    with watch.time(stage):
        value = body()
    wall, cpu = watch.seconds[stage], watch.cpu_seconds[stage]
    measured = Measured(stage, value, wall, cpu, peak_rss(), startup)
    record = getattr(value, "record", None)
    if isinstance(record, StageRecord):
        if startup is not None:
            manifest = with_stage(record.manifest, startup_label(stage), startup)
            record = dataclasses.replace(record, manifest=manifest)
        record.write(out, stage, wall)
    log.debug("%s took %.1f s (%.1f CPU s)", stage, wall, cpu)
    return measured


def train(config: Config, verbose: int = 1) -> Measured[TrainOutputs]:
    from job.stages.train import train_stage

    startup = first_stage_startup()
    measured = run_stage("train", config.out, lambda: train_stage(config, verbose=verbose), startup)
    if startup is not None:  # train writes run.json itself: its start-up goes in after it
        manifest = read_manifest(config.out)
        write_manifest(config.out, with_stage(manifest, startup_label("train"), startup))
    log.info("run %s written to %s", measured.value.manifest.run_id, config.out)
    return measured


def score(
    out: Path, shard: Shard | None = None, options: ScoreOptions | None = None
) -> Measured[ScoreSummary]:
    from job.stages.score import score_stage

    # Score writes no record (shards run in parallel): its summary carries the start-up to merge.
    startup = first_stage_startup()
    return run_stage("score", out, lambda: score_stage(out, shard, options, startup), startup)


def merge(out: Path) -> Measured[MergeOutputs]:
    from job.stages.merge import merge_stage

    return run_stage("merge", out, lambda: merge_stage(out), first_stage_startup())


def render(
    out: Path, workers: int | None = None, cache_dir: Path | None = None
) -> Measured[SiteSummary]:
    from job.runfolder.preflight import require
    from job.site import render_site
    from job.site.sql import engine_for_site

    startup = first_stage_startup()
    manifest = require(out, "render")  # a folder that cannot render fails before the fetch
    # The SQL page's engine is fetched (once per cache) before the stage, outside its time.
    engine = engine_for_site(cache_dir or default_cache_dir())
    measured = run_stage(
        "render",
        out,
        lambda: render_site(out, workers=workers, engine=engine, manifest=manifest),
        startup,
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
        first_stage_startup(),
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
