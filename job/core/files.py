"""Files on disk: atomic writes and JSON with one-line errors.

The bottom layer: every other module writes through ``atomic_path`` so that a file (or a
folder) appears complete under its final name or not at all, and reads JSON through
``read_json`` so that a missing or damaged file is one line naming it, never a traceback.

A temporary is named ``.NAME.<host>-<pid>-<random>.tmp<ext>`` beside its final name. A
process killed mid-write (SIGKILL, a lost machine) leaves it behind; the next write of the
same name removes such leftovers of processes that no longer run on this host, and never
touches one a live process is writing (shards scoring at once into one folder).

A full disk, a read-only mount or a folder without write permission is one error, raised
here for every writer: ``JobError`` naming the folder, with the previous file left in place.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import re
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from job.core.errors import JobError, WriteError
from job.core.signals import SignalsDeferred

# ---------------------------------------------------------------------------------------
# Temporaries and their owners


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode("utf-8", "replace")).hexdigest()[:8]


HOST = _host_tag()
# .NAME.<host>-<pid>-<random>.tmp<ext>[.wal ...]  or  .NAME.<host>-<pid>-<random>.old
TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[0-9a-f]{8})-(?P<pid>\d+)-[^.]+\.(tmp|old)")
# Left by versions of the job before owners were recorded: .NAME.<random>.tmp<ext>
_LEGACY_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.[a-z0-9_]{8}\.(tmp|old)")


def _owner_tag() -> str:
    return f"{HOST}-{os.getpid()}-"


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process
    return True


def is_dead_temporary(entry: Path, name: str | None = None) -> bool:
    """``entry`` is a temporary (of final name ``name``, if given) whose writer is gone.

    Temporaries of other hosts (a shared file system) are left alone: their writers may
    still run. Temporaries of older versions of the job (no owner in the name) are dead.
    """
    match = TEMPORARY.match(entry.name)
    if match:
        if name is not None and match.group("name") != name:
            return False
        return match.group("host") == HOST and not _alive(int(match.group("pid")))
    legacy = _LEGACY_TEMPORARY.match(entry.name)
    return legacy is not None and name in (None, legacy.group("name"))


def remove_dead_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries in ``folder`` (of ``name``, if given) left by killed writers."""
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return removed
    for entry in entries:
        if not entry.name.startswith(".") or not is_dead_temporary(entry, name):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
        except FileNotFoundError:
            continue  # another process cleaned it first
        removed.append(entry)
    return removed


# ---------------------------------------------------------------------------------------
# Full disks, read-only mounts, folders without write permission

_DISK_ERRORS = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
}
# Libraries that wrap the OS error in their own exception keep its text (DuckDB's
# IOException, HDF5's errors inside Keras' save): the message is all there is to go by.
_DISK_MESSAGES = {
    "No space left on device": errno.ENOSPC,
    "Disk quota exceeded": errno.EDQUOT,
    "Read-only file system": errno.EROFS,
    "Permission denied": errno.EACCES,
}


def disk_errno(exc: BaseException) -> int | None:
    """The errno of a full disk, read-only mount or denied write behind ``exc``, if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in _DISK_ERRORS:
            return current.errno
        text = str(current)
        for message, number in _DISK_MESSAGES.items():
            if message in text:
                return number
        current = current.__cause__ or current.__context__
    return None


def disk_error(exc: BaseException, folder: Path) -> WriteError | None:
    """``exc`` as one line naming ``folder``, when it is a full disk or a refused write."""
    number = disk_errno(exc)
    if number is None:
        return None
    what = _DISK_ERRORS[number]
    strerror = exc.strerror if isinstance(exc, OSError) and exc.strerror else os.strerror(number)
    filename = exc.filename if isinstance(exc, OSError) else None
    if number in (errno.ENOSPC, errno.EDQUOT):
        fix = "free some space or choose another --out, then run the same command again"
    elif number == errno.EROFS:
        fix = "mount it read-write or choose another --out"
    else:
        fix = "make it writable or choose another --out"
    return WriteError(
        f"{folder}: cannot write ({what}); {fix}; the previous outputs are unchanged",
        number,
        strerror,
        filename if isinstance(filename, str) else None,
    )


def full_or_read_only(exc: BaseException, folder: Path) -> WriteError | None:
    """``exc`` as one line when it is an OSError of a full disk or a read-only file system
    (errors that only a write meets), naming the folder of the file it names, else ``folder``."""
    if not isinstance(exc, OSError) or exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None
    where = Path(exc.filename).parent if isinstance(exc.filename, str) and exc.filename else folder
    return disk_error(exc, where)


# ---------------------------------------------------------------------------------------
# Atomic writes


@contextlib.contextmanager
def atomic_path(path: Path, clean: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success.

    Works for files and folders; a failure removes the temporary and leaves ``path`` as it was.
    ``clean=False`` skips looking for dead writers' temporaries of ``path``: a caller writing
    thousands of files into one folder cleans it once (``remove_dead_temporaries``) instead.

    Raises:
        JobError: the folder is full, read-only or not writable (naming the folder).
    """
    # The temporary keeps the final extension: some writers insist on it (Keras on ".keras").
    # Its name is unique by owner and random part, and known before anything touches the
    # disk: an interruption at any point leaves nothing that the cleanup below misses.
    tmp = path.with_name(f".{path.name}.{_owner_tag()}{os.urandom(4).hex()}.tmp{path.suffix}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if clean:
            remove_dead_temporaries(path.parent, path.name)
        yield tmp  # the caller creates it
        if path.is_dir() and tmp.is_dir():
            _swap_folders(tmp, path)
        else:
            os.replace(tmp, path)
    except Exception as exc:
        error = disk_error(exc, path.parent) if not isinstance(exc, JobError) else None
        if error is None:
            raise
        raise error from None
    finally:
        _remove(tmp)


def _remove(tmp: Path) -> None:
    if tmp.is_dir() and not tmp.is_symlink():
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
    # What a library writes beside its file (DuckDB's write-ahead log), named rather than
    # globbed: listing the folder on every write is quadratic in a folder of site pages.
    for extra in WRITTEN_BESIDE:
        with contextlib.suppress(OSError):
            tmp.with_name(tmp.name + extra).unlink(missing_ok=True)


WRITTEN_BESIDE = (".wal",)


def _swap_folders(new: Path, path: Path) -> None:
    """Put the finished folder ``new`` at ``path`` by two renames, then delete the old one:
    readers see the old folder or the new one, never neither, and deleting the old tree
    (thousands of files for a site) happens after the swap."""
    old = path.with_name(f".{path.name}.{_owner_tag()}{os.urandom(4).hex()}.old")
    try:
        with SignalsDeferred() as held:  # Ctrl-C between the renames would leave neither
            held.hold()
            os.replace(path, old)
            os.replace(new, path)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def retire(path: Path) -> Path | None:
    """Rename ``path`` (a file or folder) out of the way, to a temporary name beside it that
    ``remove_dead_temporaries`` removes once this process is gone; ``None`` if absent.

    A rename is instant whatever the size of the tree: the caller deletes the returned path
    when its critical section is over (``remove_path``).
    """
    if not path.exists() and not path.is_symlink():
        return None
    name = f".{path.name}.{_owner_tag()}{os.urandom(4).hex()}.old"
    target = path.with_name(name)
    os.replace(path, target)
    return target


def remove_path(path: Path | None) -> None:
    """Delete a file or a folder tree, if there."""
    if path is not None:
        _remove(path)


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
