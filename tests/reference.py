"""The tests' oracle for scoring: the slow, obvious answer the fast path is held to."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd

from job.data.interactions import Interactions
from job.models.rating import predict_ratings


def reference_predictions(
    model: keras.Model, inputs: Interactions, users: np.ndarray
) -> pd.DataFrame:
    """The slow, obvious answer: ``model.predict`` on every explicit unwatched pair.

    Returns user, movie (encoded), score (the ranking score: the model's unclipped rating, or
    the movie's popularity for cold pairs), predicted_rating (clipped) and cold_start,
    ordered by user then movie.
    """
    users = np.asarray(users, dtype="int32")
    unseen = ~inputs.seen.mask(users)
    rows, movies = np.nonzero(unseen)
    pair_users = users[rows]
    model_rating = predict_ratings(model, pair_users, movies)
    cold = inputs.cold.cold_users[pair_users] | inputs.cold.cold_movies[movies]
    score = np.where(cold, inputs.cold.popularity[movies], model_rating)
    return pd.DataFrame(
        {
            "user": pair_users,
            "movie": movies.astype("int32"),
            "score": score,
            "predicted_rating": np.clip(score, inputs.scale.low, inputs.scale.high),
            "cold_start": cold,
        }
    )
