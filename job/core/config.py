"""One frozen configuration, built in one place from flags and validated early."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from job.core.errors import ConfigError

Architecture = Literal["mlp", "dlrm"]
Output = Literal["regression", "classes"]
SplitKind = Literal["random", "temporal"]
Ranker = Literal["rating", "ease"]
L2Scope = Literal["tables", "batch"]


@dataclass(frozen=True)
class ModelConfig:
    """Hyperparameters of one rating model. Presets below name the ones we ship."""

    architecture: Architecture = "mlp"
    # "regression": one linear unit predicting the centred rating (the article).
    # "classes": softmax over the rating scale's steps; the rating is the expectation.
    output: Output = "regression"
    user_dim: int = 8
    movie_dim: int = 8
    hidden: tuple[int, ...] = (32, 4)
    # Per-user and per-movie scalar biases added to the output (not in the article).
    biases: bool = False
    l2: float = 0.0  # L2 penalty on embeddings; 0 reproduces the article
    # Where l2 applies. "tables": every row of the embedding and bias tables at every step (a
    # Keras embeddings_regularizer). "batch": only the rows a batch looks up, averaged over
    # its ratings (the classic per-rating penalty of matrix factorisation), so a user's
    # embedding is pulled towards zero in proportion to how often it is trained.
    l2_scope: L2Scope = "tables"
    dropout: float = 0.0  # after each hidden layer; 0 reproduces the article
    learning_rate: float = 1e-3  # Keras' Adam default, which the article used
    batch_size: int = 500
    epochs: int = 20
    patience: int = 0  # early stopping on val MAE; the article stops at the first worse epoch
    restore_best_weights: bool = False
    # Learning-rate schedule, in optimizer steps; 0 and 0 keep the rate constant, as the presets
    # were tuned at batch 500 (where a schedule was worse on validation). At scale
    # job.stages.train.training_settings sets both: the rate rises linearly from ~0 over warmup_steps
    # and halves every halve_every steps from the first (better there on validation).
    warmup_steps: int = 0
    halve_every: int = 0
    # DLRM only: side features (genres, year, tags) and the two MLPs around the interaction.
    # Every vector that takes part in the dot products (user, movie, genres, tags, bottom MLP
    # output) has side_dim entries, so user_dim and movie_dim apply to the mlp only.
    side_dim: int = 8
    bottom: tuple[int, ...] = (16,)  # hidden layers over the dense features (year); then side_dim
    top: tuple[int, ...] = (64, 32)  # hidden layers over [bottom output; dots]; then the output
    n_tags: int = 300  # vocabulary: the most used tags
    # What top_k ranks by. "rating": the predicted rating (the article's way; it puts rarely
    # rated films with a few high ratings first). "ease": EASE over what each user watched
    # plus EASE over what they liked (job/models/itemitem.py's WatchAndLike), the strongest ranker
    # on the validation split; the predicted rating is still stored and shown beside it.
    ranker: Ranker = "rating"
    ease_l2: float = 100.0  # the liked part's L2: 100 beat 50, 200, 400 and 800 on validation
    ease_watch_l2: float = 200.0  # the watched part's: 200 beat 100, 400 and 800 likewise
    # Serve a rating model refit on every rating when validation allows it
    # (job.stages.train.serving_rating_model). Off by default: two more fits, about twice
    # the training time, which the shipped run's time budget has no room for.
    serve_refit: bool = False

    def __post_init__(self) -> None:
        if self.architecture not in ("mlp", "dlrm"):
            raise ConfigError(f"unknown architecture {self.architecture!r}: use 'mlp' or 'dlrm'")
        if self.output not in ("regression", "classes"):
            raise ConfigError(f"unknown output {self.output!r}: use 'regression' or 'classes'")
        for name in ("user_dim", "movie_dim", "batch_size", "epochs", "side_dim"):
            if getattr(self, name) < 1:
                raise ConfigError(f"model.{name} must be at least 1 (got {getattr(self, name)})")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1) (got {self.dropout})")
        if self.l2 < 0 or self.learning_rate <= 0 or self.patience < 0:
            raise ConfigError("model.l2 and model.patience must be >= 0, learning_rate > 0")
        for name in ("hidden", "bottom", "top"):
            if any(units < 1 for units in getattr(self, name)):
                raise ConfigError(
                    f"model.{name} layer sizes must be at least 1 (got {getattr(self, name)})"
                )
        if not self.hidden:
            raise ConfigError(
                "model.hidden needs at least one layer (the mlp's first layer is factorised)"
            )
        if self.warmup_steps < 0 or self.halve_every < 0:
            raise ConfigError(
                f"model.warmup_steps and halve_every must be >= 0 (got {self.warmup_steps}, {self.halve_every})"
            )
        if self.n_tags < 0:
            raise ConfigError(f"model.n_tags must be >= 0 (got {self.n_tags})")
        if self.l2_scope not in ("tables", "batch"):
            raise ConfigError(f"unknown l2_scope {self.l2_scope!r}: use 'tables' or 'batch'")
        if self.ranker not in ("rating", "ease"):
            raise ConfigError(f"unknown ranker {self.ranker!r}: use 'rating' or 'ease'")
        if self.ease_l2 <= 0 or self.ease_watch_l2 <= 0:
            raise ConfigError(
                f"model.ease_l2 and ease_watch_l2 must be > 0 (got {self.ease_l2}, {self.ease_watch_l2})"
            )


# DLRM-style model with side features, hand-set before tuning (the `tune` grid's base):
# dot interactions give it the matrix factorisation's u.m term the mlp lacks; side_dim 16
# and l2 1e-3 were the first values that beat the mlp on validation.
_DLRM = ModelConfig(
    architecture="dlrm",
    ranker="ease",
    biases=True,
    l2=1e-3,
    side_dim=16,
    epochs=40,
    patience=3,
    restore_best_weights=True,
)

PRESETS: dict[str, ModelConfig] = {
    # The article's network, exactly: embeddings 8 + 8, Dense 32 relu, Dense 4 relu,
    # Dense 1 linear, centred target, Adam, MSE loss, MAE metric, batch 500, 20 epochs,
    # EarlyStopping(val MAE, patience 0). Keep unchanged: it is the reference point.
    "seed": ModelConfig(),
    # The same network with the article's second idea: 10 classes (one per half star), softmax
    # and cross-entropy, the rating being the expectation. Patience 3 and best-weights restore
    # because cross-entropy's val MAE is noisier from epoch to epoch than MSE's.
    "seed-classes": ModelConfig(output="classes", epochs=40, patience=3, restore_best_weights=True),
    # The article's network plus what a matrix factorisation would have: per-user and per-movie
    # biases and L2 on the embeddings; wider embeddings (32) since L2 now limits overfitting;
    # patience 3 with restore so a noisy epoch does not end training on worse weights.
    "biased": ModelConfig(
        biases=True,
        l2=1e-3,
        user_dim=32,
        movie_dim=32,
        hidden=(64, 16),
        epochs=40,
        patience=3,
        restore_best_weights=True,
        ranker="ease",
    ),
    "dlrm": _DLRM,
    # The dlrm preset with the 10-class head (cross-entropy, expected rating): the classifier
    # at the hand-set size, so it can be compared with "dlrm" one change at a time.
    "classes": dataclasses.replace(_DLRM, output="classes"),
    # Chosen on validation (seed 42; the test set is never read; README "How `tuned` was
    # chosen"): the DLRM model with no top MLP (its dot products go straight to the output, a
    # factorisation machine over user, movie, genres, tags and year), the per-rating
    # ("batch") L2 0.03 and side_dim 64: the best on ml-latest-small's validation set that
    # also learns latent-factor data (docs/benchmarks.md, "The rating model").
    "tuned": dataclasses.replace(_DLRM, side_dim=64, top=(), l2=0.03, l2_scope="batch"),
}


# The EASE ranking baseline (every rating counts as watched): its L2 won on the validation
# split among 100, 200, 400 and 800 (the "ease" ranker's watched part uses the same).
EASE_BASELINE_L2 = 200.0
# Ranking metrics judge at most this many users, a seeded sample beyond it, so evaluation
# costs a bounded fraction of training at any size (ml-32m has 200,948 users).
RANK_SAMPLE_USERS = 10_000

# Movie pages show each movie's nearest movies in the model's embedding space. A movie with
# fewer ratings than this has an embedding that barely moved from its random start, so it
# neither gets nor appears as a neighbour.
N_SIMILAR = 10
SIMILAR_MIN_RATINGS = 5

# What a user gets without --preset: the best model the validation search found. Tests that
# only need *a* model ask for `seed`, the article's network, which trains several times faster.
DEFAULT_PRESET = "tuned"
# The preset whose settings `python -m bench tune`'s grid (tests/bench/tune.py) replaces.
TUNE_BASE = "dlrm"


# Default budget of rows in `predictions` (all shards together): its three copies on disk
# (parts/, parquet/, recommendations.duckdb) fit a GitHub-hosted runner's free disk with room
# to spare (docs/benchmarks.md, "Design measurements"). It covers ml-latest-small, ml-100k and ml-1m (22M rows) in full;
# ml-10m (0.74e9), ml-25m (10e9) and ml-32m (17.6e9) need --keep-top (or a larger budget).
DEFAULT_MAX_ROWS = 500_000_000


@dataclass(frozen=True)
class ScoreOptions:
    """How the score stage writes: top K per user, and how much of ``predictions`` to keep."""

    top_k: int = 10
    keep_top: int | None = None  # None: every unwatched pair
    block_users: int | None = None  # None: sized to ~128 MiB of intermediates
    max_rows: int = DEFAULT_MAX_ROWS

    def __post_init__(self) -> None:
        for name, value in (
            ("--top-k", self.top_k),
            ("--keep-top", self.keep_top),
            ("--block-users", self.block_users),
            ("--max-rows", self.max_rows),
        ):
            if value is not None and value < 1:
                raise ConfigError(f"{name} must be at least 1 (got {value})")


@dataclass(frozen=True)
class PublishOptions:
    """Where ``run`` publishes: ``target`` is s3://BUCKET/PREFIX or a folder (job.publish
    parses it, before any training)."""

    target: str
    endpoint_url: str | None = None
    keep_runs: int | None = None

    def __post_init__(self) -> None:
        if self.keep_runs is not None and self.keep_runs < 1:
            raise ConfigError(f"--keep-runs must be at least 1 (got {self.keep_runs})")


@dataclass(frozen=True)
class Config:
    """Everything one run needs. Built by ``build_config`` from CLI flags."""

    data: str = "ml-latest-small"
    out: Path = Path("out")
    preset: str = DEFAULT_PRESET
    model: ModelConfig = field(default_factory=lambda: PRESETS[DEFAULT_PRESET])
    seed: int = 42
    test_fraction: float = 0.1
    val_fraction: float = 0.1
    split: SplitKind = "random"
    cache_dir: Path = field(default_factory=lambda: default_cache_dir())
    # A previous run folder whose model training starts from (job.stages.warmstart); None: from scratch.
    warm_start: Path | None = None
    score: ScoreOptions = field(default_factory=ScoreOptions)
    publish: PublishOptions | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.test_fraction < 1.0:
            raise ConfigError(
                f"--test-fraction must be in [0, 1) (got {self.test_fraction}); 0 keeps no test set"
            )
        if not 0.0 < self.val_fraction < 1.0 or self.test_fraction + self.val_fraction >= 1.0:
            raise ConfigError(
                f"--val-fraction must be in (0, 1) and leave training data "
                f"(got val {self.val_fraction}, test {self.test_fraction})"
            )
        if self.split not in ("random", "temporal"):
            raise ConfigError(f"--split must be 'random' or 'temporal' (got {self.split!r})")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view, for run.json."""
        raw = dataclasses.asdict(self)
        del raw["publish"]  # where a run goes is not part of what it is
        raw["out"] = str(self.out)
        raw["cache_dir"] = str(self.cache_dir)
        raw["warm_start"] = None if self.warm_start is None else str(self.warm_start)
        return raw


