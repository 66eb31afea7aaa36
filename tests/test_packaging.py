"""The job as an installed package: `pip wheel .`, the wheel installed into a fresh virtual
environment, and the whole job run from an empty folder, with the site's templates read from
the installed package (site_templates/ travels in the wheel as `job.site_templates`).

The fresh environment gets the job's dependencies by a .pth line pointing at this test
environment's site-packages (already installed from the lock), so what is tested is the wheel
itself: its files, its entry point, and how it finds its templates. The images install the
same wheel from the lock in full (tests/test_container.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
import tomllib
import zipfile
from pathlib import Path

import duckdb
import pytest
from synth import write_movielens

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("pyproject.toml", "README.md", "job", "site_templates")


def _run(args: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    return subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`pip wheel .` of a copy of the sources (a build writes build/ and *.egg-info beside
    them), with the locked setuptools of this environment: no build isolation."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy(ROOT / name, src / name)
    dist = tmp_path_factory.mktemp("dist")
    built = _run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "--disable-pip-version-check",
            "--quiet",
            "--wheel-dir",
            str(dist),
            str(src),
        ],
        cwd=src,
    )
    assert built.returncode == 0, built.stderr
    (path,) = dist.glob("movielens_job-*.whl")
    return path


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the wheel installed; the dependencies come through a .pth line."""
    root = tmp_path_factory.mktemp("venv")
    made = _run([sys.executable, "-m", "venv", str(root)], cwd=root)
    assert made.returncode == 0, made.stderr
    (site,) = root.glob("lib/python3.*/site-packages")
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "job-dependencies.pth").write_text("\n".join(sorted(deps)) + "\n", encoding="utf-8")
    installed = _run(
        [
            str(root / "bin" / "python"),
            "-m",
            "pip",
            "install",
            "--no-deps",
            "--no-index",
            "--disable-pip-version-check",
            "--quiet",
            str(wheel),
        ],
        cwd=root,
    )
    assert installed.returncode == 0, installed.stderr
    return root


def installed_templates(venv: Path) -> Path:
    (site,) = venv.glob("lib/python3.*/site-packages")
    return site / "job" / "site_templates"


def test_the_wheel_holds_the_templates_static_files_and_dataset(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "site_templates").rglob("*"):
        if template.is_file() and "__pycache__" not in template.parts:
            relative = template.relative_to(ROOT / "site_templates").as_posix()
            assert f"job/site_templates/{relative}" in names
    for data in (ROOT / "job" / "data" / "datasets" / "ml-latest-small").iterdir():
        assert f"job/data/datasets/ml-latest-small/{data.name}" in names
    assert not any(name.startswith("site_templates/") for name in names)


def test_the_package_list_names_every_package() -> None:
    """pyproject.toml lists the packages by hand (site_templates/ is mapped into job/)."""
    listed = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"][
        "setuptools"
    ]["packages"]
    on_disk = {
        ".".join(init.parent.relative_to(ROOT).parts)
        for init in (ROOT / "job").rglob("__init__.py")
    }
    assert set(listed) == on_disk | {"job.site_templates"}


def test_both_entry_points_of_the_installed_job_answer(venv: Path, tmp_path: Path) -> None:
    for entry in (
        [str(venv / "bin" / "movielens-job")],
        [str(venv / "bin" / "python"), "-m", "job"],
    ):
        proc = _run([*entry, "shard-plan", "--shards", "2"], cwd=tmp_path)
        assert (proc.returncode, proc.stdout) == (0, "shards=[0,1]\n"), proc.stderr


def test_the_installed_job_makes_the_whole_site_from_an_empty_folder(
    venv: Path, tmp_path: Path
) -> None:
    """On a tiny synthetic folder (the shipped dataset's run from the installed wheel is
    tests/test_container.py's, in the CPU image)."""
    empty = tmp_path / "work"
    empty.mkdir()
    data = write_movielens(tmp_path / "data", n_users=40, n_movies=60, per_user=12, seed=5)
    entry = [str(venv / "bin" / "movielens-job")]
    flags = ["--data", str(data), "--out", "out", "--preset", "seed", "--epochs", "1"]
    proc = _run([*entry, "-q", "run", *flags], cwd=empty)
    assert proc.returncode == 0, proc.stderr[-3000:]

    site = empty / "out" / "site"
    with duckdb.connect(str(empty / "out" / "recommendations.duckdb"), read_only=True) as con:
        users = con.execute("SELECT count(*) FROM users").fetchone()[0]  # type: ignore[index]
        movies = con.execute("SELECT count(*) FROM movies").fetchone()[0]  # type: ignore[index]
    assert len(list((site / "users").glob("*.html"))) == users
    assert len(list((site / "movies").glob("*.html"))) == movies
    for page in ("index.html", "popular.html", "taste.html"):
        assert (site / page).read_text(encoding="utf-8").rstrip().endswith("</html>")
    static = installed_templates(venv) / "static"
    for asset in static.rglob("*"):
        if asset.is_file():
            assert (site / "static" / asset.relative_to(static)).read_bytes() == asset.read_bytes()


def _break(venv: Path, tmp_path: Path, edit: str) -> subprocess.CompletedProcess[str]:
    """Run the installed job with its template set damaged by ``edit``; restore it after."""
    templates = installed_templates(venv)
    backup = tmp_path / "templates-backup"
    shutil.copytree(templates, backup)
    try:
        if edit == "missing":
            (templates / "base.html").unlink()
        else:
            index = templates / "index.html"
            index.write_text(index.read_text(encoding="utf-8") + "\n{% if %}\n", encoding="utf-8")
        started = time.perf_counter()
        proc = _run([str(venv / "bin" / "movielens-job"), "run", "--out", "out"], cwd=tmp_path)
        print(f"{edit}: failed in {time.perf_counter() - started:.2f} s")  # for the report
        return proc
    finally:
        shutil.rmtree(templates)
        shutil.copytree(backup, templates)


@pytest.mark.parametrize(
    ("edit", "says"),
    [("missing", "base.html missing"), ("syntax", "index.html line")],
)
def test_a_broken_template_set_fails_before_training(
    venv: Path, tmp_path: Path, edit: str, says: str
) -> None:
    proc = _break(venv, tmp_path, edit)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and says in lines[0], proc.stderr
    assert not (tmp_path / "out").exists(), "nothing written: it stopped before training"
