"""Files on disk: atomic writes and JSON with one-line errors.

The bottom layer: every other module writes through ``atomic_path`` so that a file (or a
folder) appears complete under its final name or not at all, and reads JSON through
``read_json`` so that a missing or damaged file is one line naming it, never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from job.errors import JobError


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Works for files and folders; a failure removes the temporary and leaves ``path`` as it was.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # The temporary keeps the final extension: some writers insist on it (Keras on ".keras").
    fd, name = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=f".tmp{path.suffix}"
    )
    os.close(fd)
    tmp = Path(name)
    tmp.unlink()  # the caller creates it (a library may refuse to open an existing file)
    try:
        yield tmp
        if path.is_dir() and tmp.is_dir():
            _swap_folders(tmp, path)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def _swap_folders(new: Path, path: Path) -> None:
    """Put the finished folder ``new`` at ``path`` by two renames, then delete the old one:
    readers see the old folder or the new one, never neither, and deleting the old tree
    (thousands of files for a site) happens after the swap."""
    old = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old"))
    os.replace(path, old / path.name)
    os.replace(new, path)
    shutil.rmtree(old, ignore_errors=True)


def atomic_write_text(path: Path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path, remake: str | None = None) -> Any:
    """The JSON document in ``path``.

    Raises:
        JobError: the file is missing, unreadable or not JSON; ``remake`` (a command) is
            named as the fix.
    """
    fix = f"; {remake}" if remake else ""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise JobError(f"{path}: not found{fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot read ({exc.__class__.__name__}){fix}") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON (line {exc.lineno})"
        raise JobError(f"{path}: {what}, probably truncated{fix}") from None
