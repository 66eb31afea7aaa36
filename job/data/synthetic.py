"""The one MovieLens-shaped synthetic generator: the tests, ``bench`` and ``bench-job`` use it.

The real archives cannot be downloaded everywhere (and ml-32m is 900 MB), so the stand-in is
data with their shape and a signal to learn:

- Shape: every user has rated at least 20 movies (as in GroupLens' releases), activity per
  user is log-normal (a long tail of heavy users), movie popularity is Zipf-like (a popular
  head, a long tail of rarely rated films), ``SHAPES`` holds the releases' sizes.
- Signal: each user has a taste for each genre and a favourite genre. Half of a user's
  ratings go to movies of their favourite genre (so who-watched-what has co-watching
  structure, as an item-item ranker expects), and a rating is
  ``3.45 + 0.6 taste[user, genre] + quality[movie] + bias[user] + noise`` rounded to half
  stars (so a rating model has user x genre interactions to learn).
- Or (``signal="latent"``) a rating is ``3.5 + u[user] . v[movie] + noise``: latent factors,
  no user or movie bias, so the global mean is the best rating baseline and only a model
  that learns the user x movie interaction beats it (who watched what is drawn as above).
- Or (``signal="independent"``) the same ratings, with every movie drawn by popularity alone
  (no favourite genre): picking and liking are independent.
- Files: ``ratings.csv``, ``movies.csv`` (titles with years, some with a comma and quotes;
  1-3 of MovieLens' genres), ``tags.csv`` (genre words and a long tail of others) and
  ``links.csv``, as ``job.data.movielens.load_dataset`` reads a MovieLens folder. Movie ids are sparse
  (10, 20, ...), so code that indexes by raw ids fails.

Only numpy, pandas and pyarrow: it sits low in the layers so tests and benchmarks share it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.csv as pacsv

from job.core.errors import ConfigError
from job.data.shapes import SHAPES, SIGNALS

log = logging.getLogger(__name__)

DEFAULT_USERS, DEFAULT_MOVIES = 2_000, 5_000
RATINGS_PER_USER = 165  # ml-latest-small's and ml-32m's average, about
MIN_RATINGS = 20  # every user in GroupLens' releases has rated at least 20 movies
POPULARITY_EXPONENT = 1.0  # Zipf: the i-th most popular movie is drawn ~ 1 / (i + 10)
ACTIVITY_SIGMA = 1.2  # log-normal spread of ratings per user (a long tail of heavy users)
FAVOURITE_SHARE = 0.5  # of a user's ratings, those drawn from their favourite genre
TAGS_PER_RATING = 1 / 25  # ml-latest-small has 1 tag per 27 ratings, ml-25m 1 per 23
LATENT_DIM = 8
LATENT_SCALE = 0.8  # the interaction's standard deviation in stars; the noise's is 0.6

# MovieLens' genres (IMAX aside), with about their share of ml-32m's movies as primary genre.
GENRES = (
    "Drama",
    "Comedy",
    "Thriller",
    "Action",
    "Romance",
    "Horror",
    "Documentary",
    "Crime",
    "Adventure",
    "Sci-Fi",
    "Children",
    "Animation",
    "Mystery",
    "Fantasy",
    "War",
    "Western",
    "Musical",
    "Film-Noir",
)
GENRE_WEIGHTS = np.array([25, 16, 8, 8, 7, 6, 6, 5, 4, 3, 2, 2, 2, 2, 1, 1, 1, 0.5])
NO_GENRES = "(no genres listed)"
_ADJECTIVES = [
    "Silent",
    "Quiet",
    "Last",
    "Lost",
    "Golden",
    "Broken",
    "Hidden",
    "Wild",
    "Dark",
    "Bright",
    "Little",
    "Endless",
    "Crimson",
    "Frozen",
    "Secret",
    "Burning",
    "Distant",
    "Hollow",
    "Iron",
    "Velvet",
    "Electric",
    "Midnight",
    "Savage",
    "Gentle",
]
_NOUNS = [
    "River",
    "Garden",
    "Empire",
    "Road",
    "Mirror",
    "Harbour",
    "Winter",
    "Summer",
    "Machine",
    "Kingdom",
    "Island",
    "Letter",
    "Stranger",
    "Station",
    "Forest",
    "Promise",
    "Horizon",
    "Circus",
    "Orchard",
    "Signal",
    "Voyage",
    "Lantern",
    "Tide",
    "Canyon",
]
_TAG_WORDS = [
    "atmospheric",
    "twist-ending",
    "funny",
    "visually-appealing",
    "dark-comedy",
    "classic",
    "based-on-a-book",
    "thought-provoking",
    "surreal",
    "quirky",
    "great-soundtrack",
    "slow",
    "cult-film",
    "nonlinear",
    "dystopia",
    "time-travel",
    "heist",
    "revenge",
    "friendship",
    "coming-of-age",
]


@dataclass(frozen=True)
class Shape:
    """How many users, movies and ratings a synthetic dataset has."""

    name: str
    users: int
    movies: int
    ratings: int


def resolve_shape(
    shape: str | None, users: int | None, movies: int | None, ratings: int | None
) -> Shape:
    """A named shape with any of its sizes overridden; ratings scale with the users.

    ``--shape ml-32m --users 50000`` keeps ml-32m's ratings per user, so two user counts
    compare like for like.
    """
    if shape is not None and shape not in SHAPES:
        raise ConfigError(f"unknown --shape {shape!r}: choose one of {', '.join(SHAPES)}")
    base_users, base_movies, base_ratings = (
        SHAPES[shape] if shape else (DEFAULT_USERS, DEFAULT_MOVIES, 0)
    )
    n_users = base_users if users is None else users
    n_movies = base_movies if movies is None else movies
    if ratings is None:
        per_user = base_ratings / base_users if shape else RATINGS_PER_USER
        ratings = round(per_user * n_users)
    for flag, value in (("--users", n_users), ("--movies", n_movies), ("--ratings", ratings)):
        if value < 1:
            raise ConfigError(f"{flag} must be at least 1 (got {value})")
    ratings = min(ratings, n_users * n_movies)
    name = shape if shape and (n_users, n_movies) == SHAPES[shape][:2] else "custom-size"
    if shape and name == "custom-size":
        name = f"{shape}-like"
    return Shape(name, n_users, n_movies, ratings)


# ---------------------------------------------------------------------------------------
# The catalogue and the ratings, as encoded arrays


@dataclass(frozen=True)
class Catalogue:
    """Per-movie facts (encoded movie index i): genres, popularity, quality, year."""

    genre: np.ndarray  # (movies,) primary genre index
    extra_genres: np.ndarray  # (movies, 2) further genre indexes, -1 for none
    popularity: np.ndarray  # (movies,) probabilities, sum 1, popular ids spread out
    quality: np.ndarray  # (movies,) added to every rating of the movie
    year: np.ndarray  # (movies,) release year, 0 for unknown


def catalogue(n_movies: int, rng: np.random.Generator) -> Catalogue:
    weights = GENRE_WEIGHTS / GENRE_WEIGHTS.sum()
    genre = rng.choice(len(GENRES), size=n_movies, p=weights)
    extra = rng.choice(len(GENRES), size=(n_movies, 2), p=weights)
    n_extra = rng.choice(3, size=n_movies, p=[0.35, 0.4, 0.25])
    extra[n_extra < 1, 0] = -1
    extra[n_extra < 2, 1] = -1
    extra[extra == genre[:, None]] = -1
    popularity = 1.0 / (np.arange(n_movies) + 10.0) ** POPULARITY_EXPONENT
    popularity = rng.permutation(popularity / popularity.sum())
    quality = rng.normal(0.0, 0.4, n_movies).astype(np.float32)
    year = np.clip(np.round(2024 - rng.gamma(2.0, 11.0, n_movies)), 1902, 2023).astype(np.int32)
    year[rng.random(n_movies) < 0.005] = 0  # a few titles without a year, as in MovieLens
    return Catalogue(genre, extra, popularity, quality, year)


def activity(shape: Shape, rng: np.random.Generator, sigma: float = ACTIVITY_SIGMA) -> np.ndarray:
    """Ratings per user: at least ``MIN_RATINGS`` (or the average, if lower), the rest
    log-normal; no user above the number of movies. ``sigma`` 0 gives everyone the same."""
    n_users, n_movies = shape.users, shape.movies
    floor = min(MIN_RATINGS, shape.ratings // n_users, n_movies)
    weight = rng.lognormal(0.0, sigma, n_users)
    wanted = floor + weight / weight.sum() * max(shape.ratings - floor * n_users, 0)
    for _ in range(20):  # no user rates more than every movie: hand the excess to the others
        capped = np.minimum(wanted, n_movies)
        excess = wanted.sum() - capped.sum()
        if excess < 1:
            break
        share = np.where(capped < n_movies, weight, 0.0)
        wanted = capped + excess * share / share.sum()
    return np.minimum(np.round(wanted).astype(np.int64), n_movies)


@dataclass(frozen=True)
class Ratings:
    """Encoded ratings with distinct (user, movie) pairs, sorted by user then movie."""

    users: np.ndarray  # int32
    movies: np.ndarray  # int32
    ratings: np.ndarray  # float32, half stars 0.5..5
    timestamps: np.ndarray  # int64 seconds
    catalogue: Catalogue

    def __len__(self) -> int:
        return len(self.ratings)


def synthetic_ratings(
    shape: Shape, seed: int = 0, activity_sigma: float = ACTIVITY_SIGMA, signal: str = "genre"
) -> Ratings:
    """About ``shape.ratings`` distinct ratings with the module's shape and ``signal``.

    Pairs drawn twice are dropped and drawn again, uniformly, so a few may be missing where a
    user has rated nearly every movie.
    """
    check_signal(signal)
    rng = np.random.default_rng(seed)
    n_users, n_movies = shape.users, shape.movies
    movies_of = catalogue(n_movies, rng)
    counts = activity(shape, rng, activity_sigma)
    taste = rng.normal(0.0, 1.0, (n_users, len(GENRES))).astype(np.float32)
    favourite = taste.argmax(axis=1)

    users = np.repeat(np.arange(n_users, dtype=np.int64), counts)
    movies = rng.choice(n_movies, size=len(users), p=movies_of.popularity)
    share = 0.0 if signal == "independent" else FAVOURITE_SHARE
    from_favourite = rng.random(len(users)) < share
    wanted_genre = favourite[users]
    for g in range(len(GENRES)):
        pick = np.flatnonzero(from_favourite & (wanted_genre == g))
        of_genre = np.flatnonzero(movies_of.genre == g)
        if len(pick) and len(of_genre):
            p = movies_of.popularity[of_genre]
            movies[pick] = of_genre[rng.choice(len(of_genre), size=len(pick), p=p / p.sum())]
    del from_favourite, wanted_genre
    keys = _distinct(users * n_movies + movies)
    del users, movies
    for _ in range(8):  # replace pairs drawn twice by uniform draws, which rarely collide
        short = counts - np.bincount(keys // n_movies, minlength=n_users)
        if not short.any():
            break
        users = np.repeat(np.arange(n_users, dtype=np.int64), np.maximum(short, 0))
        keys = _distinct(
            np.concatenate([keys, users * n_movies + rng.integers(0, n_movies, len(users))])
        )
    users32 = (keys // n_movies).astype(np.int32)
    movies32 = (keys % n_movies).astype(np.int32)
    del keys
    if signal in ("latent", "independent"):
        raw = (
            3.5
            + _latent_interaction(users32, movies32, n_users, n_movies, seed)
            + rng.normal(0.0, 0.6, len(users32)).astype(np.float32)
        )
    else:
        user_bias = rng.normal(0.0, 0.35, n_users).astype(np.float32)
        raw = (
            3.45
            + 0.6 * taste[users32, movies_of.genre[movies32]]
            + movies_of.quality[movies32]
            + user_bias[users32]
            + rng.normal(0.0, 0.6, len(users32)).astype(np.float32)
        )
    ratings = np.clip(np.round(raw * 2) / 2, 0.5, 5.0).astype(np.float32)
    timestamps = rng.integers(820_000_000, 1_700_000_000, len(users32), dtype=np.int64)
    return Ratings(users32, movies32, ratings, timestamps, movies_of)


def check_signal(signal: str) -> None:
    if signal not in SIGNALS:
        raise ConfigError(f"unknown synthetic signal {signal!r}: use one of {', '.join(SIGNALS)}")


def _latent_interaction(
    users: np.ndarray, movies: np.ndarray, n_users: int, n_movies: int, seed: int
) -> np.ndarray:
    """u[user] . v[movie] with standard normal factors, scaled to LATENT_SCALE stars: zero
    mean for every user and movie (no bias), in blocks to bound memory at 32M ratings."""
    rng = np.random.default_rng([seed, 2])  # its own stream: the genre signal's is unchanged
    scale = LATENT_SCALE / np.sqrt(LATENT_DIM)
    u = rng.standard_normal((n_users, LATENT_DIM), dtype=np.float32)
    v = (rng.standard_normal((n_movies, LATENT_DIM), dtype=np.float32) * scale).astype(np.float32)
    out = np.empty(len(users), dtype=np.float32)
    for start in range(0, len(users), 4_000_000):
        part = slice(start, start + 4_000_000)
        out[part] = np.einsum("ij,ij->i", u[users[part]], v[movies[part]])
    return out


def _distinct(keys: np.ndarray) -> np.ndarray:
    """Sorted distinct values (``np.unique`` hashes, which is slower at these sizes)."""
    keys = np.sort(keys)
    keep = np.empty(len(keys), dtype=bool)
    keep[:1] = True
    np.not_equal(keys[1:], keys[:-1], out=keep[1:])
    return keys[keep]


# ---------------------------------------------------------------------------------------
# A MovieLens folder


def movie_ids(n_movies: int) -> np.ndarray:
    """Raw ids of the encoded movies: 10, 20, 30, ... (sparse, as real ids are)."""
    return np.arange(1, n_movies + 1, dtype=np.int64) * 10


def titles(years: np.ndarray) -> list[str]:
    """Readable, distinct-enough titles with the year in brackets; every 9th ends ", The"."""
    out = []
    for i, year in enumerate(years.tolist()):
        name = (
            f"{_ADJECTIVES[i % len(_ADJECTIVES)]} {_NOUNS[(i // len(_ADJECTIVES)) % len(_NOUNS)]}"
        )
        if i >= len(_ADJECTIVES) * len(_NOUNS):
            name += f" {i // (len(_ADJECTIVES) * len(_NOUNS)) + 1}"
        if i % 9 == 4:
            name += ", The"
        out.append(f"{name} ({year})" if year else name)
    return out


def movies_frame(movies_of: Catalogue) -> pd.DataFrame:
    """movieId, title, genres as movies.csv has them."""
    n = len(movies_of.genre)
    genres = []
    for i in range(n):
        names = {GENRES[movies_of.genre[i]]}
        names.update(GENRES[g] for g in movies_of.extra_genres[i] if g >= 0)
        genres.append("|".join(sorted(names)) if i % 250 != 7 else NO_GENRES)
    return pd.DataFrame(
        {"movieId": movie_ids(n), "title": titles(movies_of.year), "genres": genres}
    )


def tags_frame(data: Ratings, rng: np.random.Generator) -> pd.DataFrame:
    """userId, movieId, tag, timestamp: tags on rated movies, most naming the movie's genre."""
    n = max(1, round(len(data) * TAGS_PER_RATING)) if len(data) else 0
    rows = rng.integers(0, len(data), n) if len(data) else np.zeros(0, dtype=np.int64)
    movies = data.movies[rows]
    genre_words = np.array([g.lower() for g in GENRES], dtype=object)
    words = np.array(_TAG_WORDS, dtype=object)
    tail = np.array([f"tag {k}" for k in range(2_000)], dtype=object)
    kind = rng.random(n)
    tag = np.where(
        kind < 0.5,
        genre_words[data.catalogue.genre[movies]],
        np.where(
            kind < 0.85,
            words[rng.integers(0, len(words), n)],
            tail[np.minimum(rng.zipf(1.5, n), len(tail)) - 1],
        ),
    )
    return pd.DataFrame(
        {
            "userId": data.users[rows].astype(np.int64) + 1,
            "movieId": movie_ids(len(data.catalogue.genre))[movies],
            "tag": tag,
            "timestamp": data.timestamps[rows],
        }
    )


