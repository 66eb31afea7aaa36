"""Command line: a thin layer that parses flags, calls the stage, and turns errors into one line.

python -m job run        every stage on a dataset (train, score, merge, render, publish)
python -m job train      load, split, train, evaluate
python -m job recommend  the article's example predictions for one user
python -m job score      predict every user's unwatched movies (optionally one shard)
python -m job merge      build recommendations.duckdb and Parquet from the scored parts
python -m job render     the static site
python -m job publish    upload a run to s3://BUCKET/PREFIX or a local folder
python -m job bench      scoring throughput against the article's approach
python -m job bench-job  every stage of the job on a synthetic ml-10m/25m/32m-shaped dataset
python -m job tune       grid search of model settings on the validation set (tune.json)
python -m job seeds      a preset's test metrics over several seeds, mean ± std (seeds.json)
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from job.config import DEFAULT_MAX_ROWS, DEFAULT_PRESET, TUNE_BASE
from job.errors import ConfigError, JobError

if TYPE_CHECKING:
    from job.config import Config, ScoreOptions

log = logging.getLogger("job")


def _add_training_flags(
    parser: argparse.ArgumentParser,
    preset_default: str = DEFAULT_PRESET,
    preset_help: str = "model preset: seed (the article's network), tuned, dlrm, classes, ... (default: %(default)s)",
) -> None:
    parser.add_argument(
        "--data",
        default="ml-latest-small",
        help="dataset name (ml-latest-small, ml-1m, ...) or a folder of MovieLens CSVs (default: %(default)s)",
    )
    parser.add_argument(
        "--out", default="out", type=Path, help="output folder (default: %(default)s)"
    )
    parser.add_argument("--preset", default=preset_default, help=preset_help)
    parser.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's)")
    parser.add_argument(
        "--seed",
        type=int,
        default=42,
        help="one seed for split, initialisation and shuffling (default: %(default)s)",
    )
    parser.add_argument(
        "--test-fraction",
        type=float,
        default=0.1,
        help="held-out test share; 0 trains on every rating given (default: %(default)s)",
    )
    parser.add_argument(
        "--val-fraction",
        type=float,
        default=0.1,
        help="validation share for early stopping (default: %(default)s)",
    )
    parser.add_argument(
        "--split",
        choices=["random", "temporal"],
        default="random",
        help="random, or per user by time (default: %(default)s)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        help="where downloaded datasets are kept (default: $MOVIELENS_CACHE or ~/.cache/movielens-job)",
    )


def _add_score_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top-k",
        type=int,
        default=10,
        help="recommendations kept per user in top_k (default: %(default)s)",
    )
    parser.add_argument(
        "--keep-top",
        type=int,
        help="keep only N predictions per user in `predictions` (for catalogues too large to store in full)",
    )
    parser.add_argument(
        "--block-users",
        type=int,
        help="users scored per block; bounds memory (default: sized to ~128 MiB of intermediates)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=DEFAULT_MAX_ROWS,
        help="refuse, before scoring, a `predictions` table of more rows, all shards together (default: %(default)s, ~8 GB on disk)",
    )


def _score_options(args: argparse.Namespace) -> ScoreOptions:
    from job.config import ScoreOptions

    return ScoreOptions(
        top_k=args.top_k,
        keep_top=args.keep_top,
        block_users=args.block_users,
        max_rows=args.max_rows,
    )


def _config_from(args: argparse.Namespace) -> Config:
    from job.config import PublishOptions, build_config

    publish = getattr(args, "publish", None)
    config = build_config(
        data=args.data,
        out=args.out,
        preset=args.preset,
        epochs=args.epochs,
        seed=args.seed,
        test_fraction=args.test_fraction,
        val_fraction=args.val_fraction,
        split=args.split,
        cache_dir=args.cache_dir,
        score=_score_options(args) if hasattr(args, "top_k") else None,
        publish=PublishOptions(publish, args.endpoint_url, args.keep_runs) if publish else None,
    )
    if config.publish:
        from job.publish import parse_target

        parse_target(config.publish.target)  # a typo fails now, not after training
    _load_keras(args)
    return config


def _keras_verbosity() -> int:
    """Keras' progress bar at INFO, one line per epoch when not on a terminal, none under -q."""
    if log.getEffectiveLevel() > logging.INFO:
        return 0
    return 1 if sys.stderr.isatty() else 2


