"""One frozen Config, made from flags in one place, with every option validated there."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from job.core.config import (
    DEFAULT_PRESET,
    PRESETS,
    Config,
    PublishOptions,
    ScoreOptions,
    build_config,
    default_of,
    model_config,
)
from job.core.errors import ConfigError


def test_build_config_without_flags_is_configs_defaults() -> None:
    made = build_config()
    assert made == Config(cache_dir=made.cache_dir)
    assert made.preset == DEFAULT_PRESET and made.model == PRESETS[DEFAULT_PRESET]


def test_a_flag_left_as_none_takes_the_default() -> None:
    assert build_config(seed=None, split=None, epochs=None) == build_config()


def test_model_flags_replace_the_presets() -> None:
    made = build_config(preset="seed", epochs=3, ranker="ease", out="o", cache_dir="c")
    assert made.model == dataclasses.replace(PRESETS["seed"], epochs=3, ranker="ease")
    assert (made.out, made.cache_dir) == (Path("o"), Path("c"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ({"preset": "nope"}, "unknown preset 'nope'"),
        ({"colour": "red"}, "unknown model setting(s) ['colour']"),
        ({"test_fraction": 1.0}, "--test-fraction must be in [0, 1)"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "--val-fraction must be in (0, 1)"),
        ({"split": "sideways"}, "--split must be 'random' or 'temporal'"),
        ({"epochs": 0}, "model.epochs must be at least 1"),
        ({"score": None, "ranker": "best"}, "unknown ranker 'best'"),
        ({"score": None, "l2_scope": "rows"}, "unknown l2_scope 'rows'"),
    ],
)
def test_bad_flags_are_refused_when_the_config_is_made(flags: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        build_config(**flags)
    assert message in str(info.value)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: ScoreOptions(top_k=0), "--top-k must be at least 1 (got 0)"),
        (lambda: ScoreOptions(keep_top=0), "--keep-top must be at least 1 (got 0)"),
        (lambda: PublishOptions("s3://b/p", keep_runs=0), "--keep-runs must be at least 1 (got 0)"),
    ],
)
def test_options_validate_once_when_made(make: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make()  # type: ignore[operator]


def test_default_of_reads_the_dataclass_field() -> None:
    assert default_of(Config, "seed") == Config().seed
    assert default_of(ScoreOptions, "top_k") == ScoreOptions().top_k
    with pytest.raises(KeyError):
        default_of(Config, "nope")


def test_model_config_names_the_known_presets() -> None:
    with pytest.raises(ConfigError, match=", ".join(sorted(PRESETS))):
        model_config("nope")
