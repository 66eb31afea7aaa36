"""``python -m job bench-job``: the whole job on a synthetic MovieLens-shaped dataset, every
stage measured.

    python -m job bench-job --shape ml-10m [--no-publish] [--keep-top 100] [--out DIR]

1. ``generate``: ``job.data.synthetic`` writes a MovieLens folder of the shape (reused when the
   same shape and seed are already there: ml-25m's takes minutes).
2. The real stages, in ``job.pipeline``'s order, through the same functions: ``train``
   (load, split, fit, evaluate, the EASE ranker), ``score`` (every user, ``--keep-top``
   predictions each), ``merge``, ``render``, and ``publish`` to a local folder (then
   published again, to count the re-run's writes) unless ``--no-publish``.

Each stage gets a row: wall seconds, CPU seconds (this process and the child processes it
waited for, e.g. render's workers), peak RSS of
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
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from importlib import metadata
from pathlib import Path
from typing import Any

from job.core.config import Config, PublishOptions, default_cache_dir
from job.core.errors import ConfigError
from job.core.layout import RUN_JSON
from job.core.memory import usable_cores
from job.core.timing import first_stage_startup
from job.data.synthetic import Shape, write_movielens_folder
from job.pipeline import Measured, publish, run_all, run_stage
from job.runfolder.manifest import StageRecord, read_manifest
from job.stages.train import TrainOutputs

log = logging.getLogger(__name__)

# What the issue budgets a large run with: 100 predictions per user (ml-10m and larger
# exceed the default row budget in full; the workflow's keep_top input sets it there).
DEFAULT_KEEP_TOP = 100


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


def synthetic_folder(size: Shape, seed: int, signal: str = "genre") -> Path:
    """Where a shape's synthetic MovieLens folder is kept (and reused): the dataset cache."""
    name = f"{size.name}-{size.users}x{size.movies}-{size.ratings}-seed{seed}"
    if signal != "genre":
        name += f"-{signal}"
    return default_cache_dir() / "synthetic" / name


def run_bench_job(
    config: Config, size: Shape, publish: bool = True, verbose: int = 0, signal: str = "genre"
) -> BenchJobResult:
    """Write the shape's data into ``config.data`` (or reuse it), run every stage of the job
    on it through ``job.pipeline.run_all``, and publish to a local folder twice; measure
    each stage (``job.pipeline.run_stage``) and store the table in run.json."""
    folder = Path(config.data)
    result = BenchJobResult(size, config.out, folder, config.preset, config.score.keep_top)
    load_before = os.getloadavg()
    started_all = time.perf_counter()
    # The process's start-up is taken here, so that it is the imports alone and the train
    # stage after the data's generation does not count the generation as its start-up.
    startup = first_stage_startup()
    if startup is not None:
        result.rows.append(StageRow("start-up (imports)", startup, None, None, None, ""))
    generated = run_stage(
        "generate",
        config.out,
        lambda: write_movielens_folder(folder, size, config.seed, signal=signal),
    )
    written = generated.value
    reused = written.seconds == 0
    _add_row(result, generated, None if reused else written.n_ratings, "ratings")
    if reused:
        result.rows[-1] = replace(
            result.rows[-1], note=f"reused an earlier folder of {written.n_ratings:,} ratings"
        )
    run_all(config, verbose, observe=lambda measured: _observe(result, measured))
    if publish:
        _publish(config.out, result)

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
    result.facts.update(_machine_facts(load_before), wall_seconds_total=round(total, 3))
    result.facts.update(
        # The largest stage peak: resetting VmHWM per stage also resets getrusage's maxrss.
        process_peak_rss_bytes=max((r.peak_rss_bytes or 0) for r in result.rows),
        children_peak_rss_bytes=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
    )
    StageRecord(read_manifest(config.out), {"bench": result.as_dict()}).write(
        config.out, "bench_job", total
    )
    return result


def _machine_facts(load_before: tuple[float, float, float]) -> dict[str, Any]:
    return {
        "cpus": usable_cores(),
        "machine": platform.machine(),
        "load_average_before": round(load_before[0], 2),
        "load_average_after": round(os.getloadavg()[0], 2),
        "keras": _version("keras"),
        "tensorflow": _version("tensorflow") or _version("tensorflow-cpu"),
        "keras_backend": os.environ.get("KERAS_BACKEND", "tensorflow"),
    }


def _add_row(
    result: BenchJobResult,
    measured: Measured[Any],
    count: int | None,
    unit: str,
    label: str | None = None,
    **more: Any,
) -> None:
    """A stage's row from what ``job.pipeline.run_stage`` measured."""
    row = StageRow(
        label or measured.stage,
        measured.wall_s,
        measured.cpu_s,
        measured.peak_rss_bytes,
        count,
        unit,
        **more,
    )
    result.rows.append(row)
    log.info(
        "bench-job: %s took %.1f s (%.1f CPU s, peak RSS %s)",
        row.stage,
        row.wall_s,
        row.cpu_s or 0.0,
        _gb(row.peak_rss_bytes),
    )


def _observe(result: BenchJobResult, measured: Measured[Any]) -> None:
    """Each stage of ``run_all`` as it ends: its row(s) and facts."""
    value, wall = measured.value, measured.wall_s
    if measured.stage == "train":
        _train_rows(result, measured)
    elif measured.stage == "score":
        _add_row(
            result,
            measured,
            value.prediction_rows + value.top_k_rows,
            "rows",
            rate_unit="pairs/s",
            rate=value.pairs / max(wall, 1e-9),
            note=f"{value.pairs:,} unwatched pairs scored, blocks of {value.block_users} users",
        )
    elif measured.stage == "merge":
        _add_row(result, measured, sum(value.counts.values()), "rows")
    elif measured.stage == "render":
        files = [p for p in value.site.rglob("*") if p.is_file()]
        site_bytes = sum(p.stat().st_size for p in files)
        note = f"{value.pages:,} pages, {site_bytes / 1e6:,.0f} MB, {value.workers} worker(s)"
        _add_row(result, measured, len(files), "files", note=note)
        result.facts.update(site_files=len(files), site_bytes=site_bytes, site_pages=value.pages)


def _train_rows(result: BenchJobResult, measured: Measured[TrainOutputs]) -> None:
    manifest = measured.value.manifest
    split = manifest.dataset.split
    _add_row(result, measured, manifest.dataset.n_ratings, "ratings", "train (whole stage)")
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


def _publish(out: Path, result: BenchJobResult) -> None:
    # A local folder target runs the same publish algorithm as a bucket, with nothing to install:
    # the image has no S3 server to stand one in.
    with tempfile.TemporaryDirectory(prefix="bench-job-publish-") as folder:
        options = PublishOptions(folder)
        for label in ("publish", "publish again (re-run)"):
            measured = publish(out, options)
            summary = measured.value
            note = (
                f"{summary.uploaded:,} uploaded, {summary.puts:,} writes, "
                f"{summary.bytes_uploaded / 1e6:,.0f} MB to a local folder"
            )
            _add_row(result, measured, summary.objects, "objects", label, note=note)
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
