"""Scoring: the fast path against the reference path and a brute-force numpy top-K, shards,
cold start, the row budget, and the score stage on a tiny trained run."""

from __future__ import annotations

import shutil
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd
import pytest
from reference import reference_predictions

from job.cli import main
from job.core.config import PRESETS, ModelConfig, ScoreOptions, model_config
from job.core.errors import ConfigError, JobError
from job.data.features import SideFeatures
from job.data.interactions import (
    PRIOR_COUNT,
    EncodedRatings,
    Interactions,
    SeenPairs,
    bayesian_average,
)
from job.data.movielens import HALF_STARS
from job.models.rank import BlockScorer, score_blocks
from job.models.rating import build_model
from job.runfolder.manifest import load_run, read_manifest
from job.stages.merge import merge_stage
from job.stages.score import (
    Shard,
    check_row_budget,
    estimate_rows,
    parse_shard,
    resolve_shard,
    score_stage,
    shard_mask,
    stable_hash,
)

N_USERS, N_MOVIES = 23, 37
COLD_USERS = (3, 4)
COLD_MOVIES = (5, 6, 36)


@pytest.fixture(scope="module")
def inputs() -> Interactions:
    """Seeded pairs with the awkward cases: a user who rated all but two movies, one who
    rated every movie, one who rated none; cold users and movies (ratings, none in training)."""
    rng = np.random.default_rng(7)
    seen = rng.random((N_USERS, N_MOVIES)) < 0.3
    seen[0] = True
    seen[0, [4, 20]] = False  # two unwatched: fewer than most K's
    seen[1] = True  # nothing left to recommend
    seen[2] = False  # no ratings at all (cold)
    users, movies = np.nonzero(seen)
    ratings = rng.choice(HALF_STARS.values, size=len(users))
    train = ~np.isin(users, COLD_USERS) & ~np.isin(movies, COLD_MOVIES)
    rated = EncodedRatings(np.stack([users, movies], axis=1), ratings, N_USERS, N_MOVIES)
    return Interactions.from_ratings(rated, train, HALF_STARS)


def random_side(n_movies: int, seed: int = 0) -> SideFeatures:
    rng = np.random.default_rng(seed)
    genres = (rng.random((n_movies, 5)) < 0.3).astype("float32")
    tags = rng.random((n_movies, 4)).astype("float32")
    years = rng.normal(size=(n_movies, 2)).astype("float32")
    return SideFeatures(genres, years, tags / tags.sum(axis=1, keepdims=True))


# Every preset, and every architecture x output the models support: the fast path may only
# use user_parts / movie_parts / pair_scores, so it must agree for all of them.
MODELS = {
    **{f"preset {name}": config for name, config in PRESETS.items()},
    "mlp biases": ModelConfig(biases=True),
    "mlp classes": ModelConfig(output="classes"),
    "dlrm classes biases": ModelConfig(architecture="dlrm", output="classes", biases=True),
}


def make_model(config: ModelConfig, seed: int = 1):
    model = build_model(
        config, N_USERS, N_MOVIES, 3.4, seed, scale=HALF_STARS, side=random_side(N_MOVIES)
    )
    if config.biases:  # zeros at initialisation: give them values so they are exercised
        rng = np.random.default_rng(2)
        for table in (model.user_bias.embeddings, model.movie_bias.embeddings):
            table.assign(rng.normal(0, 0.5, table.shape).astype("float32"))
    return model


def dense(ref: pd.DataFrame) -> np.ndarray:
    """(users, movies) ranking scores of reference_predictions; -inf where rated."""
    dense = np.full((N_USERS, N_MOVIES), -np.inf)
    dense[ref["user"], ref["movie"]] = ref["score"]
    return dense