def write_ratings_csv(path: Path, data: Ratings) -> None:
    """ratings.csv through pyarrow's CSV writer (pandas' is far slower at millions of rows)."""
    table = pa.table(
        {
            "userId": data.users.astype(np.int64) + 1,
            "movieId": movie_ids(len(data.catalogue.genre))[data.movies],
            "rating": data.ratings.astype(np.float64),
            "timestamp": data.timestamps,
        }
    )
    with path.open("wb") as f:
        f.write(b"userId,movieId,rating,timestamp\n")
        pacsv.write_csv(table, f, pacsv.WriteOptions(include_header=False))


def write_links_csv(path: Path, ids: np.ndarray) -> None:
    """links.csv as GroupLens writes it: IMDb ids zero-padded to 7 digits; every 7th movie
    has no IMDb id and every 5th no TMDB id."""
    position = np.arange(len(ids))
    imdb = pd.Series([f"{int(i) * 7:07d}" for i in ids]).where(position % 7 != 6, "")
    tmdb = pd.Series((ids * 3).astype(str)).where(position % 5 != 4, "")
    pd.DataFrame({"movieId": ids, "imdbId": imdb, "tmdbId": tmdb}).to_csv(path, index=False)


@dataclass(frozen=True)
class WrittenDataset:
    folder: Path
    shape: Shape
    seed: int
    n_ratings: int
    n_tags: int
    seconds: float  # generating and writing; 0 when an earlier folder was reused

    def as_dict(self) -> dict[str, object]:
        raw = asdict(self)
        raw["folder"] = str(self.folder)
        return raw


