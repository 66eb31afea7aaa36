"""The runs index (``PREFIX/runs.json``) and what changed between two runs' top 10s. Pure:
documents and frames in, documents out; ``core`` does the reading and writing.

Where things are, and why:

- **The index sits at the prefix, beside latest.json**, not in a run: a run's objects are
  rendered before it is published and never change after, so no run can list the runs that
  come after it. Its pages read ``../../../runs.json`` (from ``runs/RUN_ID/site/``) when a
  visitor opens them, which also means they always show the runs kept *now*.
- **An entry is made once per run, from the run itself**: publish puts the run's summary
  (dataset, preset, RMSE, MAE, nDCG@10, coverage@10, from its run.json) and what changed
  against the run before it into the run's completion marker (``published.json``), which is
  written once, when the run's upload is complete.
- **The index is rebuilt, never edited**: after pruning, publish lists the complete runs
  and writes the index from their markers, with the compare-and-swap and read-back of
  latest.json (``core.sync_runs_index``). It therefore holds exactly the kept complete runs,
  whatever order racing publishers finish in: the last write is made from a listing taken
  after every other publisher's last prune.
- **What changed is computed at publish time**, against the newest complete run created
  before this one: runs start on fresh runners, so the previous run exists only in the
  bucket, and publish is the one stage that reads the bucket. It reads the previous run's
  ``parquet/top_k.parquet``, small even for the largest datasets (sizes and times in
  docs/benchmarks.md).
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from job.core.baselines import BASELINE_NAMES

if TYPE_CHECKING:  # pandas is imported where a comparison is made, not with job.publish
    import pandas as pd

RUNS_INDEX = "runs.json"
TOP_K_FILE = "parquet/top_k.parquet"
MOVIES_FILE = "parquet/movies.parquet"
# The model row's metrics each entry carries, as run.json's metrics rows name them.
SUMMARY_METRICS = ("rmse", "mae", "ndcg_at_10", "coverage_at_10")
K = 10  # "top 10": the ranks compared
N_NEW_LISTED = 10  # movies new to any top 10 named in an entry (the rest are counted)


def run_summary(manifest: Any) -> dict[str, Any]:
    """What the index shows of a run, from its run.json: dataset, preset and the model's
    metrics (``None`` where run.json has no such value)."""
    manifest = manifest if isinstance(manifest, Mapping) else {}
    dataset = manifest.get("dataset")
    model = manifest.get("model")
    config = manifest.get("config")
    preset = (model.get("preset") if isinstance(model, Mapping) else None) or (
        config.get("preset") if isinstance(config, Mapping) else None
    )
    metrics = manifest.get("metrics")
    rows = metrics.get("rows") if isinstance(metrics, Mapping) else None
    rows = [r for r in rows if isinstance(r, Mapping)] if isinstance(rows, list) else []
    # The preset's row, else the first row that is not a baseline.
    ours = [r for r in rows if r.get("model") == preset]
    ours += [r for r in rows if r.get("model") not in BASELINE_NAMES]
    row: Mapping[str, Any] = ours[0] if ours else {}
    return {
        "dataset": dataset.get("name") if isinstance(dataset, Mapping) else None,
        "preset": preset,
        **{name: _number(row.get(name)) for name in SUMMARY_METRICS},
    }


@dataclass(frozen=True)
class TopKChanges:
    """What changed between two runs' top 10s.

    users_compared: users with a top 10 in both runs.
    users_changed: of those, the users whose top 10 holds other movies (order aside).
    mean_overlap: the mean over those users of |previous ∩ current| / max(|previous|,
        |current|), the share of a top 10 kept (1.0: nothing changed; None: no users).
    new_movies: movies in some user's top 10 now, and in nobody's before.
    new_movie_users: for the first of those (most users first), how many users' top 10
        hold it, by movie id.
    """

    users_compared: int
    users_changed: int
    mean_overlap: float | None
    new_movies: int
    new_movie_users: dict[int, int]

    @property
    def share_changed(self) -> float | None:
        return self.users_changed / self.users_compared if self.users_compared else None


def compare_top_k(
    previous: pd.DataFrame, current: pd.DataFrame, k: int = K, listed: int = N_NEW_LISTED
) -> TopKChanges:
    """Compare two ``top_k`` tables (columns user_id, rank, movie_id) over ranks 1 to ``k``.

    Pure and vectorised: one merge on (user, movie) counts every user's overlap.
    """
    import pandas as pd

    before = previous.loc[previous["rank"] <= k, ["user_id", "movie_id"]].drop_duplicates()
    after = current.loc[current["rank"] <= k, ["user_id", "movie_id"]].drop_duplicates()
    sizes = pd.concat(
        [before.groupby("user_id").size().rename("before"),
         after.groupby("user_id").size().rename("after")],
        axis=1,
        join="inner",
    )  # fmt: skip
    kept = after.merge(before, on=["user_id", "movie_id"]).groupby("user_id").size()
    overlap = kept.reindex(sizes.index, fill_value=0)
    largest = sizes.max(axis=1)
    shares = overlap / largest
    new = after.loc[~after["movie_id"].isin(before["movie_id"].unique()), "movie_id"]
    counts = new.value_counts()
    order = sorted(
        zip(counts.index.astype("int64").tolist(), counts.tolist(), strict=True),
        key=lambda item: (-item[1], item[0]),
    )
    return TopKChanges(
        users_compared=len(sizes),
        users_changed=int((overlap < largest).sum()),
        mean_overlap=float(shares.mean()) if len(sizes) else None,
        new_movies=len(counts),
        new_movie_users=dict(order[:listed]),
    )


def read_top_k(data: bytes) -> pd.DataFrame:
    """A top_k Parquet file's user_id, rank and movie_id columns."""
    import pandas as pd

    return pd.read_parquet(io.BytesIO(data), columns=["user_id", "rank", "movie_id"])


def changes_document(
    previous_run: str,
    previous_created: str,
    changes: TopKChanges | None = None,
    titles: Mapping[int, str] | None = None,
    reason: str = "",
) -> dict[str, Any]:
    """The ``changes`` of an index entry: the figures against ``previous_run``, or, where
    they could not be computed, the reason in one line."""
    document: dict[str, Any] = {
        "previous_run": previous_run,
        "previous_created_at": previous_created,
    }
    if changes is None:
        return {**document, "reason": reason}
    figures = asdict(changes)
    named = figures.pop("new_movie_users")
    return {
        **document,
        **figures,
        "share_changed": changes.share_changed,
        "new_movie_examples": [
            {"movie_id": m, "title": (titles or {}).get(m, f"Movie {m}"), "users": n}
            for m, n in named.items()
        ],
    }


def index_entry(marker: Mapping[str, Any], summary: Mapping[str, Any]) -> dict[str, Any]:
    """One run of the index: its marker's id, times and place, its summary, what changed."""
    return {
        "run_id": marker["run_id"],
        "created_at": marker.get("created_at", ""),
        "published_at": marker.get("published_at", ""),
        "site": marker.get("site", f"runs/{marker['run_id']}/site/index.html"),
        **{key: summary.get(key) for key in ("dataset", "preset", *SUMMARY_METRICS)},
        "changes": marker.get("changes"),
    }


def runs_index(entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The whole index: every kept run, oldest first. Deterministic (no time of writing), so
    a publisher that finds the same document stored writes nothing."""
    return {"runs": sorted(entries, key=lambda e: (e.get("created_at") or "", e["run_id"]))}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None