@pytest.mark.parametrize("name", sorted(MODELS))
def test_fast_path_equals_reference_path(name: str, inputs: Interactions) -> None:
    model = make_model(MODELS[name])
    reference = reference_predictions(model, inputs, np.arange(N_USERS))
    scorer = BlockScorer(model, inputs, k=4, block_users=5, with_ratings=True)
    blocks = list(score_blocks(scorer, np.arange(N_USERS, dtype="int32")))
    fast = np.concatenate([b.ratings for b in blocks])
    got = fast[reference["user"], reference["movie"]]
    assert np.ptp(reference["score"]) > 0.01  # the model is not trivially constant
    np.testing.assert_allclose(got, reference["predicted_rating"], rtol=1e-5, atol=1e-5)
    top = np.concatenate([b.top_scores for b in blocks])
    expected = -np.sort(-dense(reference), axis=1)[:, :4]
    np.testing.assert_allclose(top, expected, rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def seed_model():
    return make_model(model_config("seed"), seed=5)


@pytest.fixture(scope="module")
def seed_reference(seed_model, inputs: Interactions) -> pd.DataFrame:
    return reference_predictions(seed_model, inputs, np.arange(N_USERS))


# K = 1, a few, more than user 0's two unwatched movies, more than the catalogue; blocks of
# one user, a few (23 users = 5 full blocks + 3), and more than there are users.
@pytest.mark.parametrize(
    ("k", "block_users"), [(1, 1), (1, 64), (3, 4), (10, 1), (10, 64), (N_MOVIES + 5, 4)]
)
def test_top_k_equals_brute_force(
    k: int, block_users: int, inputs: Interactions, seed_model, seed_reference: pd.DataFrame
) -> None:
    scores_dense = dense(seed_reference)
    expected = -np.sort(-scores_dense, axis=1)[:, : min(k, N_MOVIES)]
    scorer = BlockScorer(seed_model, inputs, k=k, block_users=block_users)
    blocks = list(score_blocks(scorer, np.arange(N_USERS, dtype="int32")))
    scores = np.concatenate([b.top_scores for b in blocks])
    movies = np.concatenate([b.top_movies for b in blocks])
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-5)
    seen = inputs.seen.mask(np.arange(N_USERS))
    for user in range(N_USERS):
        valid = np.isfinite(scores[user])
        assert valid.sum() == min(k, N_MOVIES - seen[user].sum())  # K > unwatched: fewer rows
        chosen = movies[user][valid]
        assert len(set(chosen)) == len(chosen)
        assert not seen[user, chosen].any()
        np.testing.assert_allclose(
            scores_dense[user, chosen], scores[user][valid], rtol=1e-5, atol=1e-5
        )


def test_cold_pairs_get_the_popularity_rule(
    inputs: Interactions, seed_model, seed_reference: pd.DataFrame
) -> None:
    ref = seed_reference
    cold = ref["user"].isin([*COLD_USERS, 2]) | ref["movie"].isin(COLD_MOVIES)
    assert ref["cold_start"].tolist() == cold.tolist()
    expected = inputs.cold.popularity[ref["movie"][cold]]
    np.testing.assert_allclose(ref["score"][cold], expected)
    scorer = BlockScorer(seed_model, inputs, k=3, block_users=8, with_ratings=True)
    fast = np.concatenate([b.ratings for b in score_blocks(scorer, np.arange(N_USERS))])
    np.testing.assert_allclose(fast[ref["user"][cold], ref["movie"][cold]], expected, rtol=1e-6)


def test_bayesian_average() -> None:
    movies = np.array([0, 0, 1, 1, 1])
    ratings = np.array([5.0, 4.0, 1.0, 2.0, 3.0])
    score, counts, mean = bayesian_average(movies, ratings, 3, prior_count=2.0)
    assert mean == pytest.approx(3.0)
    np.testing.assert_allclose(score, [(2 * 3 + 9) / 4, (2 * 3 + 6) / 5, 3.0])
    assert counts.tolist() == [2, 3, 0]
    assert PRIOR_COUNT > 0


def test_seen_mask_matches_dense() -> None:
    rng = np.random.default_rng(0)
    dense = rng.random((9, 13)) < 0.4
    users, movies = np.nonzero(dense)
    order = rng.permutation(len(users))
    seen = SeenPairs.from_pairs(users[order], movies[order], 9, 13)
    assert seen.counts.tolist() == dense.sum(axis=1).tolist()
    pick = np.array([4, 0, 8, 4])
    np.testing.assert_array_equal(seen.mask(pick), dense[pick])


