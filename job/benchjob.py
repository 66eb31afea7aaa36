"""``python -m job bench-job``: the whole job on a synthetic MovieLens-shaped dataset, every
stage measured.

    python -m job bench-job --shape ml-10m [--no-publish] [--keep-top 100] [--out DIR]

1. ``generate``: ``job.synthetic`` writes a MovieLens folder of the shape (reused when the
   same shape and seed are already there: ml-25m's takes minutes).
2. The real stages, in ``job.pipeline``'s order, through the same functions: ``train``
   (load, split, fit, evaluate, the EASE ranker), ``score`` (every user, ``--keep-top``
   predictions each), ``merge``, ``render``, and ``publish`` to a local moto S3 server
   (then published again, to count the re-run's PUTs) unless ``--no-publish``.

Each stage gets a row: wall seconds, CPU seconds (this process and the child processes it
waited for, e.g. render's workers; the moto server's own CPU is noted apart), peak RSS of
this process during the stage (Linux's ``VmHWM``, reset before each stage), what it made
(ratings, rows, pages, objects) and the rate. The train stage's own timings (load, fit,
evaluate, item-item) follow as sub-rows. The table is printed and stored in ``run.json``
under ``bench``.
"""

from __future__ import annotations

import logging
import os
import platform
import resource
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from job.config import Config, ScoreOptions, build_config, default_cache_dir
from job.errors import ConfigError
from job.layout import RUN_JSON, SITE_DIR
from job.manifest import read_manifest, record_stage
from job.memory import peak_rss, reset_peak_rss
from job.score import Shard, score_stage
from job.site import render_site
from job.store import merge_stage
from job.synthetic import Shape, resolve_shape, write_movielens_folder
from job.train import train_stage

log = logging.getLogger(__name__)

# What the issue budgets a large run with: 100 predictions per user (ml-10m and larger
# exceed the default row budget in full; the workflow's keep_top input sets it there).
DEFAULT_KEEP_TOP = 100

T = TypeVar("T")


@dataclass(frozen=True)
class StageRow:
    """One stage's measurements."""

    stage: str
    wall_s: float
    cpu_s: float | None  # None for a sub-row (the train stage's own breakdown)
    peak_rss_bytes: int | None
    count: int | None  # what the stage made or read
    unit: str  # ratings, rows, pages, objects, ...
    rate_unit: str = ""  # e.g. "ratings/s"; empty: count / wall_s in units/s
    rate: float | None = None
    note: str = ""

    @property
    def rate_value(self) -> float | None:
        if self.rate is not None:
            return self.rate
        if self.count is None or self.wall_s <= 0:
            return None
        return self.count / self.wall_s


@dataclass
class BenchJobResult:
    shape: Shape
    out: Path
    data: Path
    preset: str
    keep_top: int | None
    rows: list[StageRow] = field(default_factory=list)
    facts: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "shape": asdict(self.shape),
            "data": str(self.data),
            "preset": self.preset,
            "keep_top": self.keep_top,
            "stages": [
                {**asdict(row), "rate": row.rate_value, "rate_unit": _rate_unit(row)}
                for row in self.rows
            ],
            **self.facts,
        }


def _cpu_now() -> float:
    me = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime


def measured(stage: str, fn: Callable[[], T]) -> tuple[T, float, float, int]:
    """Run ``fn``; return its result, wall seconds, CPU seconds and this process' peak RSS."""
    reset_peak_rss()
    cpu, started = _cpu_now(), time.perf_counter()
    log.info("bench-job: %s ...", stage)
    result = fn()
    wall = time.perf_counter() - started
    cpu = _cpu_now() - cpu
    rss = peak_rss()
    log.info("bench-job: %s took %.1f s (%.1f CPU s, peak RSS %s)", stage, wall, cpu, _gb(rss))
    return result, wall, cpu, rss


