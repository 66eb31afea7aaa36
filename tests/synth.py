"""Tiny seeded MovieLens-shaped folders for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np

GENRES = ["Action", "Comedy", "Drama", "Horror", "Romance", "Sci-Fi"]


def write_movielens(
    folder: Path, n_users: int = 40, n_movies: int = 60, per_user: int = 15, seed: int = 0
) -> Path:
    """ratings.csv, movies.csv, tags.csv and links.csv with a learnable signal (user taste x movie genre)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    movie_ids = np.arange(1, n_movies + 1) * 10  # sparse raw ids, to catch raw-id indexing
    genre_of = rng.integers(0, len(GENRES), n_movies)
    taste = rng.normal(0, 1, (n_users, len(GENRES)))
    rows = ["userId,movieId,rating,timestamp"]
    for user in range(n_users):
        for m in rng.choice(n_movies, size=min(per_user, n_movies), replace=False):
            raw = 3.0 + taste[user, genre_of[m]] + rng.normal(0, 0.3)
            rating = float(np.clip(np.round(raw * 2) / 2, 0.5, 5.0))
            rows.append(
                f"{user + 1},{movie_ids[m]},{rating},{1_000_000 + int(rng.integers(0, 10**6))}"
            )
    (folder / "ratings.csv").write_text("\n".join(rows) + "\n")
    movies = ["movieId,title,genres"]
    for i, movie in enumerate(movie_ids):
        genres = "|".join(sorted({GENRES[genre_of[i]], GENRES[(genre_of[i] + i) % len(GENRES)]}))
        movies.append(f'{movie},"Movie {movie}, The ({1950 + i % 70})",{genres}')
    (folder / "movies.csv").write_text("\n".join(movies) + "\n")
    tags = ["userId,movieId,tag,timestamp"]
    for i, movie in enumerate(movie_ids[::3]):
        tags.append(f"{1 + i % n_users},{movie},{GENRES[genre_of[i * 3]].lower()},1000000")
    (folder / "tags.csv").write_text("\n".join(tags) + "\n")
    # links.csv as GroupLens writes it: IMDb ids zero-padded to 7 digits, some ids missing.
    links = ["movieId,imdbId,tmdbId"]
    for i, movie in enumerate(movie_ids):
        imdb = "" if i % 7 == 6 else f"{int(movie) * 7:07d}"
        tmdb = "" if i % 5 == 4 else str(int(movie) * 3)
        links.append(f"{movie},{imdb},{tmdb}")
    (folder / "links.csv").write_text("\n".join(links) + "\n")
    return folder
