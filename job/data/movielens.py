"""Load MovieLens datasets: the shipped one, GroupLens downloads (``job.data.download``), or a
folder, in each of MovieLens' layouts, validated (``job.data.validate``) on the way in.

Every problem a user can cause (a missing file, a misspelled column, a stray value) becomes
a ``DataError`` with one line naming the file, the line or column, and the fix.
"""

from __future__ import annotations

import difflib
import io
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from job.core.errors import DataError
from job.data.download import KNOWN, dataset_checksum, fetch
from job.data.validate import (
    bad_row,
    check_movies_known,
    drop_duplicate_pairs,
    finite_numbers,
    refuse_duplicate_movies,
    whole_ids,
)

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).parent / "datasets"


@dataclass(frozen=True)
class RatingScale:
    """The allowed ratings: ``low`` to ``high`` in steps of ``step``."""

    low: float
    high: float
    step: float

    @property
    def values(self) -> np.ndarray:
        """Every allowed rating, ascending (the classes of the classifier)."""
        n = round((self.high - self.low) / self.step) + 1
        return np.round(self.low + self.step * np.arange(n), 6)


HALF_STARS = RatingScale(0.5, 5.0, 0.5)
WHOLE_STARS = RatingScale(1.0, 5.0, 1.0)


@dataclass(frozen=True)
class Dataset:
    """Ratings, movies and tags with MovieLens' raw ids, already validated.

    ``ratings``: user_id, movie_id (int64), rating (float32), timestamp (int64).
    ``movies``: movie_id (int64), title (str), genres (str, ``|``-separated).
    ``tags``: user_id, movie_id (int64), tag (str); empty when the dataset has none.
    ``links``: movie_id (int64), imdb_id, tmdb_id (nullable Int64: a movie may have neither);
    empty when the folder has no links.csv.
    """

    name: str
    ratings: pd.DataFrame
    movies: pd.DataFrame
    tags: pd.DataFrame
    scale: RatingScale
    sha256: str
    links: pd.DataFrame = field(default_factory=lambda: _empty_links())


# ---------------------------------------------------------------------------------------
# Entry point


def load_dataset(spec: str, cache_dir: Path) -> Dataset:
    """Load a dataset by name (``ml-1m``) or from a folder of MovieLens files.

    Raises:
        DataError: the dataset cannot be found, fetched or validated.
    """
    if spec == "ml-latest-small":
        folder = SHIPPED_DIR / spec
    elif spec in KNOWN:
        folder = fetch(KNOWN[spec], cache_dir)
    else:
        folder = Path(spec)
        if not folder.is_dir():
            raise DataError(
                f"{spec}: no such dataset folder; pass a folder with ratings.csv and movies.csv "
                f"or one of: {', '.join(KNOWN)}"
            )
    return load_folder(folder, name=spec if spec in KNOWN else folder.name)


def load_folder(folder: Path, name: str) -> Dataset:
    """Read whichever MovieLens layout ``folder`` holds."""
    if (folder / "ratings.csv").exists() or (folder / "movies.csv").exists():
        loader: Callable[[Path], tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]] = _read_csv_layout
        files = ["ratings.csv", "movies.csv", "tags.csv"]
    elif (folder / "ratings.dat").exists():
        loader, files = _read_dat_layout, ["ratings.dat", "movies.dat", "tags.dat"]
    elif (folder / "u.data").exists():
        loader, files = _read_100k_layout, ["u.data", "u.item"]
    else:
        raise DataError(
            f"{folder}: no MovieLens files found; expected ratings.csv and movies.csv "
            "(or ratings.dat / u.data)"
        )
    ratings, movies, tags = loader(folder)
    scale = _infer_scale(ratings, folder / files[0])
    check_movies_known(ratings, movies, folder / files[0], folder / files[1])
    ratings = drop_duplicate_pairs(ratings, folder / files[0])
    return Dataset(
        name=name,
        ratings=ratings.reset_index(drop=True),
        movies=movies.reset_index(drop=True),
        tags=tags.reset_index(drop=True),
        scale=scale,
        sha256=dataset_checksum([folder / f for f in files if (folder / f).exists()]),
        links=_read_links(folder / "links.csv")
        if (folder / "links.csv").exists()
        else _empty_links(),
    )


# ---------------------------------------------------------------------------------------
# CSV layout (ml-latest-small, ml-latest, ml-25m, ml-32m, user folders)

RATING_COLUMNS = ["userId", "movieId", "rating", "timestamp"]
MOVIE_COLUMNS = ["movieId", "title", "genres"]
TAG_COLUMNS = ["userId", "movieId", "tag", "timestamp"]
LINK_COLUMNS = ["movieId", "imdbId", "tmdbId"]