# ---------------------------------------------------------------------------------------
# Handlers: each returns an exit code


def cmd_train(args: argparse.Namespace) -> int:
    config = _config_from(args)  # validated before the slow imports
    from job.train import train_stage

    manifest = train_stage(config, verbose=_keras_verbosity())
    log.info("run %s written to %s", manifest.run_id, args.out)
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    config = _config_from(args)  # validated before the slow imports
    from job.pipeline import run_all

    result = run_all(config, verbose=_keras_verbosity())
    if result.site_url:
        print(result.site_url)  # stdout: the address alone, as `publish` prints it
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _load_keras(args)
    from job.recommend import example_for_user, format_example

    print(format_example(example_for_user(args.out, args.user, n_recommend=args.n)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from job.score import resolve_shard, score_stage

    # The shard comes from the flag or AWS Batch's environment.
    shard, options = resolve_shard(args.shard, os.environ), _score_options(args)
    _load_keras(args)
    score_stage(args.out, shard, options)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from job.store import merge_stage

    merge_stage(args.out)
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from job.site import render_site

    summary = render_site(args.out)
    log.info("site written to %s (open %s)", summary.site, summary.site / "index.html")
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    from job.preflight import require
    from job.publish import publish

    require(args.out, "publish")

    summary = publish(
        args.out, args.target, endpoint_url=args.endpoint_url, keep_runs=args.keep_runs
    )
    print(summary.url)  # stdout: the address alone, for scripts and the job summary
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    _load_keras(args)
    from job.bench import format_report, run_bench

    print(
        format_report(
            run_bench(
                args.shape,
                args.users,
                args.movies,
                args.ratings,
                args.top_k,
                args.block_users,
                args.reference_users,
                args.seed,
                args.preset,
            )
        )
    )
    return 0


def cmd_bench_job(args: argparse.Namespace) -> int:
    from job.config import build_config

    build_config(preset=args.preset or DEFAULT_PRESET, epochs=args.epochs)  # fail fast
    _load_keras(args)
    from job.benchjob import format_table, run_bench_job

    result = run_bench_job(
        args.shape,
        args.users,
        args.movies,
        args.ratings,
        out=args.out,
        data_dir=args.data_dir,
        preset=args.preset,
        epochs=args.epochs,
        seed=args.seed,
        keep_top=None if args.keep_top == 0 else args.keep_top,
        publish=not args.no_publish,
        verbose=_keras_verbosity(),
    )
    print(format_table(result))
    return 0


def cmd_bench_publish(args: argparse.Namespace) -> int:
    from job.publish.bench import bench_publish

    bench_publish(args.objects)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    config = _config_from(args)  # validated before the slow imports
    from job.tune import run_tune

    run_tune(config)
    return 0


def cmd_seeds(args: argparse.Namespace) -> int:
    config = _config_from(args)  # validated before the slow imports
    from job.tune import run_seeds

    run_seeds(config, args.seeds)
    return 0


# ---------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(
        name: str, handler: Callable[[argparse.Namespace], int], help: str
    ) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help, description=help)
        sub.set_defaults(handler=handler)
        return sub

    run = command(
        "run", cmd_run, "Run every stage: train, score, merge, render, and publish if asked."
    )
    _add_training_flags(run)
    _add_score_flags(run)
    run.add_argument(
        "--publish",
        metavar="TARGET",
        help="s3://BUCKET/PREFIX (or a local folder) to publish the run to",
    )
    run.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL or AWS)"
    )
    run.add_argument("--keep-runs", type=int, help="after publishing, keep only the newest N runs")

    train = command(
        "train",
        cmd_train,
        "Load and validate the data, split it, train the model, evaluate it against baselines.",
    )
    _add_training_flags(train)

    recommend = command(
        "recommend",
        cmd_recommend,
        "Print a user's top-rated movies and top recommendations (the article's example).",
    )
    recommend.add_argument(
        "--out", default="out", type=Path, help="a trained run's folder (default: %(default)s)"
    )
    recommend.add_argument(
        "--user", type=int, required=True, help="raw MovieLens user id, e.g. 557"
    )
    recommend.add_argument(
        "-n", type=int, default=5, help="number of recommendations (default: %(default)s)"
    )

    score = command(
        "score",
        cmd_score,
        "Predict a rating for every user's unwatched movies, and each user's top K.",
    )
    score.add_argument(
        "--out", default="out", type=Path, help="a trained run's folder (default: %(default)s)"
    )
    score.add_argument(
        "--shard",
        metavar="I/N",
        help="score only shard I of N (default: all users; or $AWS_BATCH_JOB_ARRAY_INDEX with $SHARD_COUNT)",
    )
    _add_score_flags(score)

    merge = command(
        "merge",
        cmd_merge,
        "Build recommendations.duckdb and the Parquet tables from the scored parts.",
    )
    merge.add_argument(
        "--out", default="out", type=Path, help="a scored run's folder (default: %(default)s)"
    )

    render = command("render", cmd_render, "Render the static site into OUT/site.")
    render.add_argument(
        "--out", default="out", type=Path, help="a merged run's folder (default: %(default)s)"
    )

    publish = command(
        "publish", cmd_publish, "Upload a finished run to s3://BUCKET/PREFIX or a local folder."
    )
    publish.add_argument("out", type=Path, help="the run's output folder")
    publish.add_argument("target", help="s3://BUCKET/PREFIX, file://PATH or a local folder")
    publish.add_argument(
        "--endpoint-url", help="S3-compatible endpoint (default: $AWS_ENDPOINT_URL or AWS)"
    )
    publish.add_argument(
        "--keep-runs", type=int, help="keep only the newest N runs under the prefix"
    )

    bench = command(
        "bench",
        cmd_bench,
        "Benchmark scoring: the fast path against the article's per-user predict.",
    )
    bench.add_argument(
        "--shape",
        choices=["ml-latest-small", "ml-1m", "ml-10m", "ml-25m", "ml-32m"],
        help="a MovieLens dataset's size; --users/--movies/--ratings override it",
    )
    bench.add_argument(
        "--users", type=int, help="synthetic users (default: the shape's, else 2000)"
    )
    bench.add_argument(
        "--movies", type=int, help="synthetic movies (default: the shape's, else 5000)"
    )
    bench.add_argument(
        "--ratings",
        type=int,
        help="synthetic ratings (default: the shape's ratings per user x users, else 165 per user)",
    )
    bench.add_argument(
        "--top-k", type=int, default=10, help="top K per user (default: %(default)s)"
    )
    bench.add_argument(
        "--block-users",
        type=int,
        help="users per block (default: sized to ~128 MiB of intermediates)",
    )
    bench.add_argument(
        "--reference-users",
        type=int,
        default=5,
        help="users timed on the article's path, one model.predict each (default: %(default)s)",
    )
    bench.add_argument(
        "--seed",
        type=int,
        default=0,
        help="seed of the synthetic data and the random weights (default: %(default)s)",
    )
    bench.add_argument(
        "--preset",
        default=DEFAULT_PRESET,
        help="whose architecture and ranker to score with (default: %(default)s; seed: the article's network)",
    )

    bench_job = command(
        "bench-job",
        cmd_bench_job,
        "Run every stage of the job on a synthetic MovieLens-shaped dataset; measure each stage.",
    )
    bench_job.add_argument(
        "--shape",
        choices=["ml-latest-small", "ml-1m", "ml-10m", "ml-25m", "ml-32m"],
        help="a MovieLens dataset's size; --users/--movies/--ratings override it",
    )
    bench_job.add_argument("--users", type=int, help="synthetic users (default: the shape's)")
    bench_job.add_argument("--movies", type=int, help="synthetic movies (default: the shape's)")
    bench_job.add_argument(
        "--ratings", type=int, help="synthetic ratings (default: the shape's per user x users)"
    )
    bench_job.add_argument(
        "--out",
        default=Path("bench-job-out"),
        type=Path,
        help="the run folder (default: %(default)s)",
    )
    bench_job.add_argument(
        "--data-dir",
        type=Path,
        help="where the synthetic MovieLens folder is written or reused (default: the dataset cache's synthetic/SHAPE-...)",
    )
    bench_job.add_argument("--preset", help=f"model preset (default: {DEFAULT_PRESET})")
    bench_job.add_argument("--epochs", type=int, help="maximum epochs (default: the preset's)")
    bench_job.add_argument(
        "--keep-top",
        type=int,
        default=100,
        help="predictions kept per user; 0 keeps every unwatched pair (default: %(default)s)",
    )
    bench_job.add_argument(
        "--no-publish", action="store_true", help="leave out publishing to a local S3 server"
    )
    bench_job.add_argument(
        "--seed", type=int, default=42, help="seed of the data and the run (default: %(default)s)"
    )

    bench_publish = command(
        "bench-publish",
        cmd_bench_publish,
        "Benchmark publishing: upload a synthetic site to a local moto S3 server, then re-run it.",
    )
    bench_publish.add_argument(
        "--objects",
        type=int,
        default=10_000,
        help="files in the synthetic site (default: %(default)s)",
    )

    tune = command(
        "tune",
        cmd_tune,
        "Grid-search model settings (job/tune.py's TUNE_GRID) on the validation set; writes OUT/tune.json.",
    )
    _add_training_flags(
        tune,
        preset_default=TUNE_BASE,
        preset_help="preset whose settings the grid's values replace (default: %(default)s, the grid's declared base)",
    )

    seeds = command(
        "seeds",
        cmd_seeds,
        "Train and test a preset once per seed; print mean ± std; writes OUT/seeds.json.",
    )
    _add_training_flags(seeds)
    seeds.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="seeds, each its own split, initialisation and shuffling (default: 1 2 3)",
    )
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
        import keras

        if keras.backend.backend() == "tensorflow":
            import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


