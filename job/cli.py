"""Command line: a thin layer that parses flags, calls the stage, and turns errors into one line.

python -m job run        every stage on a dataset (train, score, merge, render, publish)
python -m job train      load, split, train, evaluate
python -m job recommend  the article's example predictions for one user
python -m job score      predict every user's unwatched movies (optionally one shard)
python -m job merge      build recommendations.duckdb and Parquet from the scored parts
python -m job render     the static site
python -m job publish    upload a run to s3://BUCKET/PREFIX or a local folder
python -m job pull-latest  fetch the published run's model, to train --warm-start from it
python -m job bench      scoring throughput against the article's approach
python -m job bench-job  every stage of the job on a synthetic ml-10m/25m/32m-shaped dataset
python -m job bench-warm-start  a warm start against a cold one on a dataset split by time
python -m job tune       grid search of model settings on the validation set (tune.json)
python -m job seeds      a preset's test metrics over several seeds, mean ± std (seeds.json)
python -m job shard-plan, run-summary, publish-summary   for the GitHub workflow (job/workflow.py)
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job import flags
from job.config import ScoreOptions
from job.errors import ConfigError, JobError
from job.signals import Interrupts

if TYPE_CHECKING:
    pass

log = logging.getLogger("job")


def _keras_verbosity() -> int:
    """Keras' progress bar at INFO, one line per epoch when not on a terminal, none under -q."""
    if log.getEffectiveLevel() > logging.INFO:
        return 0
    return 1 if sys.stderr.isatty() else 2


# ---------------------------------------------------------------------------------------
# Handlers: each returns an exit code; the stages run through job.pipeline's one runner