def _read_csv_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    ratings = _typed_ratings(folder / "ratings.csv")
    if ratings is None:
        raw_ratings = _read_csv(folder / "ratings.csv", RATING_COLUMNS, optional=["timestamp"])
        if "timestamp" not in raw_ratings:
            raw_ratings["timestamp"] = "0"
        ratings = pd.DataFrame(
            {
                "user_id": whole_ids(raw_ratings, "userId", folder / "ratings.csv"),
                "movie_id": whole_ids(raw_ratings, "movieId", folder / "ratings.csv"),
                "rating": finite_numbers(raw_ratings, "rating", folder / "ratings.csv").astype(
                    "float32"
                ),
                "timestamp": whole_ids(raw_ratings, "timestamp", folder / "ratings.csv"),
            }
        )
    raw_movies = _read_csv(folder / "movies.csv", MOVIE_COLUMNS, optional=["genres"])
    movies = pd.DataFrame(
        {
            "movie_id": whole_ids(raw_movies, "movieId", folder / "movies.csv"),
            "title": raw_movies["title"].fillna("").astype(str),
            "genres": raw_movies.get("genres", pd.Series("", index=raw_movies.index))
            .fillna("")
            .astype(str),
        }
    )
    refuse_duplicate_movies(movies, folder / "movies.csv")
    tags = _empty_tags()
    if (folder / "tags.csv").exists():
        raw_tags = _read_csv(
            folder / "tags.csv", TAG_COLUMNS, optional=["timestamp"], may_be_empty=True
        )
        if len(raw_tags):
            tags = pd.DataFrame(
                {
                    "user_id": whole_ids(raw_tags, "userId", folder / "tags.csv"),
                    "movie_id": whole_ids(raw_tags, "movieId", folder / "tags.csv"),
                    "tag": raw_tags["tag"].fillna("").astype(str),
                }
            )
    return ratings, movies, tags


def _read_links(path: Path) -> pd.DataFrame:
    """links.csv: each movie's IMDb and TMDB ids. Either may be empty (no page there); a
    movie listed twice keeps its first row."""
    raw = _read_csv(path, LINK_COLUMNS, optional=["imdbId", "tmdbId"], may_be_empty=True)
    links = pd.DataFrame({"movie_id": whole_ids(raw, "movieId", path)})
    for column, name in (("imdbId", "imdb_id"), ("tmdbId", "tmdb_id")):
        if column not in raw:
            links[name] = pd.array([pd.NA] * len(raw), dtype="Int64")
            continue
        text = raw[column].str.strip()
        parsed = pd.to_numeric(text.mask(text == ""), errors="coerce")
        bad = (text != "").to_numpy() & (
            parsed.isna() | (parsed % 1 != 0) | (parsed < 0)
        ).to_numpy()
        if bad.any():
            raise bad_row(path, raw, bad, column, "ids must be whole numbers or left empty")
        links[name] = parsed.astype("Int64")
    return links.drop_duplicates("movie_id").reset_index(drop=True)


def _typed_ratings(path: Path) -> pd.DataFrame | None:
    """The fast path for a well-formed ratings.csv: pyarrow's parser straight into integers
    and floats, far faster than reading strings and checking each column, and no Python
    string per cell in memory (docs/benchmarks.md). None for anything
    unusual (another header, a BOM, an empty or non-numeric cell, a non-finite rating): the
    string path then reads the file and names the offending line."""
    try:
        with open(path, "rb") as f:
            header = f.readline().rstrip(b"\r\n")
        if header != b"userId,movieId,rating,timestamp":
            return None
        import pyarrow as pa
        import pyarrow.csv as pacsv

        # pyarrow's own reader, strict: pandas' pyarrow engine would truncate "10.5" to 10.
        types = {"userId": pa.int64(), "movieId": pa.int64(), "timestamp": pa.int64()}
        frame = pacsv.read_csv(
            path,
            convert_options=pacsv.ConvertOptions(
                column_types={**types, "rating": pa.float64()}, strings_can_be_null=False
            ),
        ).to_pandas()
    except Exception:  # any parse problem: the string path explains it
        return None
    if frame.empty or frame.isna().to_numpy().any() or not np.isfinite(frame["rating"]).all():
        return None
    return pd.DataFrame(
        {
            "user_id": frame["userId"].to_numpy(),
            "movie_id": frame["movieId"].to_numpy(),
            "rating": frame["rating"].to_numpy(dtype="float32"),
            "timestamp": frame["timestamp"].to_numpy(),
        }
    )