# ---------------------------------------------------------------------------------------
# Shards


def test_parse_shard() -> None:
    assert parse_shard("2/8") == Shard(2, 8)
    assert parse_shard(" 0 / 1 ") == Shard(0, 1)
    assert str(Shard(3, 4)) == "3/4"


@pytest.mark.parametrize("text", ["3/2", "2/2", "x", "1", "-1/2", "0/0", "1/2/3", "a/b", ""])
def test_bad_shard_is_refused(text: str) -> None:
    with pytest.raises(ConfigError, match="--shard"):
        parse_shard(text)


def test_shard_from_aws_batch_environment() -> None:
    env = {"AWS_BATCH_JOB_ARRAY_INDEX": "2", "SHARD_COUNT": "5"}
    assert resolve_shard(None, env) == Shard(2, 5)
    assert resolve_shard("1/3", env) == Shard(1, 3)  # the flag wins
    assert resolve_shard(None, {}) == Shard(0, 1)
    with pytest.raises(ConfigError, match="SHARD_COUNT"):
        resolve_shard(None, {"AWS_BATCH_JOB_ARRAY_INDEX": "0"})
    with pytest.raises(ConfigError, match="--shard"):
        resolve_shard(None, {"AWS_BATCH_JOB_ARRAY_INDEX": "5", "SHARD_COUNT": "5"})


def test_stable_hash_is_pinned_and_shards_partition_users() -> None:
    # Pinned: a change would silently move users between shards of runs already made.
    # (SplitMix64 of 0 is its published first output for seed 0, 0xE220A8397B1DCDAF.)
    assert stable_hash(np.array([0, 1, 557, -3])).tolist() == [
        16294208416658607535,
        10451216379200822465,
        7603730626423713433,
        17824971123127853533,
    ]
    ids = np.arange(1, 10_001) * 7
    masks = [shard_mask(ids, Shard(i, 4)) for i in range(4)]
    assert (np.sum(masks, axis=0) == 1).all()
    assert all(2_200 < m.sum() < 2_800 for m in masks)  # balanced, not id % N


# ---------------------------------------------------------------------------------------
# The row budget


def test_row_budget(inputs: Interactions) -> None:
    everyone = np.arange(N_USERS)
    full = estimate_rows(inputs.seen, everyone, None)
    assert full == N_USERS * N_MOVIES - len(inputs.seen.movies)
    assert estimate_rows(inputs.seen, everyone, 2) == 2 * (N_USERS - 1)  # user 1: none left
    check_row_budget(full, full, N_USERS, None)
    with pytest.raises(JobError, match=r"--max-rows .*--keep-top 2 "):
        check_row_budget(full, 2 * N_USERS + 1, N_USERS, None)


# ---------------------------------------------------------------------------------------
# The score stage on a trained run


def query(out: Path, sql: str) -> pd.DataFrame:
    with duckdb.connect(str(out / "recommendations.duckdb"), read_only=True) as con:
        return con.execute(sql).df()


def test_predictions_cover_every_unwatched_pair(scored_run: Path) -> None:
    run = load_run(scored_run, read_manifest(scored_run))
    rated = run.ratings.groupby("user_id").size()
    n_movies = run.encoding.n_movies
    n = query(scored_run, "SELECT count(*) AS n FROM predictions")["n"][0]
    assert n == int((n_movies - rated).sum())
    overlap = query(
        scored_run,
        "SELECT count(*) AS n FROM predictions JOIN ratings USING (user_id, movie_id)",
    )["n"][0]
    assert overlap == 0
    low, high = query(
        scored_run, "SELECT min(predicted_rating), max(predicted_rating) FROM predictions"
    ).iloc[0]
    assert run.scale.low <= low <= high <= run.scale.high
    distinct = query(scored_run, "SELECT count(DISTINCT (user_id, movie_id)) AS n FROM predictions")
    assert distinct["n"][0] == n


