"""Keras rating models, written with Keras layers and ``keras.ops`` only.

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

Two architectures (``ModelConfig.architecture``) and two outputs (``ModelConfig.output``):

- ``mlp``: the article's network, optionally with per-user and per-movie biases.
- ``dlrm``: facebookresearch/dlrm's shape: embeddings of the user, the movie, its genres and
  its tags, a bottom MLP over the dense features (release year), pairwise dot products of
  all those vectors, and a top MLP from [bottom output; dots] to the output.
- ``regression``: one linear unit, the centred rating, trained with MSE.
- ``classes``: one softmax class per allowed rating (10 for half stars, 5 for whole stars),
  trained with cross-entropy; the predicted rating is the expectation over the classes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import numpy as np
from keras import layers, ops

from job.core.config import ModelConfig
from job.core.layout import MODEL_FILE
from job.data.features import SideFeatures
from job.data.movielens import RatingScale

# The DLRM model's movie-side vectors, in the order they enter the interaction (the user's
# embedding comes first, then these).
MOVIE_VECTORS = ("movie", "genres", "tags", "dense")
# The fast scoring path computes a layer this narrow (or narrower) that follows the first
# one as a fused multiply-and-sum (``RatingModel.block_scores``), a wider one as a matrix product.
NARROW_UNITS = 4


# ---------------------------------------------------------------------------------------
# Losses and metrics of the classifier. Its targets are (n, 2): [centred rating, class index];
# its outputs are (n, 1 + K): [centred expected rating, K logits].


@keras.saving.register_keras_serializable(package="job")
def class_cross_entropy(y_true: Any, y_pred: Any) -> Any:
    """Sparse categorical cross-entropy of the logits against the rating's class."""
    return keras.losses.sparse_categorical_crossentropy(
        ops.cast(y_true[:, 1], "int32"), y_pred[:, 1:], from_logits=True
    )


@keras.saving.register_keras_serializable(package="job")
def expected_rating_error(y_true: Any, y_pred: Any) -> Any:
    """Absolute error of the expected rating (so ``val_mae`` means the same for every model)."""
    return ops.abs(y_true[:, 0] - y_pred[:, 0])


@keras.saving.register_keras_serializable(package="job")
def class_accuracy(y_true: Any, y_pred: Any) -> Any:
    """1 where the most likely class is the rating's class."""
    predicted = ops.argmax(y_pred[:, 1:], axis=-1)
    return ops.cast(ops.equal(predicted, ops.cast(y_true[:, 1], predicted.dtype)), "float32")


# ---------------------------------------------------------------------------------------


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
        self.cfg = ModelConfig(**_tuples(model_config))
        self.classes = self.cfg.output == "classes"
        if self.classes and not rating_values:
            raise ValueError("output='classes' needs the rating scale's values (rating_values)")
        self.rating_values = tuple(float(v) for v in rating_values) if rating_values else None
        # Width of the head: one unit for regression, one logit per allowed rating.
        self.units = len(self.rating_values) if self.classes and self.rating_values else 1
        self.biases = self.cfg.biases

    def _embedding_regularizer(self) -> keras.regularizers.Regularizer | None:
        """L2 on whole embedding (and bias) tables, added to the loss at every step.

        Tried against L2 on only the rows a batch looks up (the classic SGD matrix
        factorisation penalty, Keras' ``activity_regularizer``): on ml-latest-small's
        validation set the whole-table penalty was clearly better (val MAE 0.636 against
        0.640 for the DLRM model), since with Adam it keeps pulling rarely rated users and
        movies towards zero between their rare updates.
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


@keras.saving.register_keras_serializable(package="job")
class WarmupHalving(keras.optimizers.schedules.LearningRateSchedule):
    """``peak`` reached linearly over ``warmup_steps``, and halved every ``halve_every`` steps
    from the first (``ModelConfig.warmup_steps`` and ``halve_every``). Serialisable: model.keras
    keeps it.

    Halving from step 0 rather than from the end of the warm-up was the better of the two on
    validation (latent data, 3.1M ratings: RMSE 0.6293 in 5 epochs against 0.6348 in 4).
    """

    def __init__(self, peak: float, warmup_steps: int, halve_every: int) -> None:
        self.peak = float(peak)
        self.warmup_steps = int(warmup_steps)
        self.halve_every = int(halve_every)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        rising = ops.minimum(1.0, (step + 1.0) / max(self.warmup_steps, 1))
        halvings = step / self.halve_every if self.halve_every else ops.zeros_like(step)
        return self.peak * rising * ops.power(0.5, halvings)

    def get_config(self) -> dict[str, Any]:
        return {
            "peak": self.peak,
            "warmup_steps": self.warmup_steps,
            "halve_every": self.halve_every,
        }


def learning_rate(config: ModelConfig) -> float | WarmupHalving:
    """The optimizer's learning rate: a constant unless ``config`` schedules one."""
    if not (config.warmup_steps or config.halve_every):
        return config.learning_rate
    return WarmupHalving(config.learning_rate, config.warmup_steps, config.halve_every)