def _read_csv(
    path: Path, expected: list[str], optional: list[str], may_be_empty: bool = False
) -> pd.DataFrame:
    """Read a CSV as strings after checking its header; BOM and CRLF are accepted."""
    if not path.exists():
        raise DataError(f"{path}: file not found; a MovieLens folder needs {path.name}")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: file is empty; expected a header line {','.join(expected)}")
    with open(path, "rb") as f:
        head = f.read(4096)
    if head.startswith(b"\xef\xbb\xbf"):
        # Spreadsheet exports add a byte-order mark; it carries no data, so accept it.
        log.warning("%s: starts with a UTF-8 byte-order mark; ignoring it", path)
    # CRLF line endings (GroupLens' own files have them) are read as plain newlines.
    header = head.decode("utf-8-sig", errors="replace").splitlines()[0] if head.strip() else ""
    columns = [c.strip() for c in header.split(",")]
    required = [c for c in expected if c not in optional]
    if len(columns) == 1 and len(required) > 1:
        delimiter = next((d for d in (";", "\t", "|", "::") if d in header), None)
        hint = f"it looks {delimiter!r}-separated; " if delimiter else ""
        raise DataError(
            f"{path}: header {header!r} has one column; {hint}save it comma-separated "
            f"with columns {','.join(expected)}"
        )
    for column in required:
        if column not in columns:
            close = difflib.get_close_matches(column, columns, n=1, cutoff=0.6)
            hint = f"; rename column {close[0]!r} to {column!r}" if close else ""
            raise DataError(f"{path}: missing column {column!r} (found {', '.join(columns)}){hint}")
    try:
        frame = pd.read_csv(
            path,
            dtype=str,
            keep_default_na=False,
            encoding="utf-8-sig",
            usecols=[c for c in expected if c in columns],
        )
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason}); save it as UTF-8") from None
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({str(exc).strip()}); check quoting") from None
    if frame.empty and not may_be_empty:
        raise DataError(f"{path}: has a header but no rows; add data rows below the header")
    return frame


def _empty_links() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "movie_id": pd.Series(dtype="int64"),
            "imdb_id": pd.Series(dtype="Int64"),
            "tmdb_id": pd.Series(dtype="Int64"),
        }
    )


def _empty_tags() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": pd.Series(dtype="int64"),
            "movie_id": pd.Series(dtype="int64"),
            "tag": pd.Series(dtype=str),
        }
    )


# ---------------------------------------------------------------------------------------
# ml-1m / ml-10m (``::``-separated .dat) and ml-100k (tab-separated u.data, Latin-1 u.item)


def _read_dat_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    def read(name: str, columns: list[str]) -> pd.DataFrame:
        path = folder / name
        if not path.exists():
            raise DataError(f"{path}: file not found; a MovieLens .dat folder needs {name}")
        text = path.read_bytes().decode("latin-1")
        rows = [line.split("::") for line in text.splitlines() if line]
        if not rows:
            raise DataError(f"{path}: file is empty")
        bad = next((i for i, r in enumerate(rows) if len(r) != len(columns)), None)
        if bad is not None:
            raise DataError(
                f"{path}, line {bad + 1}: expected {len(columns)} '::'-separated fields "
                f"({', '.join(columns)}), got {len(rows[bad])}"
            )
        frame = pd.DataFrame(rows, columns=columns)
        frame.attrs["first_data_line"] = 1  # no header line
        return frame

    raw = read("ratings.dat", ["userId", "movieId", "rating", "timestamp"])
    path = folder / "ratings.dat"
    ratings = pd.DataFrame(
        {
            "user_id": whole_ids(raw, "userId", path),
            "movie_id": whole_ids(raw, "movieId", path),
            "rating": finite_numbers(raw, "rating", path).astype("float32"),
            "timestamp": whole_ids(raw, "timestamp", path),
        }
    )
    raw_movies = read("movies.dat", ["movieId", "title", "genres"])
    movies = pd.DataFrame(
        {
            "movie_id": whole_ids(raw_movies, "movieId", folder / "movies.dat"),
            "title": raw_movies["title"],
            "genres": raw_movies["genres"],
        }
    )
    tags = _empty_tags()
    if (folder / "tags.dat").exists():
        raw_tags = read("tags.dat", ["userId", "movieId", "tag", "timestamp"])
        tags = pd.DataFrame(
            {
                "user_id": whole_ids(raw_tags, "userId", folder / "tags.dat"),
                "movie_id": whole_ids(raw_tags, "movieId", folder / "tags.dat"),
                "tag": raw_tags["tag"],
            }
        )
    return ratings, movies, tags


