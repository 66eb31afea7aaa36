"""The article's "Example Predictions": one user's favourite movies and top recommendations."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from job.core.errors import JobError
from job.core.layout import RANKER_FILE
from job.data.interactions import interactions_of
from job.models.itemitem import WatchAndLike
from job.models.rank import BlockScorer
from job.models.rating import load_model
from job.runfolder.manifest import load_run
from job.runfolder.preflight import require


@dataclass(frozen=True)
class UserExample:
    user_id: int
    n_rated: int
    mean_rating: float
    top_rated: pd.DataFrame  # movie_id, rating, title, genres
    # movie_id, predicted_rating, title, genres, and the reason: because_title and
    # because_rating, the user's liked movie behind the pick (missing where there is none)
    recommendations: pd.DataFrame


def example_for_user(
    out: Path, user_id: int, n_top_rated: int = 10, n_recommend: int = 5
) -> UserExample:
    """A user's favourite movies and the model's top picks among the movies they haven't rated."""
    run = load_run(out, require(out, "recommend"))
    if user_id not in set(run.encoding.user_ids.tolist()):
        raise JobError(
            f"user {user_id} is not in this run's data; pick one of {run.encoding.user_ids[0]}..{run.encoding.user_ids[-1]}"
        )
    rated = run.ratings[run.ratings["user_id"] == user_id]
    titles = run.movies.set_index("movie_id")
    top_rated = (
        rated.sort_values(["rating", "timestamp"], ascending=[False, False])
        .head(n_top_rated)[["movie_id", "rating"]]
        .join(titles, on="movie_id")
    )
    # The same scorer and ranker as the score stage, so this list is the user's top_k rows.
    inputs = interactions_of(run.encoding, run.ratings, run.scale)
    ranker = WatchAndLike.load(out / RANKER_FILE) if run.manifest.ranker == "ease" else None
    scorer = BlockScorer(load_model(run.out), inputs, n_recommend, block_users=1, ranker=ranker)
    user = run.encoding.encode_users([user_id])
    block = scorer(user)
    found = np.isfinite(block.top_scores[0])
    picks = block.top_movies[0][found]
    # Reasons come from the EASE ranker; a preset that ranks by predicted rating gives none.
    reasons = (
        ranker.reasons(inputs.liked[user], picks[None, :])[0]
        if ranker is not None
        else np.full(len(picks), -1)
    )
    because = pd.Series(
        np.where(reasons >= 0, run.encoding.decode_movies(np.maximum(reasons, 0)), -1)
    )
    ratings = rated.set_index("movie_id")["rating"]
    recommendations = pd.DataFrame(
        {
            "movie_id": run.encoding.decode_movies(picks),
            "predicted_rating": block.top_ratings[0][found],
            "because_title": because.map(titles["title"]),
            "because_rating": because.map(ratings),
        }
    ).join(titles, on="movie_id")
    return UserExample(
        user_id, len(rated), float(rated["rating"].mean()), top_rated, recommendations
    )


def format_example(example: UserExample) -> str:
    """The article's text layout."""
    lines = [
        f"User #{example.user_id} has rated {example.n_rated} movies (avg. rating = {example.mean_rating:.1f})",
        "Here are some of the top ratings the user had made:",
        "",
        "movie_id\trating\ttitle\tgenre",
    ]
    for row in example.top_rated.itertuples():
        lines.append(
            f"{row.movie_id}\t{row.rating:.1f}\t{row.title}\t{str(row.genres).replace('|', '-')}"
        )
    lines += [
        "",
        f"Showing recommendations for user: {example.user_id}",
        "=" * 36,
        "-" * 32,
        f"Top {len(example.recommendations)} movie recommendations",
        "-" * 32,
    ]
    for row in example.recommendations.itertuples():
        reason = (
            f", because you rated {row.because_title} {row.because_rating:.1f}"
            if isinstance(row.because_title, str)
            else ""
        )
        lines.append(
            f"{row.title} : {str(row.genres).replace('|', '-')}  (predicted {row.predicted_rating:.2f}{reason})"
        )
    return "\n".join(lines)
