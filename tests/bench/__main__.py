"""Development tools: benchmarks and the model search, kept out of the shipped package.

Run from the repository root with the tests folder on the path (`make bench ARGS=...`):

    PYTHONPATH=tests python -m bench scoring        the fast scoring path against the article's
    PYTHONPATH=tests python -m bench warm-start     a warm start against a cold one, split by time
    PYTHONPATH=tests python -m bench publish        uploads to a local moto S3 server, then a re-run
    PYTHONPATH=tests python -m bench tune           grid search on the validation set (tune.json)
    PYTHONPATH=tests python -m bench seeds          a preset's test metrics over several seeds
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence

from job import flags
from job.cli import Handler, import_keras_quietly, keras_verbosity
from job.cli import main as job_main
from job.core.config import TUNE_BASE, Config, ScoreOptions, default_of
from job.core.errors import ConfigError
from job.flags import flag, shape_flags, training_flags


def scoring_flags(parser: argparse.ArgumentParser) -> None:
    shape_flags(parser, (", else 2000", ", else 5000", ", else 165 per user"))
    flag(parser, "--top-k", "top K per user", type=int, default=default_of(ScoreOptions, "top_k"))
    flag(
        parser,
        "--block-users",
        "users per block (default: sized to ~128 MiB of intermediates)",
        type=int,
    )
    flag(
        parser,
        "--reference-users",
        "users timed on the article's path, one model.predict each",
        type=int,
        default=5,
    )
    flag(parser, "--seed", "seed of the synthetic data and the random weights", type=int, default=0)
    flag(
        parser,
        "--preset",
        "whose architecture and ranker to score with; seed: the article's network",
        default=default_of(Config, "preset"),
    )
    parser.add_argument(
        "--no-whole-process",
        dest="whole_process",
        action="store_false",
        help="leave out timing `python -m job score` as a process of its own on a run folder",
    )


def cmd_scoring(args: argparse.Namespace) -> int:
    """Benchmark scoring: the fast path against the article's per-user predict."""
    import_keras_quietly()
    from bench.scoring import BenchOptions, format_report, run_bench

    names = [f.name for f in dataclasses.fields(BenchOptions)]
    options = BenchOptions(**{name: getattr(args, name) for name in names})
    print(format_report(run_bench(options)))
    return 0


def warm_start_flags(parser: argparse.ArgumentParser) -> None:
    training_flags(parser)
    flag(
        parser,
        "--quantile",
        "the first run trains on the ratings before this quantile of the timestamps",
        type=float,
        default=0.9,
    )


def cmd_warm_start(args: argparse.Namespace) -> int:
    """Measure a warm start: train before a time quantile, then on all ratings cold and warm."""
    config = flags.config_from(args)
    if not 0.0 < args.quantile < 1.0:
        raise ConfigError(f"--quantile must be in (0, 1) (got {args.quantile})")
    import_keras_quietly()
    from bench.warmstart import format_table, run_warm_bench

    print(format_table(run_warm_bench(config, args.quantile, keras_verbosity())))
    return 0


def publish_flags(parser: argparse.ArgumentParser) -> None:
    flag(parser, "--objects", "files in the synthetic site", type=int, default=10_000)


def cmd_publish(args: argparse.Namespace) -> int:
    """Benchmark publishing: a synthetic site to a local moto S3 server, then a re-run."""
    from bench.publish import bench_publish

    bench_publish(args.objects)
    return 0


def tune_flags(parser: argparse.ArgumentParser) -> None:
    training_flags(
        parser,
        TUNE_BASE,
        "preset whose settings the grid's values replace (the grid's declared base)",
    )


def cmd_tune(args: argparse.Namespace) -> int:
    """Grid-search model settings (bench.tune.TUNE_GRID) on validation; writes OUT/tune.json."""
    config = flags.config_from(args)
    import_keras_quietly()
    from bench.tune import run_tune

    run_tune(config)
    return 0


def seeds_flags(parser: argparse.ArgumentParser) -> None:
    training_flags(parser)
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[1, 2, 3],
        help="seeds, each its own split, initialisation and shuffling (default: 1 2 3)",
    )


def cmd_seeds(args: argparse.Namespace) -> int:
    """Train and test a preset once per seed; print mean ± std; writes OUT/seeds.json."""
    config = flags.config_from(args)
    import_keras_quietly()
    from bench.tune import run_seeds

    run_seeds(config, args.seeds)
    return 0


TOOLS: dict[str, tuple[Handler, flags.Group]] = {
    "scoring": (cmd_scoring, scoring_flags),
    "warm-start": (cmd_warm_start, warm_start_flags),
    "publish": (cmd_publish, publish_flags),
    "tune": (cmd_tune, tune_flags),
    "seeds": (cmd_seeds, seeds_flags),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    tools = parser.add_subparsers(dest="command", required=True, metavar="TOOL")
    for name, (handler, group) in TOOLS.items():
        sub = tools.add_parser(name, help=(handler.__doc__ or name))
        sub.set_defaults(handler=handler)
        group(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # The job's own runner: one-line errors, logging and signals, as for `python -m job`.
    return job_main(argv, build_parser())


if __name__ == "__main__":
    sys.exit(main())
