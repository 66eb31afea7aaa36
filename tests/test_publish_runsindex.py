"""job.publish.runsindex: what changed between two top 10s (against a brute-force answer),
each run's summary, and the runs index that publish keeps: three publishes to moto with
``--keep-runs 2``, and the reasons given where no comparison can be made."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from publish_support import RUN_A, RUN_B, RUN_C, get, make_out

from job.publish import publish
from job.publish.runsindex import (
    MOVIES_FILE,
    RUNS_INDEX,
    TOP_K_FILE,
    compare_top_k,
    run_summary,
)


def random_top_k(rng: np.random.Generator, users: list[int], n_movies: int, k: int) -> pd.DataFrame:
    """Each user's top ``k`` (fewer for some users), distinct movies, ranks from 1."""
    rows = []
    for user in users:
        length = int(rng.integers(1, k + 1)) if rng.random() < 0.2 else k
        for rank, movie in enumerate(rng.choice(n_movies, size=length, replace=False), start=1):
            rows.append((user, rank, int(movie)))
    return pd.DataFrame(rows, columns=["user_id", "rank", "movie_id"])


def brute_force(previous: pd.DataFrame, current: pd.DataFrame, k: int) -> dict[str, Any]:
    """The same figures, one user at a time with Python sets."""

    def lists(frame: pd.DataFrame) -> dict[int, set[int]]:
        found: dict[int, set[int]] = {}
        for user, rank, movie in frame.itertuples(index=False):
            if rank <= k:
                found.setdefault(int(user), set()).add(int(movie))
        return found

    before, after = lists(previous), lists(current)
    common = sorted(set(before) & set(after))
    overlaps = [len(before[u] & after[u]) / max(len(before[u]), len(after[u])) for u in common]
    changed = sum(before[u] != after[u] for u in common)
    seen_before = set().union(*before.values()) if before else set()
    new: dict[int, int] = {}
    for movies in after.values():
        for movie in movies - seen_before:
            new[movie] = new.get(movie, 0) + 1
    return {
        "users_compared": len(common),
        "users_changed": changed,
        "mean_overlap": sum(overlaps) / len(overlaps) if overlaps else None,
        "new_movies": len(new),
        "new_movie_users": dict(sorted(new.items(), key=lambda mn: (-mn[1], mn[0]))[:10]),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("k", [10, 3])
def test_compare_top_k_matches_brute_force(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    previous = random_top_k(rng, list(range(0, 30)), n_movies=40, k=10)
    current = random_top_k(rng, list(range(5, 40)), n_movies=45, k=10)
    # Some users keep their list exactly, shuffled: order alone is no change.
    same = previous[previous["user_id"].isin([6, 7, 8])].sample(frac=1.0, random_state=seed)
    current = pd.concat([current[~current["user_id"].isin([6, 7, 8])], same])
    found = compare_top_k(previous, current, k=k)
    expected = brute_force(previous, current, k)
    assert found.users_compared == expected["users_compared"] == 25
    assert found.users_changed == expected["users_changed"] < 25
    assert found.mean_overlap == pytest.approx(expected["mean_overlap"])
    assert found.new_movies == expected["new_movies"]
    assert found.new_movie_users == expected["new_movie_users"]
    assert found.share_changed == pytest.approx(found.users_changed / 25)


def test_compare_top_k_of_a_run_with_itself_and_with_nothing_in_common() -> None:
    rng = np.random.default_rng(5)
    top = random_top_k(rng, list(range(20)), n_movies=30, k=10)
    same = compare_top_k(top, top)
    assert (same.users_changed, same.mean_overlap, same.new_movies) == (0, 1.0, 0)
    other = top.assign(movie_id=top["movie_id"] + 100)
    apart = compare_top_k(top, other)
    assert (apart.users_changed, apart.mean_overlap) == (20, 0.0)
    assert apart.new_movies == top["movie_id"].nunique()
    nobody = compare_top_k(top, top.assign(user_id=top["user_id"] + 100))
    assert (nobody.users_compared, nobody.mean_overlap, nobody.share_changed) == (0, None, None)


def manifest(run_id: str, rmse: float, dataset: str = "tiny") -> dict[str, object]:
    rows = [
        {"model": "global mean", "rmse": 1.1, "mae": 0.9, "ndcg_at_10": 0.1},
        {"model": "seed", "rmse": rmse, "mae": rmse - 0.2, "ndcg_at_10": 0.3,
         "coverage_at_10": 0.05, "ranked_users": 9},
    ]  # fmt: skip
    return {
        "run_id": run_id,
        "dataset": {"name": dataset},
        "model": {"preset": "seed"},
        "metrics": {"evaluated_on": "test", "rows": rows},
    }


def test_run_summary_takes_the_presets_row() -> None:
    assert run_summary(manifest(RUN_A, 0.9)) == {
        "dataset": "tiny",
        "preset": "seed",
        "rmse": 0.9,
        "mae": pytest.approx(0.7),
        "ndcg_at_10": 0.3,
        "coverage_at_10": 0.05,
    }
    # run.json without metrics (an older or hand-made run): the summary says so with None.
    assert run_summary({"run_id": RUN_A}) == dict.fromkeys(
        ("dataset", "preset", "rmse", "mae", "ndcg_at_10", "coverage_at_10")
    )


def real_run(root: Path, run_id: str, top_k: pd.DataFrame, rmse: float, dataset: str = "tiny"):
    """make_out's run with a real run.json, top_k.parquet and movies.parquet."""
    out = make_out(root, run_id)
    (out / "run.json").write_text(json.dumps(manifest(run_id, rmse, dataset)))
    top_k.to_parquet(out / TOP_K_FILE)
    titles = [f"Movie {m}, The (2000)" for m in range(60)]
    pd.DataFrame({"movie_id": range(60), "title": titles}).to_parquet(out / MOVIES_FILE)
    return out


def test_three_publishes_keep_two_runs_in_the_index(
    s3_server: str, bucket: str, tmp_path: Path
) -> None:
    rng = np.random.default_rng(7)
    users = list(range(1, 13))
    tops = [random_top_k(rng, users, n_movies=n, k=10) for n in (20, 40, 60)]
    rmses = [0.95, 0.91, 0.88]
    target = f"s3://{bucket}/site"
    for run_id, top, rmse in zip((RUN_A, RUN_B, RUN_C), tops, rmses, strict=True):
        publish(real_run(tmp_path, run_id, top, rmse), target, endpoint_url=s3_server, keep_runs=2)

    index = json.loads(get(s3_server, bucket, f"site/{RUNS_INDEX}"))
    assert [run["run_id"] for run in index["runs"]] == [RUN_B, RUN_C]  # oldest first
    for run, rmse in zip(index["runs"], rmses[1:], strict=True):
        assert (run["dataset"], run["preset"], run["rmse"]) == ("tiny", "seed", rmse)
        assert run["mae"] == pytest.approx(rmse - 0.2)
        assert (run["ndcg_at_10"], run["coverage_at_10"]) == (0.3, 0.05)
        assert run["site"] == f"runs/{run['run_id']}/site/index.html"
    for run, (before, after) in zip(index["runs"], [tops[:2], tops[1:]], strict=True):
        expected = brute_force(before, after, 10)
        changes = run["changes"]
        assert changes["previous_run"] == {RUN_B: RUN_A, RUN_C: RUN_B}[run["run_id"]]
        assert changes["users_compared"] == expected["users_compared"] == 12
        assert changes["users_changed"] == expected["users_changed"]
        assert changes["share_changed"] == pytest.approx(expected["users_changed"] / 12)
        assert changes["mean_overlap"] == pytest.approx(expected["mean_overlap"])
        assert changes["new_movies"] == expected["new_movies"] > 0
        assert [(m["movie_id"], m["users"]) for m in changes["new_movie_examples"]] == list(
            expected["new_movie_users"].items()
        )
        first = changes["new_movie_examples"][0]
        assert first["title"] == f"The Movie {first['movie_id']} (2000)"  # as pages show it


def test_the_first_run_and_runs_that_cannot_be_compared(tmp_path: Path) -> None:
    """A local folder target (the same algorithm): the first run has nothing to compare with,
    another dataset and a damaged top_k give a reason, and the publish goes on."""
    rng = np.random.default_rng(3)
    top = random_top_k(rng, list(range(5)), n_movies=20, k=10)
    target = str(tmp_path / "public")
    publish(real_run(tmp_path, RUN_A, top, 0.9), target)
    publish(real_run(tmp_path / "b", RUN_B, top, 0.9, dataset="other"), target)
    damaged = real_run(tmp_path / "c", RUN_C, top, 0.9, dataset="other")
    (damaged / TOP_K_FILE).write_bytes(b"PAR1 not really PAR1")
    publish(damaged, target)
    runs = json.loads((Path(target) / RUNS_INDEX).read_text())["runs"]
    assert [r["run_id"] for r in runs] == [RUN_A, RUN_B, RUN_C]
    assert runs[0]["changes"] is None
    assert "another dataset (tiny)" in runs[1]["changes"]["reason"]
    assert runs[2]["changes"]["previous_run"] == RUN_B
    assert runs[2]["changes"]["reason"].startswith("cannot compare the top 10s: ")
    assert "\n" not in runs[2]["changes"]["reason"]
