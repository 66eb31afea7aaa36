"""``Storage`` on a local folder: the bucket's layout, written with ``job.core.files`` atomic writes.

Each object appears complete under its final name or not at all (a temporary and a rename),
as an S3 PUT does, so a reader of the folder sees what a reader of the bucket sees. Where a
folder must differ: a killed writer can leave a hidden temporary behind, which a bucket never
holds; listing a run removes those, so the re-run that completes it leaves nothing stale.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from job.core.errors import PublishError
from job.core.files import atomic_path, atomic_write_bytes, remove_dead_temporaries
from job.publish.runfiles import LocalFile, checksums
from job.publish.storage import Stored

# job.core.files.atomic_path's temporaries (".NAME.RANDOM.tmpSUFFIX") and deleted runs on their way
# out (".trash-RUN-PID"): what a SIGKILL can leave.
_TEMPORARY = re.compile(r"^\..+\.tmp(\.[^.]*)?$")
_TRASH = ".trash-"


class LocalStorage:
    """A folder (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.puts = 0

    def describe(self, key: str = "") -> str:
        return str(self.root / key) if key else str(self.root)

    def url(self, key: str) -> str:
        return (self.root / key).resolve().as_uri()

    def check(self) -> None:
        if self.root.exists() and not self.root.is_dir():
            raise PublishError(f"publish target {self.root} is a file: give a folder")
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise _error(f"create {self.root}", exc) from None

    def list_objects(self, prefix: str) -> dict[str, Stored]:
        found: dict[str, Stored] = {}
        try:
            for folder, subfolders, names in os.walk(self.root / prefix):
                subfolders[:] = [d for d in subfolders if not d.startswith(".")]
                for name in names:
                    path = Path(folder) / name
                    if _TEMPORARY.match(name):
                        path.unlink(missing_ok=True)  # a killed writer's leftover
                    elif not name.startswith("."):
                        size, _, etag = checksums(path)
                        found[path.relative_to(self.root).as_posix()] = (etag, size)
        except OSError as exc:
            raise _error(f"read {self.root / prefix}", exc) from None
        return found

    def list_folders(self, prefix: str) -> list[str]:
        try:
            entries = list((self.root / prefix).iterdir())
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise _error(f"read {self.root / prefix}", exc) from None
        return [p.name for p in entries if p.is_dir() and not p.name.startswith(".")]

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _error(f"read {self.root / key}", exc) from None

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        data = self.read(key)
        return None if data is None else (data, _etag(data))

    def last_modified(self, prefix: str) -> float | None:
        newest: float | None = None
        for folder, _, names in os.walk(self.root / prefix):
            for name in names:
                with contextlib.suppress(FileNotFoundError):  # removed while we walk
                    when = (Path(folder) / name).stat().st_mtime
                    newest = when if newest is None else max(newest, when)
        return newest

    def put_files(
        self,
        files: Sequence[tuple[str, LocalFile]],
        cache_control: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        cleaned: set[Path] = set()
        for key, f in files:
            dest = self.root / key
            if dest.parent not in cleaned:  # once per folder, not once per file
                remove_dead_temporaries(dest.parent)
                cleaned.add(dest.parent)
            try:
                with atomic_path(dest, clean=False) as tmp:
                    shutil.copyfile(f.path, tmp)
            except OSError as exc:
                raise _error(f"write {dest}", exc) from None
            self.puts += 1
            on_bytes(f.size)

    def put_bytes(self, key: str, data: bytes, cache_control: str) -> None:
        try:
            atomic_write_bytes(self.root / key, data)
        except OSError as exc:
            raise _error(f"write {self.root / key}", exc) from None
        self.puts += 1

    def put_if(self, key: str, data: bytes, cache_control: str, expected: str | None) -> bool:
        """The compare and the write under an exclusive lock on the folder (flock), which
        every publisher to this folder takes for it; readers need no lock, since the write
        is an atomic rename."""
        with _locked(self.root):
            current = self.read(key)
            if (None if current is None else _etag(current)) != expected:
                return False
            self.put_bytes(key, data, cache_control)
        return True

    def delete(self, prefix: str) -> None:
        """Rename out of sight first, so a reader never finds half a deleted run."""
        path = self.root / prefix.rstrip("/")
        trash = path.with_name(f"{_TRASH}{path.name}-{os.getpid()}")
        try:
            os.replace(path, trash)
        except FileNotFoundError:
            return
        except OSError as exc:
            raise _error(f"remove {path}", exc) from None
        if not trash.is_dir():  # one object, e.g. a run's completion marker
            trash.unlink(missing_ok=True)
            return
        # This one, and any a killed publisher left half deleted.
        for old in path.parent.glob(f"{_TRASH}*"):
            shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """An exclusive flock on the folder itself: no lock file to leave behind or to race on."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError as exc:
        raise _error(f"open {folder}", exc) from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


def _error(what: str, exc: OSError) -> PublishError:
    return PublishError(f"cannot {what}: {exc.strerror or exc}")