def cmd_run(args: argparse.Namespace) -> int:
    from job.site import check_templates

    check_templates()  # a broken install fails now, before Keras' import and the training
    config = flags.config_from(args)  # validated before the slow imports
    _load_keras(args)
    from job.pipeline import run_all

    result = run_all(config, verbose=_keras_verbosity())
    if result.site_url:
        print(result.site_url)  # stdout: the address alone, as `publish` prints it
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = flags.config_from(args)  # validated before the slow imports
    _load_keras(args)
    from job.pipeline import train

    train(config, verbose=_keras_verbosity())
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _load_keras(args)
    from job.recommend import example_for_user, format_example

    print(format_example(example_for_user(args.out, args.user, n_recommend=args.n)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from job.pipeline import score
    from job.score import resolve_shard

    # The shard comes from the flag or AWS Batch's environment.
    shard, options = resolve_shard(args.shard, os.environ), flags.score_options(args)
    _load_keras(args)
    score(args.out, shard, options)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from job.pipeline import merge

    merge(args.out)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from job.pipeline import render

    render(args.out, cache_dir=args.cache_dir)
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    options = flags.publish_options(args)
    from job.pipeline import publish
    from job.preflight import require

    require(args.out, "publish")
    print(publish(args.out, options).value.url)  # stdout: the address alone, for scripts
    return 0


def cmd_pull_latest(args: argparse.Namespace) -> int:
    from job.publish.pull import pull_latest

    print(pull_latest(args.source, args.out, args.endpoint_url))  # stdout: the run id
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _load_keras(args)  # job.bench loads Keras
    from job.bench import BenchOptions, format_report, run_bench

    names = [f.name for f in dataclasses.fields(BenchOptions)]
    options = BenchOptions(**{name: getattr(args, name) for name in names})
    print(format_report(run_bench(options)))
    return 0


def cmd_bench_job(args: argparse.Namespace) -> int:
    from job.benchjob import format_table, run_bench_job, synthetic_folder
    from job.synthetic import resolve_shape

    size = resolve_shape(args.shape, args.users, args.movies, args.ratings)
    data = args.data_dir or synthetic_folder(size, args.seed, args.signal)
    keep_top = None if args.keep_top == 0 else args.keep_top
    config = flags.config_from(args, data=str(data), score=ScoreOptions(keep_top=keep_top))
    _load_keras(args)
    result = run_bench_job(config, size, not args.no_publish, _keras_verbosity(), args.signal)
    print(format_table(result))
    return 0


def cmd_bench_publish(args: argparse.Namespace) -> int:
    from job.publish.bench import bench_publish

    bench_publish(args.objects)
    return 0


def cmd_bench_warm_start(args: argparse.Namespace) -> int:
    config = flags.config_from(args)  # validated before the slow imports
    if not 0.0 < args.quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0, 1) (got {args.quantile})")
    _load_keras(args)
    from job.warmbench import format_table, run_warm_bench

    print(format_table(run_warm_bench(config, args.quantile, _keras_verbosity())))
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    config = flags.config_from(args)  # validated before the slow imports
    _load_keras(args)
    from job.tune import run_tune

    run_tune(config)
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    config = flags.config_from(args)  # validated before the slow imports
    _load_keras(args)
    from job.tune import run_seeds

    run_seeds(config, args.seeds)
    return 0


# ---------------------------------------------------------------------------------------


Handler = Callable[[argparse.Namespace], int]

# Each command: its handler, its help, and its flag groups (job.flags).
COMMANDS: dict[str, tuple[Handler, str, tuple[flags.Group, ...]]] = {
    "run": (
        cmd_run,
        "Run every stage: train, score, merge, render, and publish if asked.",
        (flags.training_flags, flags.warm_start_flag, flags.score_flags, flags.run_publish_flags),
    ),
    "train": (
        cmd_train,
        "Load and validate the data, split it, train the model, evaluate it against baselines.",
        (flags.training_flags, flags.warm_start_flag),
    ),
    "recommend": (
        cmd_recommend,
        "Print a user's top-rated movies and top recommendations (the article's example).",
        (flags.recommend_flags,),
    ),
    "score": (
        cmd_score,
        "Predict a rating for every user's unwatched movies, and each user's top K.",
        (flags.shard_flags, flags.score_flags),
    ),
    "merge": (
        cmd_merge,
        "Build recommendations.duckdb and the Parquet tables from the scored parts.",
        (flags.out_of("a scored run's folder"),),
    ),
    "render": (
        cmd_render,
        "Render the static site into OUT/site.",
        (flags.render_flags,),
    ),
    "publish": (
        cmd_publish,
        "Upload a finished run to s3://BUCKET/PREFIX or a local folder.",
        (flags.publish_command_flags,),
    ),
    "pull-latest": (
        cmd_pull_latest,
        "Fetch the published run's model (run.json, model.keras, encoding.json) for --warm-start.",
        (flags.pull_flags,),
    ),
    "bench": (
        cmd_bench,
        "Benchmark scoring: the fast path against the article's per-user predict.",
        (flags.bench_flags,),
    ),
    "bench-job": (
        cmd_bench_job,
        "Run every stage of the job on a synthetic MovieLens-shaped dataset; measure each stage.",
        (flags.bench_job_flags,),
    ),
    "bench-publish": (
        cmd_bench_publish,
        "Benchmark publishing: upload a synthetic site to a local moto S3 server, then re-run it.",
        (flags.bench_publish_flags,),
    ),
    "bench-warm-start": (
        cmd_bench_warm_start,
        "Measure a warm start: train on the ratings before a time quantile, then on all of them cold and warm.",
        (flags.warm_bench_flags,),
    ),
    "tune": (
        cmd_tune,
        "Grid-search model settings (job/tune.py's TUNE_GRID) on the validation set; writes OUT/tune.json.",
        (flags.tune_flags,),
    ),
    "seeds": (
        cmd_seeds,
        "Train and test a preset once per seed; print mean ± std; writes OUT/seeds.json.",
        (flags.training_flags, flags.seeds_flags),
    ),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help, groups) in COMMANDS.items():
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        for group in groups:
            group(sub)
    from job.workflow import add_commands as add_workflow_commands

    add_workflow_commands(commands)
    return parser


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged, not when the handler was
    made: a caller that swaps stderr (a test capturing output) never leaves it a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def configure_logging(quiet: bool, verbose: bool) -> None:
    level = logging.WARNING if quiet else logging.DEBUG if verbose else logging.INFO
    # Other libraries stay at WARNING; -v is about this job's own steps.
    logging.basicConfig(
        level=logging.WARNING, format="%(message)s", handlers=[_StderrHandler()], force=True
    )
    logging.getLogger("job").setLevel(level)
    # TensorFlow's C++ start-up chatter is noise to a user of this job.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2" if not verbose else "0")


def _load_keras(args: argparse.Namespace) -> None:
    """Import Keras now, once the flags are known to be good (an import costs seconds)."""
    if not args.verbose:
        import_keras_quietly()


def import_keras_quietly() -> None:
    """Import Keras with file descriptor 2 pointed at /dev/null.

    TensorFlow's C++ start-up lines (absl's "All log messages before absl::InitializeLog()",
    oneDNN notices) are written to fd 2 while it imports, below Python's logging and
    regardless of TF_CPP_MIN_LOG_LEVEL; redirecting the descriptor for the import is the only
    way to keep them from a user. ``-v`` skips this and shows them.
    """
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        with _without_matplotlib():
            import keras

            if keras.backend.backend() == "tensorflow":
                import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


@contextlib.contextmanager
def _without_matplotlib() -> Iterator[None]:
    """Keras imports ``matplotlib.pyplot`` if it can, for image galleries this job never
    draws: 0.3-1.1 s of every Keras process (`python -m job score` among them). While Keras
    imports, matplotlib reads as not installed (Keras then leaves those helpers unset); it
    imports normally afterwards (the site's chart uses ``matplotlib.figure``)."""
    blocked = [name for name in ("matplotlib", "matplotlib.pyplot") if name not in sys.modules]
    for name in blocked:
        sys.modules[name] = None  # type: ignore[assignment]  # import raises ImportError
    try:
        yield
    finally:
        for name in blocked:
            if sys.modules.get(name, 0) is None:
                del sys.modules[name]


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    started = time.perf_counter()
    with Interrupts() as signals:
        try:
            code = args.handler(args)
        except KeyboardInterrupt:
            print(f"error: {signals.describe()}", file=sys.stderr)
            return signals.code
        except Exception as exc:
            if signals.received is not None:  # a library's own error for the interruption
                print(f"error: {signals.describe()}", file=sys.stderr)
                return signals.code
            return _error_code(exc, getattr(args, "out", None) or Path.cwd())
        if signals.received is not None:
            print(f"error: {signals.describe()}", file=sys.stderr)
            return signals.code
    log.debug("%s finished in %.1f s", args.command, time.perf_counter() - started)
    return code


def _error_code(exc: Exception, out: Path) -> int:
    """A domain error as its one line and exit code; anything else re-raised (a bug: its
    traceback is the report), unless it is a full or read-only file system."""
    if isinstance(exc, JobError):
        print(f"error: {exc}", file=sys.stderr)
        return 2 if isinstance(exc, ConfigError) else 1
    from job.files import full_or_read_only

    # A write outside job.files.atomic_path (a library's cache, a log) on a full or
    # read-only file system.
    error = full_or_read_only(exc, out)
    if error is None:
        raise exc
    print(f"error: {error}", file=sys.stderr)
    return 1