class _Signals:
    """SIGINT (Ctrl-C) and SIGTERM (a cancelled Batch job, `docker stop`) while a stage runs.

    The first one raises KeyboardInterrupt in the main thread: every atomic write in flight
    removes its temporary on the way out, so no output is left half-written, and ``main``
    prints one line and exits 128 + the signal's number (130, 143). Some libraries turn the
    interrupt into their own error (DuckDB's "Query interrupted"); whatever is raised once a
    signal came is reported as the interruption it is. A second signal ends the process at
    once, for a stage stuck where Python cannot reach it.
    """

    def __init__(self) -> None:
        self.received: int | None = None
        self.previous: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        for number in (signal.SIGINT, signal.SIGTERM):
            # ValueError: not the main thread (a test calling main() from a thread).
            with contextlib.suppress(ValueError):
                self.previous[number] = signal.signal(number, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for number, handler in self.previous.items():
            signal.signal(number, handler)

    def _handle(self, number: int, frame: object) -> None:
        if self.received is not None:
            print(f"error: {self.describe()}", file=sys.stderr, flush=True)
            os._exit(128 + number)
        self.received = number
        raise KeyboardInterrupt

    def describe(self) -> str:
        # Short, as shells and CI logs show them; no output was left half-written.
        return "terminated (SIGTERM)" if self.received == signal.SIGTERM else "interrupted"

    @property
    def code(self) -> int:
        return 128 + (self.received or signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.quiet, args.verbose)
    started = time.perf_counter()
    with _Signals() as signals:
        try:
            code = args.handler(args)
        except KeyboardInterrupt:
            print(f"error: {signals.describe()}", file=sys.stderr)
            return signals.code
        except Exception as exc:
            if signals.received is not None:  # a library's own error for the interruption
                print(f"error: {signals.describe()}", file=sys.stderr)
                return signals.code
            if isinstance(exc, ConfigError):
                print(f"error: {exc}", file=sys.stderr)
                return 2
            if isinstance(exc, JobError):
                print(f"error: {exc}", file=sys.stderr)
                return 1
            from job.files import full_or_read_only

            # A write outside job.files.atomic_path (a library's cache, a log) on a full or
            # read-only file system; anything else is a bug, and its traceback is the report.
            error = full_or_read_only(exc, getattr(args, "out", None) or Path.cwd())
            if error is None:
                raise
            print(f"error: {error}", file=sys.stderr)
            return 1
        if signals.received is not None:
            print(f"error: {signals.describe()}", file=sys.stderr)
            return signals.code
    log.debug("%s finished in %.1f s", args.command, time.perf_counter() - started)
    return code
