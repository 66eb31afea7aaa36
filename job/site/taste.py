""" "Start from your taste": recommendations for a visitor with no account, in the browser.

The visitor ticks movies they liked; ``static/taste.js`` adds up, for every neighbour of
every pick, the neighbour's score (``TASTE_SOURCE`` in ``job.site.data``), and shows the ten
best movies that are not picks, each with the pick that contributed most. ``recommend`` is
the same rule in Python: the reference the browser test compares with, and what
``taste_overlap`` measures against the model's own top-k.

The neighbours travel as small scripts, ``taste/nb-<n>.js`` for the movies with
``movie_id % n_shards == n``: a pick loads one shard of about ``MOVIES_PER_SHARD`` movies.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

import duckdb

from job.core.layout import DATABASE_FILE
from job.site.data import Movie, Similar
from job.site.search import script_json

MOVIES_PER_SHARD = 64  # about 20 kB of neighbours and titles per shard
SCORE_DIGITS = 4  # neighbour scores as shipped to the browser


def n_taste_shards(n_movies: int) -> int:
    return max(1, math.ceil(n_movies / MOVIES_PER_SHARD))


def shipped_neighbours(
    neighbours: Mapping[int, Sequence[Similar]],
) -> dict[int, list[tuple[int, float]]]:
    """The neighbours as the browser gets them: scores rounded to ``SCORE_DIGITS``."""
    return {
        m: [(n.movie_id, round(n.similarity, SCORE_DIGITS)) for n in found]
        for m, found in neighbours.items()
    }


def recommend(
    neighbours: Mapping[int, Sequence[tuple[int, float]]],
    picks: Sequence[int],
    k: int = 10,
    exclude: Collection[int] = (),
) -> list[tuple[int, float, int]]:
    """The ``k`` best (movie, score, because) for ``picks``, as ``taste.js`` computes them.

    A movie's score is the sum of its scores as a neighbour of each pick (in pick order,
    so that the browser's floating-point sums are the same); ``because`` is the pick that
    gave the largest part (the first such pick on a tie). Picks and ``exclude`` are never
    recommended. Ties go to the smaller movie id.
    """
    skip = set(picks) | set(exclude)
    scores: dict[int, float] = {}
    because: dict[int, tuple[int, float]] = {}
    for pick in picks:
        for other, score in neighbours.get(pick, ()):
            if other in skip:
                continue
            scores[other] = scores.get(other, 0.0) + score
            if other not in because or score > because[other][1]:
                because[other] = (pick, score)
    best = sorted(scores.items(), key=lambda item: (-item[1], item[0]))[:k]
    return [(movie, score, because[movie][0]) for movie, score in best]


def write_taste_shards(
    folder: Path,
    movies: Mapping[int, Movie],
    neighbours: Mapping[int, Sequence[Similar]],
) -> int:
    """``nb-<n>.js``: ``movielensNeighbours(n, {movie: [[other, score], ...]}, {id: title})``
    for every movie of the catalogue (an empty list where it has no neighbours), with the
    titles of those movies and of their neighbours. Returns the number of shards."""
    count = n_taste_shards(len(movies))
    shipped = shipped_neighbours(neighbours)
    shards: list[dict[int, list[tuple[int, float]]]] = [{} for _ in range(count)]
    for movie_id in movies:
        shards[movie_id % count][movie_id] = shipped.get(movie_id, [])
    for number, shard in enumerate(shards):
        titles = {
            m: movies[m].title
            for m in sorted({*shard, *(o for found in shard.values() for o, _ in found)})
            if m in movies
        }
        body = ",".join(
            script_json(part)
            for part in ({str(m): [list(n) for n in v] for m, v in shard.items()}, titles)
        )
        (folder / f"nb-{number}.js").write_text(
            f"movielensNeighbours({number},{body});\n", encoding="utf-8"
        )
    return count


def taste_overlap(
    out: Path,
    neighbours: Mapping[int, Sequence[Similar]],
    k: int = 10,
    n_picks: int = 10,
) -> dict[str, float]:
    """How close the taste page comes to a user's own page, over every user with a top-k.

    Each user's ``n_picks`` best-rated movies (the user page's "top-rated" list) are fed to
    ``recommend``; overlap@k is the share of its first ``k`` that are in the user's top ``k``
    of the model. ``overlap_as_shown`` lets the recommendations include movies the user has
    rated (the page only knows the picks); ``overlap_unrated`` excludes them, as top_k does.
    ``popular_overlap`` is the same share for the cold-start list (the most popular unrated
    movies), for scale.
    """
    shipped = shipped_neighbours(neighbours)
    with duckdb.connect(str(out / DATABASE_FILE), read_only=True) as con:
        rated: dict[int, list[tuple[int, float, int]]] = {}
        for u, m, r, t in con.execute(
            "SELECT user_id, movie_id, rating, timestamp FROM ratings"
        ).fetchall():
            rated.setdefault(int(u), []).append((int(m), float(r), int(t)))
        top: dict[int, list[int]] = {}
        for u, m in con.execute(
            "SELECT user_id, movie_id FROM top_k WHERE rank <= ? AND NOT cold_start"
            " ORDER BY user_id, rank",
            [k],
        ).fetchall():
            top.setdefault(int(u), []).append(int(m))
        popular = [
            int(r[0]) for r in con.execute("SELECT movie_id FROM popular ORDER BY rank").fetchall()
        ]
    shown = unrated = pop = 0.0
    for user, mine in top.items():
        history = rated.get(user, [])
        best = sorted(history, key=lambda r: (-r[1], -r[2], r[0]))[:n_picks]
        picks = [m for m, _, _ in best]
        seen = {m for m, _, _ in history}
        target = set(mine)
        shown += len({m for m, _, _ in recommend(shipped, picks, k)} & target) / k
        unrated += len({m for m, _, _ in recommend(shipped, picks, k, seen)} & target) / k
        pop += len(set([m for m in popular if m not in seen][:k]) & target) / k
    n = max(1, len(top))
    return {
        "users": len(top),
        "overlap_as_shown": shown / n,
        "overlap_unrated": unrated / n,
        "popular_overlap": pop / n,
    }
