"""Helpers of the hardening tests (tests/test_hardening_*.py): run folders damaged on
purpose, snapshots that show nothing was written, and the table of what a user sees.

Every case records one row: case, stage, the exact line the user sees (run folders shown as
OUT), exit code. ``HARDENING_TABLE=FILE pytest tests/test_hardening_*.py`` writes the rows
as a Markdown table to FILE when the session ends.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import subprocess
import sys
from pathlib import Path

from job.core.files import HOST, TEMPORARY

ROOT = Path(__file__).resolve().parents[1]
ROWS: list[tuple[str, str, str, str]] = []


def record(case: str, stage: str, seen: str, code: int | str, *paths: Path) -> None:
    """One row of the table; ``paths`` (temporary folders) are shown as OUT, TARGET, ..."""
    for path, name in zip(paths, ("OUT", "TARGET", "DATA"), strict=False):
        seen = seen.replace(str(path), name)
    ROWS.append((case, stage, seen.replace("|", "\\|"), str(code)))


def table() -> str:
    lines = ["| case | stage | what the user sees | exit |", "| --- | --- | --- | --- |"]
    lines += [f"| {case} | {stage} | `{seen}` | {code} |" for case, stage, seen, code in ROWS]
    return "\n".join(lines) + "\n"


@atexit.register
def _write_table() -> None:
    target = os.environ.get("HARDENING_TABLE")
    if target and ROWS:
        Path(target).write_text(table(), encoding="utf-8")


# ---------------------------------------------------------------------------------------
# Looking at a run folder


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (hidden ones too) -> its SHA-256: equal snapshots mean
    nothing was written, renamed or removed."""
    if not folder.exists():
        return {}
    if folder.is_file():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    } | {str(p.relative_to(folder)) + "/": "" for p in folder.rglob("*") if p.is_dir()}


def temporaries(folder: Path) -> list[str]:
    """Temporaries of atomic writes left anywhere under ``folder``."""
    return sorted(
        str(p.relative_to(folder))
        for p in folder.rglob(".*")
        if TEMPORARY.match(p.name) or ".tmp" in p.name or p.name.endswith(".old")
    )


def one_error_line(stderr: str) -> str:
    """The job's one line on stderr (TensorFlow's own start-up lines aside); fails the test
    on a traceback or on more or fewer than one ``error:`` line."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, stderr
    return lines[0]


def subprocess_env() -> dict[str, str]:
    """The environment of a ``python -m job`` child: this checkout's code, quiet TensorFlow."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH", "")])])
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    env["PYTHONUNBUFFERED"] = "1"
    return env


PYTHON = sys.executable
CLI = [PYTHON, "-m", "job"]


# ---------------------------------------------------------------------------------------
# Damage


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])


def empty(path: Path) -> None:
    path.write_bytes(b"")


def garbage(path: Path) -> None:
    """Same size, random bytes."""
    path.write_bytes(os.urandom(max(path.stat().st_size, 64)))


def scramble_middle(path: Path) -> None:
    """Random bytes over the middle third, size and both ends kept."""
    data = bytearray(path.read_bytes())
    third = len(data) // 3
    data[third : 2 * third] = os.urandom(third)
    path.write_bytes(bytes(data))


def scramble_parquet_pages(path: Path) -> None:
    """Random bytes over a Parquet file's data pages, its footer (and so its metadata)
    kept: damage that only reading the rows shows."""
    data = bytearray(path.read_bytes())
    footer = int.from_bytes(data[-8:-4], "little") + 8
    data[4 : len(data) - footer] = os.urandom(len(data) - footer - 4)
    path.write_bytes(bytes(data))


def dead_temporary(final: Path, suffix: str = "") -> Path:
    """The name a writer of ``final`` on this host, since killed, left its temporary under."""
    pid = _dead_pid()
    return final.with_name(f".{final.name}.{HOST}-{pid}-abcdefgh.tmp{suffix}")


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid
