"""Train / validation / test splits. The test set is never seen by training or early stopping."""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN, VAL, TEST = 0, 1, 2


def split_ratings(
    ratings: pd.DataFrame, kind: str, test_fraction: float, val_fraction: float, seed: int
) -> np.ndarray:
    """A label per rating: TRAIN, VAL or TEST.

    ``random``: each rating's label comes from a seeded hash of its (user, movie) pair, so the
    fractions hold to within sampling noise and a rating keeps its label when the dataset grows:
    a run warm-started from a previous run's model (``train --warm-start``) is never validated
    or tested on ratings that model trained on. ``temporal``: within each user, the latest
    ``test_fraction`` of their ratings are test and the ones just before are validation, so
    the model is judged on the future of each user.
    """
    n = len(ratings)
    if kind == "random":
        position = pair_positions(ratings["user_id"], ratings["movie_id"], seed)
    else:
        # rank within user by time, as a fraction: 0 = oldest, close to 1 = newest
        by_time = ratings.assign(_row=np.arange(n)).sort_values(["user_id", "timestamp", "_row"])
        rank = by_time.groupby("user_id").cumcount().to_numpy()
        size = by_time.groupby("user_id")["user_id"].transform("size").to_numpy()
        position = np.empty(n, dtype="float64")
        position[by_time["_row"].to_numpy()] = rank / size
    labels = np.full(n, TRAIN, dtype="int8")
    labels[position >= 1.0 - test_fraction - val_fraction] = VAL
    labels[position >= 1.0 - test_fraction] = TEST
    return labels


def pair_positions(users: pd.Series, movies: pd.Series, seed: int) -> np.ndarray:
    """A uniform place in [0, 1) for each (user, movie) pair, the same in every dataset that
    holds the pair: splitmix64's finaliser over the pair's ids and the seed."""
    with np.errstate(over="ignore"):  # uint64 arithmetic wraps by design
        x = (users.to_numpy("uint64") << np.uint64(32)) ^ movies.to_numpy("uint64")
        x = x + np.uint64(seed + 1) * np.uint64(0x9E3779B97F4A7C15)
        x ^= x >> np.uint64(30)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(27)
        x *= np.uint64(0x94D049BB133111EB)
        x ^= x >> np.uint64(31)
    return (x >> np.uint64(11)).astype("float64") / float(1 << 53)
