"""Train / validation / test splits. The test set is never seen by training or early stopping."""

from __future__ import annotations

import numpy as np
import pandas as pd

TRAIN, VAL, TEST = 0, 1, 2


def split_ratings(
    ratings: pd.DataFrame, kind: str, test_fraction: float, val_fraction: float, seed: int
) -> np.ndarray:
    """A label per rating: TRAIN, VAL or TEST.

    ``random``: one seeded shuffle of all ratings. ``temporal``: within each user, the latest
    ``test_fraction`` of their ratings are test and the ones just before are validation, so
    the model is judged on the future of each user.
    """
    n = len(ratings)
    if kind == "random":
        order = np.random.default_rng(seed).permutation(n)
        position = np.empty(n, dtype="float64")
        position[order] = np.arange(n) / n  # each rating's place in the shuffle, in [0, 1)
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
