"""The one scoring path with the default preset's ranker, against a brute-force numpy sort."""

from __future__ import annotations

import numpy as np
import pytest

from job.core.config import model_config
from job.data.interactions import EncodedRatings, Interactions
from job.data.movielens import HALF_STARS
from job.models.itemitem import WatchAndLike, fit_ease
from job.models.rank import BlockScorer, nearest_neighbours, score_blocks
from job.models.rating import build_model

N_USERS, N_MOVIES, K = 23, 37, 7
COLD_USERS = (3, 4)  # no training rating: the cold-start rule ranks by popularity


@pytest.fixture(scope="module")
def setting() -> tuple[Interactions, WatchAndLike]:
    rng = np.random.default_rng(7)
    pairs = np.unique(
        np.stack([rng.integers(0, N_USERS, 300), rng.integers(0, N_MOVIES, 300)], axis=1), axis=0
    )
    ratings = rng.choice(HALF_STARS.values, len(pairs))
    is_train = ~np.isin(pairs[:, 0], COLD_USERS)
    rated = EncodedRatings(pairs, ratings, N_USERS, N_MOVIES)
    inputs = Interactions.from_ratings(rated, is_train, HALF_STARS)
    ranker = WatchAndLike(
        watch=fit_ease(inputs.watched, 3.0, min_likes=1)[0],
        like=fit_ease(inputs.liked, 2.0, min_likes=1)[0],
    )
    return inputs, ranker


@pytest.mark.parametrize("block_users", [1, 5, N_USERS])
def test_ranked_top_k_is_the_full_sort_of_the_ranker_score(
    setting: tuple[Interactions, WatchAndLike], block_users: int
) -> None:
    inputs, ranker = setting
    model = build_model(model_config("seed"), N_USERS, N_MOVIES, 3.5, seed=0, scale=HALF_STARS)
    scorer = BlockScorer(model, inputs, K, block_users, with_ratings=True, ranker=ranker)
    users = np.arange(N_USERS, dtype="int32")
    blocks = [scorer(users[s : s + block_users]) for s in range(0, N_USERS, block_users)]
    top_scores = np.concatenate([b.top_scores for b in blocks])
    top_movies = np.concatenate([b.top_movies for b in blocks])
    top_ratings = np.concatenate([b.top_ratings for b in blocks])
    ratings = np.concatenate([b.ratings for b in blocks])

    # Brute force: the ranker's score, popularity for users it cannot place, seen masked.
    expected = ranker.scores(inputs.watched, inputs.liked).astype("float64")
    unknown = inputs.cold.cold_users | ~ranker.knows(inputs.watched)
    expected[unknown] = inputs.cold.popularity
    expected[inputs.seen.mask(users)] = -np.inf
    best = -np.sort(-expected, axis=1)[:, :K]
    np.testing.assert_allclose(top_scores, best, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        np.take_along_axis(expected, top_movies, 1), best, rtol=1e-5, atol=1e-6
    )
    assert unknown[list(COLD_USERS)].all()
    # Each pick carries its predicted rating, clipped to the scale.
    np.testing.assert_allclose(top_ratings, np.take_along_axis(ratings, top_movies, 1))
    assert ratings.min() >= 0.5 and ratings.max() <= 5.0


def test_score_matrix_with_a_ranker_is_the_compiled_blocks_scores(
    setting: tuple[Interactions, WatchAndLike],
) -> None:
    """Evaluation's scores (numpy, no rating model) equal the score stage's compiled ones."""
    inputs, ranker = setting
    model = build_model(model_config("seed"), N_USERS, N_MOVIES, 3.5, seed=0, scale=HALF_STARS)
    scorer = BlockScorer(model, inputs, K, 5, with_ratings=True, ranker=ranker)
    users = np.array([4, 0, 9, 3, 22, 17], dtype="int32")  # cold users among them
    compiled = np.concatenate([scorer(users[s : s + 5]).scores for s in (0, 5)])
    matrix = scorer.score_matrix(users)
    assert matrix.dtype == np.float64 and matrix.shape == (len(users), N_MOVIES)
    np.testing.assert_array_equal(matrix, compiled.astype("float64"))