def test_top_k_is_the_best_of_predictions(scored_run: Path) -> None:
    top = query(scored_run, "SELECT * FROM top_k ORDER BY user_id, rank")
    assert top.groupby("user_id")["rank"].apply(list).map(lambda r: r == [1, 2, 3, 4, 5]).all()
    assert (top.groupby("user_id")["predicted_rating"].diff().dropna() <= 0).all()
    # every top-5 rating is at least the best rating among the user's movies not in top_k
    rest = query(
        scored_run,
        "SELECT p.user_id, max(p.predicted_rating) AS best FROM predictions p "
        "ANTI JOIN top_k t USING (user_id, movie_id) GROUP BY p.user_id",
    ).set_index("user_id")["best"]
    worst = top.groupby("user_id")["predicted_rating"].min()
    assert (worst.reindex(rest.index) >= rest - 1e-6).all()


def sharded_copy(tiny_run: Path, tmp_path: Path) -> Path:
    out = tmp_path / "out"
    shutil.copytree(tiny_run, out, ignore=shutil.ignore_patterns("parts", "parquet", "*.duckdb"))
    return out


def test_shards_merge_to_the_unsharded_result(
    tiny_run: Path, scored_run: Path, tmp_path: Path
) -> None:
    out = sharded_copy(tiny_run, tmp_path)
    users = [
        score_stage(out, Shard(i, 3), ScoreOptions(top_k=5, block_users=3)).users for i in range(3)
    ]
    assert sum(users) == load_run(out, read_manifest(out)).encoding.n_users and min(users) > 0
    merge_stage(out)
    for table, order in (("predictions", "user_id, movie_id"), ("top_k", "user_id, rank")):
        sql = f"SELECT * FROM {table} ORDER BY {order}"
        pd.testing.assert_frame_equal(query(out, sql), query(scored_run, sql))


def test_keep_top_keeps_the_best_n_per_user(
    tiny_run: Path, scored_run: Path, tmp_path: Path
) -> None:
    out = sharded_copy(tiny_run, tmp_path)
    summary = score_stage(out, options=ScoreOptions(top_k=5, keep_top=3))
    merge_stage(out)
    kept = query(out, "SELECT user_id, movie_id FROM predictions ORDER BY user_id, movie_id")
    best = query(
        scored_run,
        "SELECT user_id, movie_id FROM top_k WHERE rank <= 3 ORDER BY user_id, movie_id",
    )
    pd.testing.assert_frame_equal(kept, best)
    assert summary.prediction_rows == len(kept)


def test_row_budget_is_checked_before_scoring(tiny_run: Path, tmp_path: Path) -> None:
    out = sharded_copy(tiny_run, tmp_path)
    with pytest.raises(JobError, match="--max-rows 100"):
        score_stage(out, options=ScoreOptions(max_rows=100))
    assert not (out / "parts").exists() or not any((out / "parts").iterdir())
    score_stage(out, options=ScoreOptions(keep_top=1, max_rows=100))  # 50 users x 1 fits


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--shard", "3/2"], "--shard 3/2"),
        (["--shard", "x"], "--shard 'x'"),
        (["--top-k", "0"], "--top-k"),
        (["--keep-top", "0"], "--keep-top"),
        (["--block-users", "0"], "--block-users"),
        (["--max-rows", "10"], "--max-rows 10"),
    ],
)
def test_score_cli_errors(
    args: list[str],
    message: str,
    tiny_run: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = sharded_copy(tiny_run, tmp_path)
    assert main(["-q", "score", "--out", str(out), *args]) != 0
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err


def test_score_cli_reads_aws_batch_environment(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = sharded_copy(tiny_run, tmp_path)
    monkeypatch.setenv("AWS_BATCH_JOB_ARRAY_INDEX", "1")
    monkeypatch.setenv("SHARD_COUNT", "2")
    assert main(["-q", "score", "--out", str(out), "--top-k", "2"]) == 0
    assert sorted(p.name for p in (out / "parts").iterdir()) == [
        "predictions-00001-of-00002.parquet",
        "score-00001-of-00002.json",
        "top_k-00001-of-00002.parquet",
    ]