MARKER = "synthetic.json"


def write_movielens_folder(
    folder: Path,
    shape: Shape,
    seed: int = 0,
    activity_sigma: float = ACTIVITY_SIGMA,
    signal: str = "genre",
) -> WrittenDataset:
    """ratings.csv, movies.csv, tags.csv and links.csv of a synthetic ``shape`` in ``folder``.

    A folder that already holds this shape and seed (its ``synthetic.json`` says so) is
    reused as it is: generating ml-25m's 25M ratings takes a minute or two.
    """
    import time

    marker = folder / MARKER
    check_signal(signal)
    key = {"shape": asdict(shape), "seed": seed, "activity_sigma": activity_sigma}
    if signal != "genre":  # folders written before the option keep their key
        key["signal"] = signal
    if marker.exists():
        saved = json.loads(marker.read_text())
        if saved.get("key") == key:
            log.info("reusing the synthetic dataset in %s", folder)
            return WrittenDataset(folder, shape, seed, saved["n_ratings"], saved["n_tags"], 0.0)
    started = time.perf_counter()
    folder.mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)
    data = synthetic_ratings(shape, seed, activity_sigma, signal)
    rng = np.random.default_rng([seed, 1])
    write_ratings_csv(folder / "ratings.csv", data)
    movies = movies_frame(data.catalogue)
    movies.to_csv(folder / "movies.csv", index=False)
    tags = tags_frame(data, rng)
    tags.to_csv(folder / "tags.csv", index=False)
    write_links_csv(folder / "links.csv", movies["movieId"].to_numpy())
    written = WrittenDataset(
        folder, shape, seed, len(data), len(tags), time.perf_counter() - started
    )
    marker.write_text(
        json.dumps({"key": key, "n_ratings": written.n_ratings, "n_tags": written.n_tags}) + "\n"
    )
    return written


def write_movielens(
    folder: Path, n_users: int = 40, n_movies: int = 60, per_user: int = 15, seed: int = 0
) -> Path:
    """A tiny folder for tests: every user rates ``per_user`` movies (no activity tail)."""
    shape = Shape("custom-size", n_users, n_movies, min(per_user, n_movies) * n_users)
    return write_movielens_folder(folder, shape, seed, activity_sigma=0.0).folder