@keras.saving.register_keras_serializable(package="job")
class RatingModel(FactorisedModel):
    """The article's network: user and movie embeddings -> Dense stack -> centred rating.

    The first Dense layer over ``[user; movie]`` equals ``user @ W_u + movie @ W_m + b``, so
    the fast path computes ``user @ W_u`` once per user and ``movie @ W_m + b`` once per
    movie. Optional per-user and per-movie biases (one per output unit) are added to the output.

    Inputs: an int array (batch, 2) of encoded (user, movie) indexes.
    Output: (batch, 1) predicted rating minus ``rating_mean``; for ``output="classes"``,
    (batch, 1 + K): that, then the K class logits.
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
        super().__init__(n_users, n_movies, model_config, rating_mean, rating_values, **kwargs)
        cfg = self.cfg
        # Layers are created in the article's order, so the seed preset's initial weights
        # (drawn in creation order from the one seed) are the same as they always were.
        regularizer = self._embedding_regularizer()
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
        self.prediction = layers.Dense(self.units, activation="linear", name="prediction")
        if self.biases:
            self._biases()

    def user_parts(self, users: Any) -> Any:
        """(n, h0 [+ units]): the user's share of the first Dense layer [and its bias]."""
        first = self.hidden[0]
        w_user = first.kernel[: self.user_embedding.output_dim]
        parts = ops.matmul(self.user_embedding(users), w_user)
        if self.biases:
            parts = ops.concatenate([parts, self.user_bias(users)], axis=-1)
        return parts

    def movie_parts(self, movies: Any) -> Any:
        """(n, h0 [+ units]): the movie's share of the first Dense layer plus its bias term."""
        first = self.hidden[0]
        w_movie = first.kernel[self.user_embedding.output_dim :]
        parts = ops.matmul(self.movie_embedding(movies), w_movie) + first.bias
        if self.biases:
            parts = ops.concatenate([parts, self.movie_bias(movies)], axis=-1)
        return parts

    def pair_outputs(self, user_parts: Any, movie_parts: Any, training: bool = False) -> Any:
        width = self.hidden[0].units
        x = ops.relu(user_parts[..., :width] + movie_parts[..., :width])
        if self.dropouts:
            x = self.dropouts[0](x, training=training)
        for i, layer in enumerate(self.hidden[1:], start=1):
            x = layer(x)
            if self.dropouts:
                x = self.dropouts[i](x, training=training)
        out = self.prediction(x)
        if self.biases:
            out = out + user_parts[..., width:] + movie_parts[..., width:]
        return out

    def block_scores(self, user_parts: Any, movie_parts: Any) -> Any:
        """``pair_scores`` of a block, with the layer after the first one written as a
        multiply and a sum where it is narrow (the article's Dense 4): a compiled function then
        fuses the first layer's (B, M, h0) activations into that sum instead of writing them to
        memory for a matrix product, whose narrow output uses the vector units badly."""
        follows = self.hidden[1] if len(self.hidden) > 1 else self.prediction
        if follows.units > NARROW_UNITS:
            return super().block_scores(user_parts, movie_parts)
        width = self.hidden[0].units
        users, movies = user_parts[:, None, :], movie_parts[None, :, :]
        x = ops.relu(users[..., :width] + movies[..., :width])
        x = ops.sum(ops.expand_dims(x, -1) * follows.kernel, axis=-2) + follows.bias
        x = follows.activation(x)
        for layer in self.hidden[2:]:
            x = layer(x)
        if len(self.hidden) > 1:
            x = self.prediction(x)
        if self.biases:
            x = x + users[..., width:] + movies[..., width:]
        return self.to_rating(x)

    def build(self, input_shape: Any = None) -> None:
        self.user_embedding.build((None,))
        self.movie_embedding.build((None,))
        self.hidden[0].build(
            (None, self.user_embedding.output_dim + self.movie_embedding.output_dim)
        )
        width = self.hidden[0].units
        for layer in self.hidden[1:]:
            layer.build((None, width))
            width = layer.units
        self.prediction.build((None, width))
        if self.biases:
            self.user_bias.build((None,))
            self.movie_bias.build((None,))
        self.built = True


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
        n_genres: int = 1,
        n_tag_columns: int = 1,
        genre_names: list[str] | None = None,
        tag_names: list[str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(n_users, n_movies, model_config, rating_mean, rating_values, **kwargs)
        cfg = self.cfg
        self.n_genres = n_genres
        self.n_tag_columns = n_tag_columns
        # What each column of the genre and tag tables is: a warm start (job.stages.warmstart) matches
        # the embedding rows of a later run's vocabularies by name.
        self.genre_names = list(genre_names or [])
        self.tag_names = list(tag_names or [])
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


def _tuples(raw: dict[str, Any]) -> dict[str, Any]:
    """JSON turns tuples into lists; ModelConfig wants tuples back."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()}


# ---------------------------------------------------------------------------------------


def build_model(
    config: ModelConfig,
    n_users: int,
    n_movies: int,
    rating_mean: float,
    seed: int,
    scale: RatingScale | None = None,
    side: SideFeatures | None = None,
    steps_per_execution: int = 1,
) -> FactorisedModel:
    """A built, compiled model for ``config``.

    Args:
        scale: the dataset's rating scale; its values are the classifier's classes
            (required for ``output="classes"``).
        side: per-movie side features (required for ``architecture="dlrm"``; use
            ``SideFeatures.empty(n_movies)`` where there are none).
        steps_per_execution: Keras' own, for training (``job.stages.train.STEPS_PER_EXECUTION``);
            1 keeps ``predict`` the article's, one batch per call.

    Regression compiles as in the article (Adam, MSE loss, MAE metric); the classifier with
    cross-entropy, an MAE of its expected rating named ``mae`` and class accuracy.
    """
    keras.utils.set_random_seed(seed)
    raw = dataclasses.asdict(config)
    values = scale.values.tolist() if scale is not None else None
    if config.output == "classes" and values is None:
        raise ValueError("output='classes' needs the dataset's rating scale: pass scale=")
    model: FactorisedModel
    if config.architecture == "dlrm":
        if side is None:
            raise ValueError(
                "architecture='dlrm' needs side features: pass side=features.side_features(...)"
            )
        if side.n_movies != n_movies:
            raise ValueError(f"side features cover {side.n_movies} movies, the model {n_movies}")
        model = DLRMModel(
            n_users,
            n_movies,
            raw,
            rating_mean,
            values,
            n_genres=int(side.genres.shape[1]),
            n_tag_columns=int(side.tags.shape[1]),
            genre_names=list(side.genre_names),
            tag_names=list(side.tag_names),
        )
        model.build()
        model.set_side_features(side)
    else:
        model = RatingModel(n_users, n_movies, raw, rating_mean, values)
        model.build()
    if config.output == "classes":
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config)),
            loss=class_cross_entropy,
            metrics=[
                keras.metrics.MeanMetricWrapper(expected_rating_error, name="mae"),
                keras.metrics.MeanMetricWrapper(class_accuracy, name="accuracy"),
            ],
            steps_per_execution=steps_per_execution,
        )
    else:
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=learning_rate(config)),
            loss="mse",
            metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
            steps_per_execution=steps_per_execution,
        )
    return model


def training_targets(model: FactorisedModel, ratings: np.ndarray) -> np.ndarray:
    """What ``fit`` compares the model's output with.

    Regression: the centred rating, (n,). Classifier: (n, 2) = [centred rating, class index],
    the class being ``(rating - low) / step`` on the scale the model was built with.
    """
    centred = (np.asarray(ratings, "float64") - model.rating_mean).astype("float32")
    if not model.classes:
        return centred
    values = np.asarray(model.rating_values, "float64")
    classes = np.abs(np.asarray(ratings, "float64")[:, None] - values[None, :]).argmin(axis=1)
    return np.stack([centred, classes.astype("float32")], axis=1)


def predict_ratings(
    model: keras.Model, users: np.ndarray, movies: np.ndarray, batch_size: int = 65536
) -> np.ndarray:
    """Uncentred, unclipped predicted ratings for explicit pairs (the reference path)."""
    pairs = np.stack([users, movies], axis=1).astype("int32")
    centred = model.predict(pairs, batch_size=batch_size, verbose=0)[:, 0]
    return centred.astype("float64") + model.rating_mean


def predict_classes(
    model: FactorisedModel, users: np.ndarray, movies: np.ndarray, batch_size: int = 65536
) -> np.ndarray:
    """The classifier's most likely rating for explicit pairs (for its accuracy)."""
    if not model.classes or not model.rating_values:
        raise ValueError("predict_classes needs a model with output='classes'")
    pairs = np.stack([users, movies], axis=1).astype("int32")
    logits = model.predict(pairs, batch_size=batch_size, verbose=0)[:, 1:]
    return np.asarray(model.rating_values, "float64")[np.argmax(logits, axis=1)]


def load_model(out: Path) -> FactorisedModel:
    """The trained model of a run folder (``OUT/model.keras``); ``preflight.require`` has
    checked it is there and whole."""
    return keras.saving.load_model(out / MODEL_FILE, compile=False)


def movie_vectors(model: FactorisedModel) -> np.ndarray:
    """(n_movies, d) rows of the model's ``movie_embedding`` table, for movie neighbours."""
    layer = next(
        (lay for lay in model._flatten_layers(include_self=False) if lay.name == "movie_embedding"),
        None,
    )
    if layer is None:
        raise ValueError("the model has no layer named movie_embedding")
    return np.asarray(layer.get_weights()[0], dtype="float32")


def trainable_parameters(model: keras.Model) -> int:
    """Learned weights only: the side-feature tables stored in DLRM models are data, not
    parameters, and would otherwise dominate the count."""
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)