@pytest.mark.parametrize("threads", [2, 3])
def test_blocks_scored_on_threads_come_in_order_and_equal_one_threads(
    setting: tuple[Interactions, WatchAndLike], threads: int
) -> None:
    inputs, ranker = setting
    model = build_model(model_config("seed"), N_USERS, N_MOVIES, 3.5, seed=0, scale=HALF_STARS)
    scorer = BlockScorer(model, inputs, K, 4, ranker=ranker)
    users = np.arange(N_USERS, dtype="int32")[::-1].copy()
    alone = list(score_blocks(scorer, users, threads=1))
    together = list(score_blocks(scorer, users, threads=threads))
    assert len(together) == len(alone) == -(-N_USERS // 4)
    for one, many in zip(alone, together, strict=True):
        np.testing.assert_array_equal(many.users, one.users)
        np.testing.assert_array_equal(many.top_movies, one.top_movies)
        np.testing.assert_array_equal(many.top_scores, one.top_scores)
    np.testing.assert_array_equal(np.concatenate([b.users for b in together]), users)


def test_reasons_are_liked_movies_of_the_user(setting: tuple[Interactions, WatchAndLike]) -> None:
    inputs, ranker = setting
    picks = np.tile(np.arange(N_MOVIES), (N_USERS, 1))
    reasons = ranker.reasons(inputs.liked, picks)
    for user in range(N_USERS):
        liked = set(inputs.liked[user].indices)
        given = reasons[user][reasons[user] >= 0]
        assert set(given) <= liked
        if not liked:
            assert (reasons[user] == -1).all()


def brute_force_neighbours(vectors: np.ndarray, k: int, allowed: np.ndarray) -> list[list[int]]:
    unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    answer = []
    for row in range(len(vectors)):
        scores = unit @ unit[row]
        options = [i for i in np.argsort(-scores, kind="stable") if allowed[i] and i != row]
        answer.append(options[:k])
    return answer


@pytest.mark.parametrize("k", [1, 3, 40])  # 40: more than there are candidates
@pytest.mark.parametrize("block", [1, 7, 1000])
@pytest.mark.parametrize("masked", [False, True])
def test_nearest_neighbours_match_brute_force(k: int, block: int, masked: bool) -> None:
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(30, 4)).astype("float32")
    allowed = rng.random(30) < 0.6 if masked else np.ones(30, bool)
    index, similarity = nearest_neighbours(
        vectors, k, candidates=allowed if masked else None, block=block
    )
    assert index.shape == similarity.shape == (30, k)
    expected = brute_force_neighbours(vectors, k, allowed)
    for row in range(30):
        found = [int(i) for i in index[row] if i >= 0]
        assert found == expected[row]
        assert np.all(np.diff(similarity[row][: len(found)]) <= 1e-6)
        assert np.all(similarity[row][len(found) :] == -np.inf)


def test_rerank_candidates_are_the_n_best_unseen_ties_to_the_lower_column() -> None:
    from job.models.rank import rerank_candidates

    rng = np.random.default_rng(3)
    affinity = rng.integers(0, 4, (40, 30)).astype("float32")  # many ties
    seen = rng.random((40, 30)) < 0.3
    for n in (1, 5, 29, 30, 31):
        picked = rerank_candidates(affinity, seen, n)
        for row in range(40):
            unseen = np.flatnonzero(~seen[row])
            # brute force: a stable sort of the unseen columns, best first
            best = unseen[np.argsort(-affinity[row, unseen], kind="stable")][:n]
            np.testing.assert_array_equal(np.flatnonzero(picked[row]), np.sort(best))


@pytest.mark.parametrize("candidates", [3, 12, N_MOVIES])
def test_the_rating_term_reranks_the_item_item_candidates(
    setting: tuple[Interactions, WatchAndLike],
    monkeypatch: pytest.MonkeyPatch,
    candidates: int,
) -> None:
    """score = item-item + weight x (predicted - mean) on each user's ``candidates`` best
    unseen movies by item-item, item-item alone elsewhere; popularity for users it cannot
    place. The compiled full block, the compiled ranked block (top K only) and evaluation's
    numpy scores agree with a brute-force numpy computation."""
    import dataclasses

    import job.models.rank as rank

    monkeypatch.setattr(rank, "RERANK_CANDIDATES", candidates)
    inputs, ranker = setting
    ranker = dataclasses.replace(ranker, rating_weight=0.5)
    model = build_model(model_config("seed"), N_USERS, N_MOVIES, 3.5, seed=0, scale=HALF_STARS)
    users = np.arange(N_USERS, dtype="int32")
    full = BlockScorer(model, inputs, K, N_USERS, with_ratings=True, ranker=ranker)
    ranked = BlockScorer(model, inputs, K, N_USERS, ranker=ranker)
    block, top = full(users), ranked(users)
    assert block.scores is not None

    seen = inputs.seen.mask(users)
    affinity = ranker.scores(inputs.watched, inputs.liked).astype("float64")
    liking = full.model_ratings(users) - model.rating_mean
    cold = inputs.cold.cold_users[:, None] | inputs.cold.cold_movies[None, :]
    expected = affinity.copy()
    for row in users:
        unseen = np.flatnonzero(~seen[row])
        best = unseen[np.argsort(-affinity[row, unseen], kind="stable")][:candidates]
        expected[row, best] += 0.5 * np.where(cold[row, best], 0.0, liking[row, best])
    unknown = inputs.cold.cold_users | ~ranker.knows(inputs.watched)
    expected[unknown] = inputs.cold.popularity
    np.testing.assert_allclose(block.scores, expected, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(full.score_matrix(users), expected, rtol=1e-5, atol=1e-5)
    expected[seen] = -np.inf
    best = -np.sort(-expected, axis=1)[:, :K]
    for found in (block, top):
        np.testing.assert_allclose(found.top_scores, best, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(
            np.take_along_axis(expected, found.top_movies, 1), best, rtol=1e-5, atol=1e-5
        )
    np.testing.assert_allclose(top.top_ratings, block.top_ratings, rtol=1e-5)
