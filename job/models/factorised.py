"""What every rating model shares: the factorised protocol, the output head and its config.

Every model is *factorised* for fast scoring: ``user_parts`` depends only on the user,
``movie_parts`` only on the movie, and ``pair_scores`` combines a block of users with every
movie. ``call`` is the same computation on explicit (user, movie) pairs, which is what
training and the reference scoring path use, so the two paths cannot drift apart.

The protocol every model keeps (the fast scoring path relies on nothing else):

- ``user_parts(users)`` -> (n, du), ``movie_parts(movies)`` -> (n, dm);
- ``pair_scores(user_parts[:, None, :], movie_parts[None, :, :])`` -> (B, M) centred ratings
  (predicted rating minus ``rating_mean``; for the classifier, the expected rating minus it);
- ``call(pairs)`` with pairs (batch, 2) of encoded (user, movie): column 0 of the output is
  the same centred rating. The classifier appends its K class logits after it, for its loss.
- ``block_scores(user_parts, movie_parts)`` -> (B, M): ``pair_scores`` of (B, du) by (M, dm),
  what the fast path calls; a model may override it with a faster form of the same sum.

The models themselves: ``job.models.rating`` (the article's network) and ``job.models.dlrm``.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from job.core.config import ModelConfig


class FactorisedModel(keras.Model):
    """What every rating model shares: the output head, ``call``, ``pair_scores``, config.

    Subclasses build their layers and define ``user_parts``, ``movie_parts`` and
    ``pair_outputs`` (the head's raw output for broadcast parts: (..., 1) or (..., K)).
    """

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        model_config: dict[str, Any],
        rating_mean: float,
        rating_values: list[float] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.n_users = n_users
        self.n_movies = n_movies
        self.model_config = dict(model_config)
        self.rating_mean = float(rating_mean)
        self.cfg = ModelConfig(**config_tuples(model_config))
        self.classes = self.cfg.output == "classes"
        if self.classes and not rating_values:
            raise ValueError("output='classes' needs the rating scale's values (rating_values)")
        self.rating_values = tuple(float(v) for v in rating_values) if rating_values else None
        # Width of the head: one unit for regression, one logit per allowed rating.
        self.units = len(self.rating_values) if self.classes and self.rating_values else 1
        self.biases = self.cfg.biases

    def _embedding_regularizer(self) -> keras.regularizers.Regularizer | None:
        """L2 on whole embedding (and bias) tables, added to the loss at every step.

        With Adam it keeps pulling rarely rated users and movies towards zero between their
        rare updates: on small real data that shrinkage helps, on data with a strong user x
        movie interaction it holds the model at the global mean, where ``l2_scope="batch"``
        (only the rows a batch looks up) does better. Figures: docs/benchmarks.md.
        """
        if not self.cfg.l2 or self.cfg.l2_scope != "tables":
            return None
        return keras.regularizers.L2(self.cfg.l2)

    def _batch_penalty(self, users: Any, movies: Any) -> Any:
        """``l2_scope="batch"``: l2 x the mean over the batch's ratings of the squared norms
        of the rows they look up (embeddings and biases)."""
        total = 0.0
        for name, ids in (
            ("user_embedding", users),
            ("user_bias", users),
            ("movie_embedding", movies),
            ("movie_bias", movies),
        ):
            table = getattr(self, name, None)
            if table is not None:
                total = total + ops.mean(ops.sum(ops.square(table(ids)), axis=-1))
        return self.cfg.l2 * total

    def _biases(self) -> None:
        regularizer = self._embedding_regularizer()
        self.user_bias = layers.Embedding(
            self.n_users,
            self.units,
            embeddings_initializer="zeros",
            embeddings_regularizer=regularizer,
            name="user_bias",
        )
        self.movie_bias = layers.Embedding(
            self.n_movies,
            self.units,
            embeddings_initializer="zeros",
            embeddings_regularizer=regularizer,
            name="movie_bias",
        )

    # -- the protocol ---------------------------------------------------------------------

    def user_parts(self, users: Any) -> Any:
        raise NotImplementedError

    def movie_parts(self, movies: Any) -> Any:
        raise NotImplementedError

    def pair_outputs(self, user_parts: Any, movie_parts: Any, training: bool = False) -> Any:
        raise NotImplementedError

    def to_rating(self, outputs: Any) -> Any:
        """The head's output (..., units) -> centred rating (...)."""
        if not self.classes:
            return ops.squeeze(outputs, axis=-1)
        values = ops.convert_to_tensor(np.asarray(self.rating_values, "float32"))
        expected = ops.sum(ops.softmax(outputs, axis=-1) * values, axis=-1)
        return expected - self.rating_mean

    def pair_scores(self, user_parts: Any, movie_parts: Any, training: bool = False) -> Any:
        """Centred ratings for every pair of broadcastable ``user_parts`` and ``movie_parts``.

        Shapes: (..., du) and (..., dm) -> (...); e.g. (B, 1, du) with (1, M, dm) gives (B, M).
        """
        return self.to_rating(self.pair_outputs(user_parts, movie_parts, training=training))

    def block_scores(self, user_parts: Any, movie_parts: Any) -> Any:
        """(B, M) centred ratings of (B, du) users against (M, dm) movies, for inference: the
        fast scoring path's ``pair_scores``. A model may compute it another way with the same
        result up to float rounding."""
        return self.pair_scores(user_parts[:, None, :], movie_parts[None, :, :])

    def call(self, inputs: Any, training: bool = False) -> Any:
        users = ops.cast(inputs[:, 0], "int32")
        movies = ops.cast(inputs[:, 1], "int32")
        outputs = self.pair_outputs(
            self.user_parts(users), self.movie_parts(movies), training=training
        )
        if training and self.cfg.l2 and self.cfg.l2_scope == "batch":
            self.add_loss(self._batch_penalty(users, movies))
        rating = ops.expand_dims(self.to_rating(outputs), -1)
        return ops.concatenate([rating, outputs], axis=-1) if self.classes else rating

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_users": self.n_users,
            "n_movies": self.n_movies,
            "model_config": self.model_config,
            "rating_mean": self.rating_mean,
            "rating_values": list(self.rating_values) if self.rating_values else None,
        }


def config_tuples(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; ModelConfig wants tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}
