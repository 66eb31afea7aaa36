"""Keras rating models, written with Keras layers and ``keras.ops`` only.

Every model is *factorised* for fast scoring: ``user_parts`` depends only on the user,
``movie_parts`` only on the movie, and ``pair_scores`` combines a block of users with every
movie. ``call`` is the same computation on explicit (user, movie) pairs, which is what
training and the reference scoring path use, so the two paths cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from job.config import ModelConfig


@keras.saving.register_keras_serializable(package="job")
class RatingModel(keras.Model):
    """The article's network: user and movie embeddings -> Dense stack -> centred rating.

    The first Dense layer over ``[user; movie]`` equals ``user @ W_u + movie @ W_m + b``, so
    the fast path computes ``user @ W_u`` once per user and ``movie @ W_m + b`` once per
    movie. Optional per-user and per-movie biases are added to the output.

    Inputs: an int array (batch, 2) of encoded (user, movie) indexes.
    Output: (batch, 1) predicted rating minus ``rating_mean``.
    """

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        model_config: dict[str, Any],
        rating_mean: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_users = n_users
        self.n_movies = n_movies
        self.model_config = dict(model_config)
        self.rating_mean = float(rating_mean)
        cfg = ModelConfig(**_tuples(model_config))
        regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
        self.user_embedding = layers.Embedding(
            n_users, cfg.user_dim, embeddings_regularizer=regularizer, name="user_embedding"
        )
        self.movie_embedding = layers.Embedding(
            n_movies, cfg.movie_dim, embeddings_regularizer=regularizer, name="movie_embedding"
        )
        self.hidden = [
            layers.Dense(units, activation="relu", name=f"hidden_{i}")
            for i, units in enumerate(cfg.hidden)
        ]
        self.dropouts = [layers.Dropout(cfg.dropout) for _ in cfg.hidden] if cfg.dropout else []
        self.prediction = layers.Dense(1, activation="linear", name="prediction")
        self.biases = cfg.biases
        if cfg.biases:
            self.user_bias = layers.Embedding(n_users, 1, embeddings_initializer="zeros", name="user_bias")
            self.movie_bias = layers.Embedding(
                n_movies, 1, embeddings_initializer="zeros", name="movie_bias"
            )

    # -- the factorised form -------------------------------------------------------------

    def user_parts(self, users: Any) -> Any:
        """(n, h0 [+1]): the user's share of the first Dense layer [and its bias]."""
        first = self.hidden[0]
        w_user = first.kernel[: self.user_embedding.output_dim]
        parts = ops.matmul(self.user_embedding(users), w_user)
        if self.biases:
            parts = ops.concatenate([parts, self.user_bias(users)], axis=-1)
        return parts

    def movie_parts(self, movies: Any) -> Any:
        """(n, h0 [+1]): the movie's share of the first Dense layer plus its bias term."""
        first = self.hidden[0]
        w_movie = first.kernel[self.user_embedding.output_dim :]
        parts = ops.matmul(self.movie_embedding(movies), w_movie) + first.bias
        if self.biases:
            parts = ops.concatenate([parts, self.movie_bias(movies)], axis=-1)
        return parts

    def pair_scores(self, user_parts: Any, movie_parts: Any, training: bool = False) -> Any:
        """Centred ratings for every pair of broadcastable ``user_parts`` and ``movie_parts``.

        Shapes: (..., h) and (..., h) -> (...); e.g. (B, 1, h) with (1, M, h) gives (B, M).
        """
        width = self.hidden[0].units
        x = ops.relu(user_parts[..., :width] + movie_parts[..., :width])
        if self.dropouts:
            x = self.dropouts[0](x, training=training)
        for i, layer in enumerate(self.hidden[1:], start=1):
            x = layer(x)
            if self.dropouts:
                x = self.dropouts[i](x, training=training)
        out = ops.squeeze(self.prediction(x), axis=-1)
        if self.biases:
            out = out + user_parts[..., width] + movie_parts[..., width]
        return out

    def build(self, input_shape: Any = None) -> None:
        self.user_embedding.build((None,))
        self.movie_embedding.build((None,))
        self.hidden[0].build((None, self.user_embedding.output_dim + self.movie_embedding.output_dim))
        width = self.hidden[0].units
        for layer in self.hidden[1:]:
            layer.build((None, width))
            width = layer.units
        self.prediction.build((None, width))
        if self.biases:
            self.user_bias.build((None,))
            self.movie_bias.build((None,))
        self.built = True

    def call(self, inputs: Any, training: bool = False) -> Any:
        users = ops.cast(inputs[:, 0], "int32")
        movies = ops.cast(inputs[:, 1], "int32")
        scores = self.pair_scores(self.user_parts(users), self.movie_parts(movies), training=training)
        return ops.expand_dims(scores, -1)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_users": self.n_users,
            "n_movies": self.n_movies,
            "model_config": self.model_config,
            "rating_mean": self.rating_mean,
        }


def _tuples(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; ModelConfig wants tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


def build_model(
    config: ModelConfig, n_users: int, n_movies: int, rating_mean: float, seed: int
) -> keras.Model:
    """A compiled model for ``config`` (Adam, MSE loss, MAE metric, as in the article)."""
    keras.utils.set_random_seed(seed)
    model = RatingModel(n_users, n_movies, dataclasses.asdict(config), rating_mean)
    model.build()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="mse",
        metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
    )
    return model


def predict_ratings(model: keras.Model, users: np.ndarray, movies: np.ndarray, batch_size: int = 65536) -> np.ndarray:
    """Uncentred, unclipped predicted ratings for explicit pairs (the reference path)."""
    pairs = np.stack([users, movies], axis=1).astype("int32")
    centred = model.predict(pairs, batch_size=batch_size, verbose=0)[:, 0]
    return centred.astype("float64") + model.rating_mean