ML100K_GENRES = [
    "unknown", "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery",
    "Romance", "Sci-Fi", "Thriller", "War", "Western",
]  # fmt: skip


def _read_100k_layout(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    path = folder / "u.data"
    raw = pd.read_csv(
        path, sep="\t", header=None, dtype=str, names=RATING_COLUMNS, keep_default_na=False
    )
    raw.attrs["first_data_line"] = 1
    ratings = pd.DataFrame(
        {
            "user_id": whole_ids(raw, "userId", path),
            "movie_id": whole_ids(raw, "movieId", path),
            "rating": finite_numbers(raw, "rating", path).astype("float32"),
            "timestamp": whole_ids(raw, "timestamp", path),
        }
    )
    item_path = folder / "u.item"
    if not item_path.exists():
        raise DataError(f"{item_path}: file not found; ml-100k needs u.item beside u.data")
    item_columns = ["movieId", "title", "release", "video", "url", *ML100K_GENRES]
    items = pd.read_csv(
        io.StringIO(item_path.read_bytes().decode("latin-1")),
        sep="|",
        header=None,
        names=item_columns,
        dtype=str,
        keep_default_na=False,
    )
    items.attrs["first_data_line"] = 1
    flags = items[ML100K_GENRES].to_numpy() == "1"
    genres = ["|".join(g for g, on in zip(ML100K_GENRES, row, strict=True) if on) for row in flags]
    movies = pd.DataFrame(
        {
            "movie_id": whole_ids(items, "movieId", item_path),
            "title": items["title"],
            "genres": genres,
        }
    )
    return ratings, movies, _empty_tags()


# ---------------------------------------------------------------------------------------
# The rating scale


def _infer_scale(ratings: pd.DataFrame, path: Path) -> RatingScale:
    """Half stars (0.5–5) unless every rating is a whole star 1–5 (ml-100k, ml-1m)."""
    values = ratings["rating"].to_numpy()
    scale = WHOLE_STARS if np.all(values % 1 == 0) and values.min() >= 1 else HALF_STARS
    outside = (values < scale.low) | (values > scale.high) | ((values / scale.step) % 1 != 0)
    if outside.any():
        line = int(np.flatnonzero(outside)[0]) + 2
        raise DataError(
            f"{path}, line {line}: rating {values[line - 2]:g} is outside the scale "
            f"{scale.low:g}–{scale.high:g} in steps of {scale.step:g}; fix or remove the row"
        )
    return scale


# ---------------------------------------------------------------------------------------
# Titles as people write them

# The articles GroupLens moves to the end of a title ("Matrix, The (1999)") or of an
# alternative title in parentheses ("(Cité des enfants perdus, La)"): English, French,
# Italian, Spanish, Portuguese, German, Dutch and Scandinavian ones, as found in the
# MovieLens catalogues. Case-sensitive: GroupLens capitalises a moved article, so
# "Good, the Bad and the Ugly, The" moves only its last "The".
MOVED_ARTICLES = (
    "The", "A", "An",
    "Le", "La", "Les", "L'", "Un", "Une",
    "Il", "Lo", "I", "Gli", "Una", "Uno",
    "El", "Los", "Las",
    "O", "Os", "As",
    "Der", "Die", "Das", "Ein", "Eine",
    "De", "Het", "Den", "Det", "En", "Ett",
    "Da",
)  # fmt: skip
# A title, or an alternative title after "(" or "(a.k.a. ", whose last words are
# ", ARTICLE", followed by the end, " (" (the year or another alternative title) or ")".
_MOVED_ARTICLE = re.compile(
    r"(^|\((?:a\.k\.a\. )?)([^()]+?), ("
    + "|".join(re.escape(a) for a in sorted(MOVED_ARTICLES, key=len, reverse=True))
    + r")(?=\)|\s\(|\s*$)"
)


def natural_title(title: str) -> str:
    """A GroupLens title with its moved articles put back in front, for people to read:
    "Matrix, The (1999)" -> "The Matrix (1999)", "Boot, Das (Boat, The) (1981)" ->
    "Das Boot (The Boat) (1981)", "École de la chair, L'" -> "L'École de la chair".

    The data (DuckDB, Parquet) keeps GroupLens' titles; only pages show this form. The words
    are the same, only their order changes, so a search for either form finds the movie.
    """

    def front(match: re.Match[str]) -> str:
        opening, rest, article = match.groups()
        return f"{opening}{article}{'' if article.endswith(chr(39)) else ' '}{rest}"

    return _MOVED_ARTICLE.sub(front, title)
