"""The DLRM-style rating model (facebookresearch/dlrm's shape) over the movies' side features.

Embeddings of the user, the movie, its genres and its tags, a bottom MLP over the dense
features (release year), pairwise dot products of all those vectors, and a top MLP from
[bottom output; dots] to the output; factorised like every model (``job.models.factorised``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import keras
from keras import layers, ops

from job.data.features import SideFeatures
from job.models.factorised import FactorisedModel

# The DLRM model's movie-side vectors, in the order they enter the interaction (the user's
# embedding comes first, then these).
MOVIE_VECTORS = ("movie", "genres", "tags", "dense")


@dataclasses.dataclass(frozen=True)
class SideColumns:
    """The columns of the model's side-feature tables: how many, and what each one is.

    A warm start (``job.stages.warmstart``) matches the embedding rows of a later run's
    vocabularies by these names.
    """

    n_genres: int = 1
    n_tag_columns: int = 1
    genre_names: tuple[str, ...] = ()
    tag_names: tuple[str, ...] = ()

    @classmethod
    def of(cls, side: SideFeatures) -> SideColumns:
        return cls(
            int(side.genres.shape[1]),
            int(side.tags.shape[1]),
            tuple(side.genre_names),
            tuple(side.tag_names),
        )


@keras.saving.register_keras_serializable(package="job")
class DLRMModel(FactorisedModel):
    """A DLRM-style model (facebookresearch/dlrm): embeddings, bottom MLP, dot interaction, top MLP.

    Vectors, all of size ``side_dim``: the user's embedding ``u``; the movie's embedding
    ``m``; its genres ``g`` (mean of its genres' embeddings); its tags ``t`` (term-frequency
    weighted mean of its tags' embeddings); and ``d``, the bottom MLP's output over the dense
    features (standardised release year, year-missing flag). The interaction is every
    pairwise dot product of [u, m, g, t, d]; the top MLP reads [d; dots]. Per-user and
    per-movie biases are added to the output.

    Factorised: only the four dots ``u·m, u·g, u·t, u·d`` involve both sides. The rest of
    the top MLP's first layer (``d``, the six movie-only dots, its bias) is one vector per
    movie, so ``movie_parts`` = [m, g, t, d, that vector, movie bias] and ``user_parts`` =
    [u, user bias]; ``pair_scores`` computes the four dots and finishes the top MLP.

    The side-feature tables (genre multi-hot, year features, tag weights) are non-trainable
    weights, so ``model.keras`` is self-contained.
    """

    def __init__(
        self,
        n_users: int,
        n_movies: int,
        model_config: dict[str, Any],
        rating_mean: float,
        rating_values: list[float] | None = None,
        columns: SideColumns = SideColumns(),
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_movies, model_config, rating_mean, rating_values, **kwargs)
        cfg = self.cfg
        self.n_genres = columns.n_genres
        self.n_tag_columns = columns.n_tag_columns
        self.genre_names = list(columns.genre_names)
        self.tag_names = list(columns.tag_names)
        self.dim = cfg.side_dim
        regularizer = self._embedding_regularizer()
        self.user_embedding = layers.Embedding(
            n_users, self.dim, embeddings_regularizer=regularizer, name="user_embedding"
        )
        self.movie_embedding = layers.Embedding(
            n_movies, self.dim, embeddings_regularizer=regularizer, name="movie_embedding"
        )
        # A Dense layer without bias over pooled multi-hot rows is a pooled embedding lookup.
        self.genre_embedding = layers.Dense(self.dim, use_bias=False, name="genre_embedding")
        self.tag_embedding = layers.Dense(self.dim, use_bias=False, name="tag_embedding")
        self.bottom = [
            layers.Dense(units, activation="relu", name=f"bottom_{i}")
            for i, units in enumerate((*cfg.bottom, self.dim))
        ]
        self.top = [
            layers.Dense(units, activation="relu", name=f"top_{i}")
            for i, units in enumerate(cfg.top)
        ]
        self.dropouts = [layers.Dropout(cfg.dropout) for _ in cfg.top] if cfg.dropout else []
        self.prediction = layers.Dense(self.units, activation="linear", name="prediction")
        if self.biases:
            self._biases()
        # Pairs (i, j), i < j, of the vectors [u, m, g, t, d]: the first four involve u.
        self.n_vectors = 1 + len(MOVIE_VECTORS)
        self.pairs = [(i, j) for i in range(self.n_vectors) for j in range(i + 1, self.n_vectors)]

    @property
    def first_width(self) -> int:
        return self.top[0].units if self.top else self.units

    def _first_layer(self) -> layers.Dense:
        return self.top[0] if self.top else self.prediction

    def build(self, input_shape: Any = None) -> None:
        self.user_embedding.build((None,))
        self.movie_embedding.build((None,))
        self.genre_table = self.add_weight(
            shape=(self.n_movies, self.n_genres),
            initializer="zeros",
            trainable=False,
            name="genre_table",
        )
        self.year_table = self.add_weight(
            shape=(self.n_movies, 2), initializer="zeros", trainable=False, name="year_table"
        )
        self.tag_table = self.add_weight(
            shape=(self.n_movies, self.n_tag_columns),
            initializer="zeros",
            trainable=False,
            name="tag_table",
        )
        self.genre_embedding.build((None, self.n_genres))
        self.tag_embedding.build((None, self.n_tag_columns))
        width = 2
        for layer in self.bottom:
            layer.build((None, width))
            width = layer.units
        width = self.dim + len(self.pairs)
        for layer in self.top:
            layer.build((None, width))
            width = layer.units
        self.prediction.build((None, width))
        if self.biases:
            self.user_bias.build((None,))
            self.movie_bias.build((None,))
        self.built = True

    def set_side_features(self, side: SideFeatures) -> None:
        """Copy the per-movie tables into the model (after ``build``)."""
        expected = (self.n_movies, self.n_genres, self.n_tag_columns)
        got = (side.n_movies, side.genres.shape[1], side.tags.shape[1])
        if got != expected:
            raise ValueError(
                f"side features of shape (movies, genres, tags) {got} do not fit this model's {expected}"
            )
        self.genre_table.assign(side.genres.astype("float32"))
        self.year_table.assign(side.years.astype("float32"))
        self.tag_table.assign(side.tags.astype("float32"))

    def _movie_vectors(self, movies: Any) -> list[Any]:
        """[m, g, t, d] for the given movies, each (n, dim)."""
        genres = ops.take(self.genre_table, movies, axis=0)
        genres = genres / ops.maximum(ops.sum(genres, axis=-1, keepdims=True), 1.0)  # mean pooling
        dense = ops.take(self.year_table, movies, axis=0)
        for layer in self.bottom:
            dense = layer(dense)
        return [
            self.movie_embedding(movies),
            self.genre_embedding(genres),
            self.tag_embedding(ops.take(self.tag_table, movies, axis=0)),
            dense,
        ]

    def user_parts(self, users: Any) -> Any:
        """(n, dim [+ units]): the user's embedding [and bias]."""
        if not self.biases:
            return self.user_embedding(users)
        return ops.concatenate([self.user_embedding(users), self.user_bias(users)], axis=-1)

    def movie_parts(self, movies: Any) -> Any:
        """(n, 4 dim + h0 [+ units]): [m, g, t, d], its share of the first top layer [, bias]."""
        vectors = self._movie_vectors(movies)
        first = self._first_layer()
        kernel = first.kernel
        # Rows of the first top layer: [d (dim rows); one per pair, in self.pairs' order]. The
        # pairs with the user (i == 0) come first and are left to pair_outputs.
        n_user_pairs = len(MOVIE_VECTORS)
        dots = ops.stack(
            [
                ops.sum(vectors[i - 1] * vectors[j - 1], axis=-1)
                for i, j in self.pairs[n_user_pairs:]
            ],
            axis=-1,
        )
        constant = (
            ops.matmul(vectors[-1], kernel[: self.dim])
            + ops.matmul(dots, kernel[self.dim + n_user_pairs :])
            + first.bias
        )
        biases = [self.movie_bias(movies)] if self.biases else []
        return ops.concatenate([*vectors, constant, *biases], axis=-1)

    def pair_outputs(self, user_parts: Any, movie_parts: Any, training: bool = False) -> Any:
        d, h0 = self.dim, self.first_width
        user = user_parts[..., :d]
        first = self._first_layer()
        n_movie = len(MOVIE_VECTORS)
        # The dots u·m, u·g, u·t, u·d, then their rows (dim + 0..3) of the first top layer.
        dots = ops.stack(
            [
                ops.sum(user * movie_parts[..., k * d : (k + 1) * d], axis=-1)
                for k in range(n_movie)
            ],
            axis=-1,
        )
        x = movie_parts[..., n_movie * d : n_movie * d + h0] + ops.matmul(
            dots, first.kernel[d : d + n_movie]
        )
        if self.top:
            x = ops.relu(x)
            if self.dropouts:
                x = self.dropouts[0](x, training=training)
            for i, layer in enumerate(self.top[1:], start=1):
                x = layer(x)
                if self.dropouts:
                    x = self.dropouts[i](x, training=training)
            x = self.prediction(x)
        if self.biases:
            x = x + user_parts[..., d:] + movie_parts[..., n_movie * d + h0 :]
        return x

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "n_genres": self.n_genres,
            "n_tag_columns": self.n_tag_columns,
            "genre_names": self.genre_names,
            "tag_names": self.tag_names,
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DLRMModel:
        """The inverse of ``get_config``, whose flat keys every saved model.keras holds."""
        config = dict(config)
        columns = SideColumns(
            int(config.pop("n_genres", 1)),
            int(config.pop("n_tag_columns", 1)),
            tuple(config.pop("genre_names", None) or ()),
            tuple(config.pop("tag_names", None) or ()),
        )
        return cls(columns=columns, **config)
