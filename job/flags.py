"""The command line's flags: each group defined once, every default ``Config``'s; and the
typed options (``Config``, ``ScoreOptions``, ``PublishOptions``) made from them, which
validate every value (``job.cli`` defines the commands that use the groups)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from job.core.config import Config, PublishOptions, ScoreOptions, build_config, default_of
from job.data.shapes import SHAPES, SIGNALS
from job.publish.target import parse_target

PRESET_HELP = "model preset: seed (the article's network), tuned, dlrm, classes, ..."

Group = Callable[[argparse.ArgumentParser], None]  # adds a group of flags to a command


def flag(parser: argparse.ArgumentParser, name: str, help: str, **kw: Any) -> None:
    """A flag whose help shows its default, when it has one."""
    shown = " (default: %(default)s)" if kw.get("default") is not None else ""
    parser.add_argument(name, help=help + shown, **kw)


def out_flag(parser: argparse.ArgumentParser, what: str, default: Path | None = None) -> None:
    flag(parser, "--out", what, type=Path, default=default or default_of(Config, "out"))


def training_flags(
    parser: argparse.ArgumentParser, preset: str | None = None, preset_help: str = PRESET_HELP
) -> None:
    flag(
        parser,
        "--data",
        "dataset name (ml-latest-small, ml-1m, ...) or a folder of MovieLens CSVs",
        default=default_of(Config, "data"),
    )
    out_flag(parser, "output folder")
    flag(parser, "--preset", preset_help, default=preset or default_of(Config, "preset"))
    flag(parser, "--epochs", "maximum epochs (default: the preset's)", type=int)
    flag(
        parser,
        "--seed",
        "one seed for split, initialisation and shuffling",
        type=int,
        default=default_of(Config, "seed"),
    )
    flag(
        parser,
        "--test-fraction",
        "held-out test share; 0 trains on every rating given",
        type=float,
        default=default_of(Config, "test_fraction"),
    )
    flag(
        parser,
        "--val-fraction",
        "validation share for early stopping",
        type=float,
        default=default_of(Config, "val_fraction"),
    )
    flag(
        parser,
        "--split",
        "random, or per user by time",
        choices=["random", "temporal"],
        default=default_of(Config, "split"),
    )
    cache_dir_flag(parser)


def warm_start_flag(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--warm-start",
        "start from this run folder's model (same preset) for the users and movies it knew; "
        "`pull-latest` fetches the published one",
        type=Path,
        metavar="PREV_OUT",
    )


def cache_dir_flag(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--cache-dir",
        "where downloads (datasets, the SQL page's engine) are kept (default: $MOVIELENS_CACHE or ~/.cache/movielens-job)",
        type=Path,
    )


def render_flags(parser: argparse.ArgumentParser) -> None:
    out_flag(parser, "a merged run's folder")
    cache_dir_flag(parser)


def score_flags(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--top-k",
        "recommendations kept per user in top_k",
        type=int,
        default=default_of(ScoreOptions, "top_k"),
    )
    flag(
        parser,
        "--keep-top",
        "keep only N predictions per user in `predictions` (for catalogues too large to store in full)",
        type=int,
    )
    flag(
        parser,
        "--block-users",
        "users scored per block, a block per core at once; bounds memory (default: sized to ~128 MiB of intermediates)",
        type=int,
    )
    flag(
        parser,
        "--max-rows",
        "refuse, before scoring, a `predictions` table of more rows, all shards together; ~8 GB on disk",
        type=int,
        default=default_of(ScoreOptions, "max_rows"),
    )


def endpoint_url_flag(parser: argparse.ArgumentParser) -> None:
    flag(parser, "--endpoint-url", "S3-compatible endpoint (default: $AWS_ENDPOINT_URL or AWS)")


def publish_flags(parser: argparse.ArgumentParser, keep_runs: str) -> None:
    endpoint_url_flag(parser)
    flag(parser, "--keep-runs", keep_runs, type=int)


def shape_flags(parser: argparse.ArgumentParser, otherwise: tuple[str, str, str]) -> None:
    flag(
        parser,
        "--shape",
        "a MovieLens dataset's size; --users/--movies/--ratings override it",
        choices=list(SHAPES),
    )
    flag(parser, "--users", f"synthetic users (default: the shape's{otherwise[0]})", type=int)
    flag(parser, "--movies", f"synthetic movies (default: the shape's{otherwise[1]})", type=int)
    flag(
        parser,
        "--ratings",
        f"synthetic ratings (default: the shape's ratings per user x users{otherwise[2]})",
        type=int,
    )


def out_of(what: str) -> Group:
    """``--out``, described as ``what`` (a trained run's folder, a merged run's, ...)."""
    return lambda parser: out_flag(parser, what)


def run_publish_flags(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--publish",
        "s3://BUCKET/PREFIX (or a local folder) to publish the run to",
        metavar="TARGET",
    )
    publish_flags(parser, "after publishing, keep only the newest N runs")


def recommend_flags(parser: argparse.ArgumentParser) -> None:
    out_flag(parser, "a trained run's folder")
    flag(parser, "--user", "raw MovieLens user id, e.g. 557", type=int, required=True)
    flag(parser, "-n", "number of recommendations", type=int, default=5)


def shard_flags(parser: argparse.ArgumentParser) -> None:
    out_flag(parser, "a trained run's folder")
    flag(
        parser,
        "--shard",
        "score only shard I of N (default: all users; or $AWS_BATCH_JOB_ARRAY_INDEX with $SHARD_COUNT)",
        metavar="I/N",
    )


def publish_command_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="the run's output folder")
    parser.add_argument("target", help="s3://BUCKET/PREFIX, file://PATH or a local folder")
    publish_flags(parser, "keep only the newest N runs under the prefix")


def pull_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "source",
        help="the published site's address (https://...), s3://BUCKET/PREFIX or a local folder",
    )
    out_flag(
        parser, "folder for the run's run.json, model.keras and encoding.json", Path("previous")
    )
    endpoint_url_flag(parser)


def bench_job_flags(parser: argparse.ArgumentParser) -> None:
    shape_flags(parser, ("", "", ""))
    out_flag(parser, "the run folder", default=Path("bench-job-out"))
    flag(
        parser,
        "--data-dir",
        "where the synthetic MovieLens folder is written or reused (default: the dataset cache's synthetic/SHAPE-...)",
        type=Path,
    )
    flag(parser, "--preset", PRESET_HELP, default=default_of(Config, "preset"))
    flag(parser, "--epochs", "maximum epochs (default: the preset's)", type=int)
    flag(
        parser,
        "--signal",
        "what the synthetic ratings are made of: genre (taste x genre, movie quality, user "
        "bias) or latent (user x movie factors, no bias: the global mean is the best baseline)",
        choices=list(SIGNALS),
        default="genre",
    )
    flag(
        parser,
        "--keep-top",
        "predictions kept per user; 0 keeps every unwatched pair",
        type=int,
        default=100,
    )
    parser.add_argument(
        "--no-publish", action="store_true", help="leave out publishing (to a local folder)"
    )
    flag(
        parser,
        "--seed",
        "seed of the data and the run",
        type=int,
        default=default_of(Config, "seed"),
    )


def config_from(args: argparse.Namespace, **more: Any) -> Config:
    """The run's Config from the flags (validated: a bad one fails before the slow imports)."""
    names = (
        "data",
        "out",
        "preset",
        "epochs",
        "seed",
        "test_fraction",
        "val_fraction",
        "split",
        "cache_dir",
        "warm_start",
    )
    flags = {name: getattr(args, name, None) for name in names}
    if getattr(args, "top_k", None) is not None:
        flags["score"] = score_options(args)
    if getattr(args, "publish", None):
        flags["publish"] = publish_options(args, args.publish)
    return build_config(**{**flags, **more})


def score_options(args: argparse.Namespace) -> ScoreOptions:
    return ScoreOptions(args.top_k, args.keep_top, args.block_users, args.max_rows)


def publish_options(args: argparse.Namespace, target: str | None = None) -> PublishOptions:
    """The publish flags, with the target parsed now: a bad bucket fails before any training."""
    options = PublishOptions(target or args.target, args.endpoint_url, args.keep_runs)
    parse_target(options.target)
    return options
