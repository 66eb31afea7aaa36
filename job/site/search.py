"""The title search's index: small script files, each holding the titles one query needs.

MiniSearch (``static/vendor/minisearch.min.js``) does the searching in the browser:
tokenizing, prefix and fuzzy matching, BM25 scoring. What it searches comes from here. A
title goes into one shard per distinct word start: the first two letters of each of its
words, after folding case and accents ("Amélie" -> "amelie" -> shard ``am``). A query loads
the shard of one of its words (the one whose shard is smallest), since with every word
required, any title that matches has that word, and so sits in that shard. One query thus
reads ``titles.js`` (the shard list, once per page) and one shard, never the catalogue.
Number words come last in that choice, and a title's year makes no shard (see
``title_shards``).

Shards are scripts (``movielensTitleShard("am", [[id, title, n_ratings], ...])``) rather than
JSON, because Chromium refuses fetch() of local files when the site is opened from a folder,
while a ``<script>`` tag loads from a folder and a bucket alike.

``static/search.js`` repeats ``fold``, ``words`` and ``shard_key`` in JavaScript; the browser
tests check both sides give every title the same shards.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Iterable, Mapping
from pathlib import Path

from job.site.data import Movie

KEY_LENGTH = 2  # letters of a word that name its shard
YEAR_AT_END = re.compile(r"\s*\(\d{4}[^()]*\)\s*$")  # "(1995)", "(2007-2013)"


def fold(term: str) -> str:
    """Case and accents away, as ``search.js`` does: "Amélie" -> "amelie", "ＡＢＣ" -> "abc".

    NFKD splits letters from their accents (and compatibility forms from their plain ones);
    the accents (non-spacing marks) are dropped; then lower case.
    """
    if term.isascii():
        return term.lower()
    decomposed = unicodedata.normalize("NFKD", term)
    return "".join(c for c in decomposed if unicodedata.category(c) != "Mn").lower()


class _Separators(dict[int, int | str]):
    """``str.translate`` table: spaces, punctuation and symbols (Unicode categories Z*, P*,
    S*) to a space, every other character to itself; each character looked up once."""

    def __missing__(self, code: int) -> int | str:
        char = chr(code)
        self[code] = " " if char in "\n\r" or unicodedata.category(char)[0] in "ZPS" else code
        return self[code]


_SEPARATORS = _Separators()


def words(title: str) -> list[str]:
    """The folded words of a title, split as ``search.js`` splits text for MiniSearch: on
    any space, punctuation or symbol character (Unicode categories Z*, P* and S*)."""
    return [w for w in (fold(part) for part in title.translate(_SEPARATORS).split(" ")) if w]


def shard_key(word: str) -> str:
    """The shard of a folded word: its first two characters (code points, not bytes)."""
    return word[:KEY_LENGTH]


def shard_file(key: str) -> str:
    """``titles-am.js``; keys beyond a-z and 0-9 are written as their UTF-8 bytes in hex
    (``titles-x c3a9.js`` without the space), so every file name is plain ASCII."""
    plain = key.isascii() and key.isalnum() and key == key.lower()
    return f"titles-{key}.js" if plain else f"titles-x{key.encode('utf-8').hex()}.js"


def title_shards(movies: Iterable[Movie]) -> dict[str, list[list[object]]]:
    """Shard key -> ``[movie_id, title, n_ratings]`` rows, most rated first.

    The year at the end of a title ("Heat (1995)") gives no shard: every "19.." year would
    put a third of the catalogue in shard ``19``. A query's number words are the last it
    picks a shard by (``search.js``), so "heat 1995" reads shard ``he``, whose titles
    MiniSearch then matches against the whole title, year included.
    """
    shards: dict[str, list[Movie]] = {}
    for movie in movies:
        for key in sorted({shard_key(w) for w in words(YEAR_AT_END.sub("", movie.title))}):
            shards.setdefault(key, []).append(movie)
    return {
        key: [
            [m.movie_id, m.title, m.n_ratings]
            for m in sorted(found, key=lambda m: (-m.n_ratings, m.movie_id))
        ]
        for key, found in sorted(shards.items())
    }


def write_title_index(folder: Path, movies: Mapping[int, Movie]) -> dict[str, int]:
    """Write ``titles.js`` (every shard's key and size) and one file per shard; returns the
    bytes of each file written."""
    written: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for key, rows in title_shards(movies.values()).items():
        text = f"movielensTitleShard({json.dumps(key)},{script_json(rows)});\n"
        name = shard_file(key)
        written[name] = _write(folder / name, text)
        sizes[key] = len(rows)
    listing = json.dumps(sizes, ensure_ascii=False, separators=(",", ":"))
    written["titles.js"] = _write(folder / "titles.js", f"movielensTitleShards({listing});\n")
    return written


def script_json(value: object) -> str:
    """Compact JSON for a script file; "<" escaped, so that no title can close a script
    element even if the text were ever inlined in a page."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("<", "\\u003c")


def _write(path: Path, text: str) -> int:
    data = text.encode("utf-8")
    path.write_bytes(data)
    return len(data)
