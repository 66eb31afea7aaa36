"""Command line: a thin layer that parses flags, calls the stage, and turns errors into one line.

Each stage also runs alone on a previous stage's run folder (--out), so one stage can be timed,
re-run, or run on another machine. `python -m job COMMAND --help` shows a command's flags.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from job import flags
from job.core.config import ScoreOptions
from job.core.errors import ConfigError, JobError
from job.core.signals import Interrupts

log = logging.getLogger("job")


def keras_verbosity() -> int:
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

    result = run_all(config, verbose=keras_verbosity())
    if result.site_url:
        print(result.site_url)  # stdout: the address alone, as `publish` prints it
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    config = flags.config_from(args)  # validated before the slow imports
    _load_keras(args)
    from job.pipeline import train

    train(config, verbose=keras_verbosity())
    return 0


def cmd_recommend(args: argparse.Namespace) -> int:
    _load_keras(args)
    from job.stages.recommend import example_for_user, format_example

    print(format_example(example_for_user(args.out, args.user, n_recommend=args.n)))
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from job.pipeline import score
    from job.stages.score import resolve_shard

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
    from job.runfolder.preflight import require

    require(args.out, "publish")
    print(publish(args.out, options).value.url)  # stdout: the address alone, for scripts
    return 0


def cmd_pull_latest(args: argparse.Namespace) -> int:
    from job.publish.pull import pull_latest

    print(pull_latest(args.source, args.out, args.endpoint_url))  # stdout: the run id
    return 0


def cmd_bench_job(args: argparse.Namespace) -> int:
    from job.benchjob import format_table, run_bench_job, synthetic_folder
    from job.data.synthetic import resolve_shape

    size = resolve_shape(args.shape, args.users, args.movies, args.ratings)
    data = args.data_dir or synthetic_folder(size, args.seed, args.signal)
    keep_top = None if args.keep_top == 0 else args.keep_top
    config = flags.config_from(args, data=str(data), score=ScoreOptions(keep_top=keep_top))
    _load_keras(args)
    result = run_bench_job(config, size, not args.no_publish, keras_verbosity(), args.signal)
    print(format_table(result))
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
    "bench-job": (
        cmd_bench_job,
        "Run every stage of the job on a synthetic MovieLens-shaped dataset; measure each stage.",
        (flags.bench_job_flags,),
    ),
}


# How `python -m job --help` lists the commands: a user's path first, tools last.
COMMAND_GROUPS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("The whole job", ("run",)),
    ("One stage at a time, on a run folder", ("train", "score", "merge", "render", "publish")),
    ("Using a run", ("recommend", "pull-latest")),
    ("Steps of the GitHub workflow", ("shard-plan", "run-summary", "publish-summary")),
    ("Sizing a runner", ("bench-job",)),
)


def _logging_flags(parser: argparse.ArgumentParser, default: Any) -> None:
    parser.add_argument(
        "-q", "--quiet", action="store_true", default=default, help="only warnings and errors"
    )
    parser.add_argument(
        "-v", "--verbose", action="store_true", default=default, help="debug logging"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m job", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    _logging_flags(parser, False)
    # -q and -v also after the command; there they only override what was given before it.
    after_command = argparse.ArgumentParser(add_help=False)
    _logging_flags(after_command, argparse.SUPPRESS)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (handler, help, groups) in COMMANDS.items():
        sub = commands.add_parser(name, description=help, parents=[after_command])
        sub.set_defaults(handler=handler)
        for group in groups:
            group(sub)
    from job.workflow import add_commands as add_workflow_commands

    add_workflow_commands(commands, [after_command])
    parser.description = _command_list(commands.choices)
    return parser


def _command_list(parsers: dict[str, argparse.ArgumentParser]) -> str:
    width = max(len(name) for name in parsers) + 2
    lines = [__doc__ or ""]
    for title, names in COMMAND_GROUPS:
        lines.append(f"{title}:")
        lines += [f"  {name:<{width}}{parsers[name].description}" for name in names]
        lines.append("")
    return "\n".join(lines).rstrip()


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
    draws, a noticeable part of every Keras process's start-up. While Keras
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


def main(argv: Sequence[str] | None = None, parser: argparse.ArgumentParser | None = None) -> int:
    """Parse, run the command's handler, and turn errors and signals into exit codes
    (``parser``: another command set on the same runner, as the development tools use)."""
    args = (parser or build_parser()).parse_args(argv)
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
    from job.core.files import full_or_read_only

    # A write outside job.core.files.atomic_path (a library's cache, a log) on a full or
    # read-only file system.
    error = full_or_read_only(exc, out)
    if error is None:
        raise exc
    print(f"error: {error}", file=sys.stderr)
    return 1
