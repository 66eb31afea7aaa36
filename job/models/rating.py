"""The article's rating network, the classifier's losses, and building and using any model.

Two architectures (``ModelConfig.architecture``) and two outputs (``ModelConfig.output``):

- ``mlp``: the article's network, optionally with per-user and per-movie biases (here).
- ``dlrm``: facebookresearch/dlrm's shape over side features (``job.models.dlrm``).
- ``regression``: one linear unit, the centred rating, trained with MSE.
- ``classes``: one softmax class per allowed rating (10 for half stars, 5 for whole stars),
  trained with cross-entropy; the predicted rating is the expectation over the classes.

Both are factorised for fast scoring (``job.models.factorised`` holds the protocol).
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
from job.models.dlrm import DLRMModel, SideColumns
from job.models.factorised import FactorisedModel

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


@keras.saving.register_keras_serializable(package="job")
class WarmupHalving(keras.optimizers.schedules.LearningRateSchedule):
    """``peak`` reached linearly over ``warmup_steps``, and halved every ``halve_every`` steps
    from the first (``ModelConfig.warmup_steps`` and ``halve_every``). Serialisable: model.keras
    keeps it.

    Halving from step 0 rather than from the end of the warm-up validated better
    (docs/benchmarks.md, "Design measurements").
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


# ---------------------------------------------------------------------------------------


def build_model(
    config: ModelConfig,
    n_users: int,
    n_movies: int,
    rating_mean: float,
    seed: int,
    scale: RatingScale | None = None,
    side: SideFeatures | None = None,
) -> FactorisedModel:
    """A built, compiled model for ``config``.

    Args:
        scale: the dataset's rating scale; its values are the classifier's classes
            (required for ``output="classes"``).
        side: per-movie side features (required for ``architecture="dlrm"``; use
            ``SideFeatures.empty(n_movies)`` where there are none).

    Compiled for ``predict`` as the article runs it, one batch per call; training compiles
    it again with more steps per call (``compile_model``).
    """
    keras.utils.set_random_seed(seed)
    values = scale.values.tolist() if scale is not None else None
    if config.output == "classes" and values is None:
        raise ValueError("output='classes' needs the dataset's rating scale: pass scale=")
    model = _built_model(config, (n_users, n_movies), rating_mean, values, side)
    compile_model(model, config)
    return model


def _built_model(
    config: ModelConfig,
    shape: tuple[int, int],
    rating_mean: float,
    values: list[float] | None,
    side: SideFeatures | None,
) -> FactorisedModel:
    """The model of ``config.architecture`` for (users, movies) ``shape``, built (with its side
    features copied in, for DLRM)."""
    raw = dataclasses.asdict(config)
    if config.architecture != "dlrm":
        model = RatingModel(*shape, raw, rating_mean, values)
        model.build()
        return model
    if side is None:
        raise ValueError(
            "architecture='dlrm' needs side features: pass side=features.side_features(...)"
        )
    if side.n_movies != shape[1]:
        raise ValueError(f"side features cover {side.n_movies} movies, the model {shape[1]}")
    dlrm = DLRMModel(*shape, raw, rating_mean, values, columns=SideColumns.of(side))
    dlrm.build()
    dlrm.set_side_features(side)
    return dlrm


def compile_model(
    model: FactorisedModel, config: ModelConfig, steps_per_execution: int = 1
) -> None:
    """Regression compiles as in the article (Adam, MSE loss, MAE metric); the classifier with
    cross-entropy, an MAE of its expected rating named ``mae`` and class accuracy."""
    optimizer = keras.optimizers.Adam(learning_rate=learning_rate(config))
    if config.output == "classes":
        model.compile(
            optimizer=optimizer,
            loss=class_cross_entropy,
            metrics=[
                keras.metrics.MeanMetricWrapper(expected_rating_error, name="mae"),
                keras.metrics.MeanMetricWrapper(class_accuracy, name="accuracy"),
            ],
            steps_per_execution=steps_per_execution,
        )
    else:
        model.compile(
            optimizer=optimizer,
            loss="mse",
            metrics=[keras.metrics.MeanAbsoluteError(name="mae")],
            steps_per_execution=steps_per_execution,
        )


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
