"""job.stages.fit: the settings a fit runs with, as the training set grows."""

from __future__ import annotations

import dataclasses
import math

import pytest

from job.core.config import PRESETS, model_config
from job.stages.fit import LARGE_TRAINING, MAX_BATCH, training_settings


def test_training_settings_change_nothing_below_the_scale_threshold() -> None:
    for preset in PRESETS.values():
        assert training_settings(preset, 80_000) is preset  # ml-latest-small's train split
        assert training_settings(preset, LARGE_TRAINING - 1) is preset


@pytest.mark.parametrize(("n_train", "batch"), [(8_000_000, 8_192), (20_000_000, MAX_BATCH)])
def test_training_settings_at_scale_grow_the_batch_and_the_learning_rate(
    n_train: int, batch: int
) -> None:
    tuned = model_config("tuned")
    large = training_settings(tuned, n_train)
    assert large.batch_size == batch
    assert large.learning_rate == pytest.approx(
        tuned.learning_rate * math.sqrt(batch / tuned.batch_size)
    )
    assert large.patience == 1 and large.epochs <= 10
    # Warmed up over half an epoch, halved every epoch.
    steps_per_epoch = math.ceil(n_train / batch)
    assert abs(large.warmup_steps - steps_per_epoch / 2) <= 0.5
    assert large.halve_every == steps_per_epoch
    # Nothing else changes.
    assert (
        dataclasses.replace(
            large,
            batch_size=tuned.batch_size,
            learning_rate=tuned.learning_rate,
            warmup_steps=0,
            halve_every=0,
            patience=tuned.patience,
            epochs=tuned.epochs,
        )
        == tuned
    )
    seed = model_config("seed")  # patience 0 stays 0
    assert training_settings(seed, n_train).patience == 0