def default_cache_dir() -> Path:
    """Where downloaded datasets live: $MOVIELENS_CACHE, else the XDG cache folder."""
    if env := os.environ.get("MOVIELENS_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "movielens-job"


def model_config(preset: str, **overrides: Any) -> ModelConfig:
    """The named preset with the given fields replaced; unknown names are refused."""
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}: choose one of {', '.join(sorted(PRESETS))}")
    known = {f.name for f in dataclasses.fields(ModelConfig)}
    unknown = set(overrides) - known
    if unknown:
        raise ConfigError(f"unknown model setting(s) {sorted(unknown)}: known are {sorted(known)}")
    return dataclasses.replace(PRESETS[preset], **overrides)


def build_config(**flags: Any) -> Config:
    """The one place a ``Config`` is made from flags; validates everything.

    A flag that is None or left out takes ``Config``'s default. Flags that are ``Config``'s
    fields set them; ``epochs`` and any other ``ModelConfig`` field replace the preset's.
    """
    given = {name: value for name, value in flags.items() if value is not None}
    own = {f.name for f in dataclasses.fields(Config)} - {"model"}
    settings = {name: given.pop(name) for name in list(given) if name in own}
    for name in ("out", "cache_dir", "warm_start"):
        if name in settings:
            settings[name] = Path(settings[name])
    return Config(**settings, model=model_config(settings.get("preset", DEFAULT_PRESET), **given))


def default_of(cls: type, name: str) -> Any:
    """A dataclass field's default (``Config``'s, ``ScoreOptions'``): the CLI's flags show
    and use these, so each default is written once."""
    for item in dataclasses.fields(cls):
        if item.name == name:
            return item.default
    raise KeyError(name)
