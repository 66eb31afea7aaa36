"""The CLI's flag groups: each default is Config's, and flags make a validated Config."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from job.cli import build_parser
from job.core.config import Config, ScoreOptions, build_config, default_of
from job.core.errors import ConfigError
from job.flags import config_from, training_flags


def test_training_defaults_are_configs() -> None:
    parser = argparse.ArgumentParser()
    training_flags(parser)
    args = parser.parse_args([])
    for name in ("data", "out", "preset", "seed", "test_fraction", "val_fraction", "split"):
        assert getattr(args, name) == default_of(Config, name), name


def test_run_flags_make_the_config_build_config_makes() -> None:
    args = build_parser().parse_args(["run", "--preset", "seed", "--epochs", "2", "--top-k", "4"])
    made = config_from(args)
    assert made == build_config(
        preset="seed", epochs=2, score=ScoreOptions(top_k=4), cache_dir=made.cache_dir
    )
    assert made.score.max_rows == default_of(ScoreOptions, "max_rows")
    assert made.out == Path(default_of(Config, "out"))


def test_every_option_is_validated_when_the_config_is_made() -> None:
    args = build_parser().parse_args(["run", "--publish", "s3://b/p", "--keep-runs", "0"])
    with pytest.raises(ConfigError, match="--keep-runs must be at least 1"):
        config_from(args)