def run_bench_job(
    shape: str | None = None,
    users: int | None = None,
    movies: int | None = None,
    ratings: int | None = None,
    *,
    out: Path = Path("bench-job-out"),
    data_dir: Path | None = None,
    preset: str | None = None,
    epochs: int | None = None,
    seed: int = 42,
    keep_top: int | None = DEFAULT_KEEP_TOP,
    top_k: int = 10,
    publish: bool = True,
    verbose: int = 0,
) -> BenchJobResult:
    """Generate the shape's data, run every stage of the job on it, measure each."""
    size = resolve_shape(shape, users, movies, ratings)
    if keep_top is not None and keep_top < 1:
        raise ConfigError(f"--keep-top must be at least 1 (got {keep_top}); omit it to keep all")
    folder = data_dir or default_cache_dir() / "synthetic" / _folder_name(size, seed)
    config_args: dict[str, Any] = {"preset": preset} if preset else {}
    config = build_config(
        data=str(folder),
        out=out,
        epochs=epochs,
        seed=seed,
        score=ScoreOptions(top_k=top_k, keep_top=keep_top),
        **config_args,
    )
    result = BenchJobResult(size, out, folder, config.preset, keep_top)
    load_before = os.getloadavg()
    started_all = time.perf_counter()

    written, wall, cpu, rss = measured(
        "generate", lambda: write_movielens_folder(folder, size, seed)
    )
    reused = written.seconds == 0
    result.rows.append(
        StageRow(
            "generate",
            wall,
            cpu,
            rss,
            None if reused else written.n_ratings,
            "ratings",
            note=f"reused an earlier folder of {written.n_ratings:,} ratings" if reused else "",
        )
    )

    _train(config, result, verbose)
    _score_merge_render(config, result)
    if publish:
        _publish(out, result)

    total = time.perf_counter() - started_all
    measured_rows = [r for r in result.rows if r.cpu_s is not None and r.stage != "generate"]
    result.rows.append(
        StageRow(
            "job (all stages but generate)",
            sum(r.wall_s for r in measured_rows),
            sum(r.cpu_s or 0.0 for r in measured_rows),
            max((r.peak_rss_bytes or 0) for r in measured_rows) or None,
            None,
            "",
        )
    )
    result.facts.update(
        cpus=len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        machine=platform.machine(),
        load_average_before=round(load_before[0], 2),
        load_average_after=round(os.getloadavg()[0], 2),
        wall_seconds_total=round(total, 3),
        keras=_version("keras"),
        tensorflow=_version("tensorflow") or _version("tensorflow-cpu"),
        keras_backend=os.environ.get("KERAS_BACKEND", "tensorflow"),
        # The largest stage peak: resetting VmHWM per stage also resets getrusage's maxrss.
        process_peak_rss_bytes=max((r.peak_rss_bytes or 0) for r in result.rows),
        children_peak_rss_bytes=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    )
    record_stage(out, "bench_job", total, bench=result.as_dict())
    return result


def _folder_name(size: Shape, seed: int) -> str:
    return f"{size.name}-{size.users}x{size.movies}-{size.ratings}-seed{seed}"


def _train(config: Config, result: BenchJobResult, verbose: int) -> None:
    manifest, wall, cpu, rss = measured("train", lambda: train_stage(config, verbose=verbose))
    split = manifest.dataset.split
    result.rows.append(
        StageRow("train (whole stage)", wall, cpu, rss, manifest.dataset.n_ratings, "ratings")
    )
    timings = manifest.timings
    epochs = manifest.model.epochs_run
    settings = manifest.extra.get("training") or {}
    fit_rate = split["train"] * epochs / max(manifest.training_seconds, 1e-9)
    for key, label, count, unit, rate_unit, rate in (
        ("load", "  load + validate", manifest.dataset.n_ratings, "ratings", "", None),
        (
            "train",
            f"  fit ({epochs} epochs, batch {settings.get('batch_size', '?')})",
            split["train"] * epochs,
            "ratings seen",
            "ratings/s",
            fit_rate,
        ),
        ("evaluate", "  evaluate", None, "", "", None),
        ("item_item", "  EASE ranker + also-liked", None, "", "", None),
    ):
        if key in timings:
            result.rows.append(
                StageRow(label, timings[key], None, None, count, unit, rate_unit, rate)
            )
    ranked = [row.get("ranked_users") for row in manifest.metrics.get("rows", [])]
    model_row: dict[str, Any] = next(iter(manifest.metrics.get("rows", [])), {})
    result.facts.update(
        epochs_run=epochs,
        train_ratings=split["train"],
        fit_ratings_per_second=round(fit_rate),
        evaluate_share_of_fit=round(
            timings.get("evaluate", 0.0) / max(timings.get("train", 1e-9), 1e-9), 3
        ),
        ranked_users=max((r for r in ranked if r), default=None),
        test_rmse=model_row.get("rmse"),
        test_ndcg_at_10=model_row.get("ndcg_at_10"),
        training=settings,
        n_users=manifest.dataset.n_users,
        n_movies=manifest.dataset.n_movies,
    )


def _score_merge_render(config: Config, result: BenchJobResult) -> None:
    out = config.out
    summary, wall, cpu, rss = measured("score", lambda: score_stage(out, Shard(), config.score))
    result.rows.append(
        StageRow(
            "score",
            wall,
            cpu,
            rss,
            summary.prediction_rows + summary.top_k_rows,
            "rows",
            "pairs/s",
            summary.pairs / max(wall, 1e-9),
            note=f"{summary.pairs:,} unwatched pairs scored, blocks of {summary.block_users} users",
        )
    )
    counts, wall, cpu, rss = measured("merge", lambda: merge_stage(out))
    result.rows.append(StageRow("merge", wall, cpu, rss, sum(counts.values()), "rows"))
    site, wall, cpu, rss = measured("render", lambda: render_site(out))
    files = [p for p in (out / SITE_DIR).rglob("*") if p.is_file()]
    site_bytes = sum(p.stat().st_size for p in files)
    result.rows.append(
        StageRow(
            "render",
            wall,
            cpu,
            rss,
            len(files),
            "files",
            note=f"{site.pages:,} pages, {site_bytes / 1e6:,.0f} MB, {site.workers} worker(s)",
        )
    )
    result.facts.update(site_files=len(files), site_bytes=site_bytes, site_pages=site.pages)


