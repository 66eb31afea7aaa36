"""Loading and validation: every user mistake gets one clear line, a non-zero exit, no output."""

from __future__ import annotations

from pathlib import Path

import pytest
from synth import write_movielens

from job.cli import main
from job.core.errors import DataError
from job.data.movielens import (
    HALF_STARS,
    WHOLE_STARS,
    load_dataset,
    load_folder,
    natural_title,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_movielens(tmp_path / "data", n_users=8, n_movies=12, per_user=5)


def replace_line(path: Path, line: int, text: str) -> None:
    """Replace 1-based ``line`` of ``path``."""
    lines = path.read_text().splitlines()
    lines[line - 1] = text
    path.write_text("\n".join(lines) + "\n")


def run_train_expecting_error(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> str:
    """Run the CLI on bad data; assert exit 1, one line on stderr, nothing written."""
    out = tmp_path / "out"
    code = main(["-q", "train", "--data", str(data), "--out", str(out), "--epochs", "1"])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert err.startswith("error: ")
    assert len(err.splitlines()) == 1, err
    assert "Traceback" not in err
    assert not out.exists(), "a failed run must not leave output behind"
    return err


# --- each validation case: the message names the file, the line or column, and the fix ---


def test_missing_file(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "movies.csv").unlink()
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "movies.csv: file not found" in err


def test_missing_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    err = run_train_expecting_error(tmp_path / "nope", tmp_path, capsys)
    assert "no such dataset folder" in err and "ml-1m" in err


def test_misspelled_column(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_line(folder / "ratings.csv", 1, "userId,movieid,rating,timestamp")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv: missing column 'movieId'" in err
    assert "rename column 'movieid' to 'movieId'" in err


def test_missing_column(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = (folder / "ratings.csv").read_text().splitlines()
    (folder / "ratings.csv").write_text(
        "\n".join(",".join(r.split(",")[:2] + r.split(",")[3:]) for r in text)
    )
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv: missing column 'rating'" in err


def test_non_numeric_id(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replace_line(folder / "ratings.csv", 4, "abc,10,4.0,1000")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv, line 4: column 'userId' has 'abc'; ids must be whole numbers" in err


def test_rating_outside_scale(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_line(folder / "ratings.csv", 3, "1,10,7.5,1000")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv, line 3: rating 7.5 is outside the scale 0.5–5" in err


def test_rating_off_step(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    replace_line(folder / "ratings.csv", 3, "1,10,3.7,1000")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "line 3: rating 3.7 is outside the scale" in err and "steps of 0.5" in err


@pytest.mark.parametrize("value", ["", "NaN", "nan"])
def test_nan_rating(
    value: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_line(folder / "ratings.csv", 5, f"2,10,{value},1000")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv, line 5: column 'rating'" in err


def test_empty_file(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "ratings.csv").write_text("")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv: file is empty" in err


def test_header_only(folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv: has a header but no rows" in err


@pytest.mark.parametrize("delimiter", [";", "\t"])
def test_wrong_delimiter(
    delimiter: str, folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = folder / "ratings.csv"
    path.write_text(path.read_text().replace(",", delimiter))
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "ratings.csv: header" in err and f"looks {delimiter!r}-separated" in err
    assert "save it comma-separated" in err


def test_movie_missing_from_movies_csv(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    replace_line(folder / "ratings.csv", 2, "1,99999,4.0,1000")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert (
        "ratings.csv, line 2: movieId 99999 is not in movies.csv" in err
        and "add it to movies.csv" in err
    )


def test_duplicate_movie_rows_refused(
    folder: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with open(folder / "movies.csv", "a") as f:
        f.write("10,Again (2000),Drama\n")
    err = run_train_expecting_error(folder, tmp_path, capsys)
    assert "movies.csv, line 14: movieId 10 appears twice" in err


# --- accepted quirks and documented rules ---


def test_bom_and_crlf_are_read_like_clean_files(folder: Path, tmp_path: Path) -> None:
    clean = load_folder(folder, "x")
    for name in ("ratings.csv", "movies.csv"):
        path = folder / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\n", b"\r\n"))
    quirky = load_folder(folder, "x")
    assert quirky.ratings.equals(clean.ratings)
    assert quirky.movies.equals(clean.movies)


def test_unicode_titles(folder: Path) -> None:
    with open(folder / "movies.csv", "a", encoding="utf-8") as f:
        f.write('777,"Amélie (Le fabuleux destin d\'Amélie Poulain) (2001)",Comedy|Romance\n')
        f.write("778,千と千尋の神隠し (2001),Animation\n")
    titles = load_folder(folder, "x").movies.set_index("movie_id")["title"]
    assert titles[778] == "千と千尋の神隠し (2001)"
    assert titles[777].startswith("Amélie")


def test_shipped_dataset_loads_with_the_articles_counts() -> None:
    dataset = load_dataset("ml-latest-small", Path("/nonexistent-cache"))
    assert dataset.ratings["user_id"].nunique() == 610
    assert dataset.ratings["movie_id"].nunique() == 9724
    assert len(dataset.ratings) == 100_836
    assert len(dataset.movies) == 9742
    assert dataset.scale == HALF_STARS
    assert len(dataset.tags) == 3683


def test_whole_star_scale_is_inferred(folder: Path) -> None:
    path = folder / "ratings.csv"
    lines = path.read_text().splitlines()
    fixed = [lines[0]] + [
        ",".join([*r.split(",")[:2], str(max(1, round(float(r.split(",")[2])))), r.split(",")[3]])
        for r in lines[1:]
    ]
    path.write_text("\n".join(fixed) + "\n")
    assert load_folder(folder, "x").scale == WHOLE_STARS
    assert WHOLE_STARS.values.tolist() == [1, 2, 3, 4, 5]
    assert len(HALF_STARS.values) == 10


def test_dat_layout(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text(
        "1::10::5::978300760\n1::20::3::978302109\n2::10::4::978301968\n"
    )
    (tmp_path / "movies.dat").write_bytes(
        "10::Toy Story (1995)::Animation|Children's\n20::Café (1999)::Drama\n".encode("latin-1")
    )
    dataset = load_folder(tmp_path, "ml-1m-like")
    assert len(dataset.ratings) == 3
    assert dataset.movies.set_index("movie_id").loc[20, "title"] == "Café (1999)"
    assert dataset.scale == WHOLE_STARS


def test_dat_layout_wrong_field_count(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::10::5::978300760\n1::20::3\n")
    (tmp_path / "movies.dat").write_text("10::A (1995)::Drama\n20::B (1999)::Drama\n")
    with pytest.raises(DataError, match=r"ratings.dat, line 2: expected 4 '::'-separated fields"):
        load_folder(tmp_path, "x")


def test_100k_layout(tmp_path: Path) -> None:
    (tmp_path / "u.data").write_text("1\t10\t5\t881250949\n2\t20\t3\t891717742\n")
    genre_flags = "|".join(["0"] * 19)
    (tmp_path / "u.item").write_bytes(
        (
            f"10|Toy Story (1995)|01-Jan-1995||http://x|{genre_flags}\n"
            f"20|Señor (1996)|01-Jan-1996||http://x|{genre_flags}\n"
        ).encode("latin-1")
    )
    dataset = load_folder(tmp_path, "ml-100k")
    assert dataset.movies.set_index("movie_id").loc[20, "title"] == "Señor (1996)"
    assert len(dataset.ratings) == 2


@pytest.mark.parametrize(
    ("grouplens", "natural"),
    [
        ("Matrix, The (1999)", "The Matrix (1999)"),
        ("Walk in the Clouds, A (1995)", "A Walk in the Clouds (1995)"),
        ("Awfully Big Adventure, An (1995)", "An Awfully Big Adventure (1995)"),
        ("Misérables, Les (1995)", "Les Misérables (1995)"),
        ("Boot, Das (Boat, The) (1981)", "Das Boot (The Boat) (1981)"),
        ("Mariachi, El (1992)", "El Mariachi (1992)"),
        ("Bear, The (Ours, L') (1988)", "The Bear (L'Ours) (1988)"),
        ("Postman, The (Postino, Il) (1994)", "The Postman (Il Postino) (1994)"),
        (
            "Wings of Desire (Himmel über Berlin, Der) (1987)",
            "Wings of Desire (Der Himmel über Berlin) (1987)",
        ),
        ("Tin Drum, The (Blechtrommel, Die) (1979)", "The Tin Drum (Die Blechtrommel) (1979)"),
        ("Colonel Chabert, Le (1994)", "Le Colonel Chabert (1994)"),
        ("Bamba, La (1987)", "La Bamba (1987)"),
        (
            "Good, the Bad and the Ugly, The (Buono, il brutto, il cattivo, Il) (1966)",
            "The Good, the Bad and the Ugly (Il Buono, il brutto, il cattivo) (1966)",
        ),
        (
            "City of the Living Dead (a.k.a. Gates of Hell, The) (1980)",
            "City of the Living Dead (a.k.a. The Gates of Hell) (1980)",
        ),
        (
            "Lord of the Rings: The Two Towers, The (2002)",
            "The Lord of the Rings: The Two Towers (2002)",
        ),
        # Commas that move no article stay where they are.
        ("I, Robot (2004)", "I, Robot (2004)"),
        ("Paris, Texas (1984)", "Paris, Texas (1984)"),
        ("Me, Myself & I (2000)", "Me, Myself & I (2000)"),
        ("Truly, Madly, Deeply (1991)", "Truly, Madly, Deeply (1991)"),
        ("Heat (1995)", "Heat (1995)"),
        ("", ""),
    ],
)
def test_natural_title_puts_moved_articles_back(grouplens: str, natural: str) -> None:
    assert natural_title(grouplens) == natural