def _publish(out: Path, result: BenchJobResult) -> None:
    import boto3

    from job.publish import publish
    from job.publish.motoserver import MotoServer, fake_credentials

    with fake_credentials(), MotoServer() as server:
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket="bench-job")
        for label in ("publish", "publish again (re-run)"):
            server_cpu = server.cpu_seconds()
            summary, wall, cpu, rss = measured(
                label,
                lambda: publish(out, "s3://bench-job/site", endpoint_url=server.endpoint),
            )
            after = server.cpu_seconds()
            server_note = (
                f"; moto server {after - server_cpu:.0f} CPU s"
                if after is not None and server_cpu is not None
                else ""
            )
            result.rows.append(
                StageRow(
                    label,
                    wall,
                    cpu,
                    rss,
                    summary.objects,
                    "objects",
                    note=f"{summary.uploaded:,} uploaded, {summary.puts:,} PUTs, "
                    f"{summary.bytes_uploaded / 1e6:,.0f} MB{server_note}",
                )
            )
            result.facts[f"{label.split()[0]}_{'rerun' if 're-run' in label else 'first'}_puts"] = (
                summary.puts
            )


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _gb(n_bytes: int | None) -> str:
    return f"{n_bytes / 2**30:.2f} GB" if n_bytes else "-"


def _maybe(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _rate_unit(row: StageRow) -> str:
    if row.rate_unit:
        return row.rate_unit
    return f"{row.unit}/s" if row.unit else ""


def format_table(result: BenchJobResult) -> str:
    """The measurements as one fixed-width table, with the run's facts around it."""
    shape, facts = result.shape, result.facts
    keep = "all" if result.keep_top is None else f"{result.keep_top}"
    header = (
        f"bench-job: synthetic {shape.name}: {shape.users:,} users x {shape.movies:,} movies, "
        f"{shape.ratings:,} ratings; preset {result.preset}, keep-top {keep}; "
        f"{facts.get('cpus')} CPUs, load average {facts.get('load_average_before')} before, "
        f"{facts.get('load_average_after')} after (a shared machine: timings are noisy)"
    )
    rows = [("stage", "wall s", "CPU s", "peak RSS", "made", "rate", "note")]
    for row in result.rows:
        rate = row.rate_value
        rows.append(
            (
                row.stage,
                f"{row.wall_s:,.1f}",
                "" if row.cpu_s is None else f"{row.cpu_s:,.1f}",
                _gb(row.peak_rss_bytes) if row.peak_rss_bytes else "",
                "" if row.count is None else f"{row.count:,} {row.unit}",
                "" if rate is None else f"{rate:,.0f} {_rate_unit(row)}",
                row.note,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = [header, ""]
    for r in rows:
        cells = [
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r[:-1], widths, strict=True))
        ]
        lines.append("  ".join(cells) + (f"  {r[-1]}" if r[-1] else ""))
    share = facts.get("evaluate_share_of_fit")
    lines += [
        "",
        f"fit: {facts.get('fit_ratings_per_second', 0):,} ratings/s over {facts.get('epochs_run')} "
        f"epoch(s) of {facts.get('train_ratings', 0):,} training ratings; evaluate took "
        f"{share:.0%} of the fit's time (ranking metrics on {facts.get('ranked_users')} sampled "
        "users)"
        if share is not None
        else "",
        f"test RMSE {_maybe(facts.get('test_rmse'))}, nDCG@10 {_maybe(facts.get('test_ndcg_at_10'))} (synthetic "
        "data: a check that training learnt, not a result)",
        f"whole process peak RSS {_gb(facts.get('process_peak_rss_bytes'))}; "
        f"largest child process {_gb(facts.get('children_peak_rss_bytes'))}; "
        f"the table is in {result.out / RUN_JSON} under 'bench'",
    ]
    return "\n".join(line for line in lines if line is not None)


def stored_table(out: Path) -> dict[str, Any]:
    """The ``bench`` entry of a run's run.json (for tests and reports)."""
    bench = read_manifest(out).extra.get("bench")
    if not isinstance(bench, dict):
        raise ConfigError(f"{out / RUN_JSON} holds no bench-job table")
    return bench
