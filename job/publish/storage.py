"""The storage a run is published to: the few operations the publishing algorithm needs.

Two implementations, ``s3.S3Storage`` and ``local.LocalStorage``. Keys are relative to the
target (``runs/RUN_ID/site/index.html``, ``latest.json``); each implementation adds its bucket
prefix or folder. Every method raises ``PublishError`` (one line naming the object and the fix)
and nothing else, so the algorithm never sees a botocore or OS exception.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from job.publish.runfiles import LocalFile

# What a listing says of a stored object: (ETag, size). A local file's "ETag" is computed the
# way S3 computes it for our upload, so one comparison serves both.
Stored = tuple[str, int]


class Storage(Protocol):
    puts: int  # write requests made so far (HTTP PUTs, retries included; files written)

    def describe(self, key: str = "") -> str:
        """``s3://BUCKET/PREFIX/KEY`` or ``FOLDER/KEY``, for messages."""
        ...

    def url(self, key: str) -> str:
        """The address a browser opens for ``key``."""
        ...

    def check(self) -> None:
        """Fail fast, before any upload, on a wrong bucket, endpoint, credentials or folder."""
        ...

    def list_objects(self, prefix: str) -> dict[str, Stored]:
        """Every object under ``prefix``: key -> (ETag, size)."""
        ...

    def list_folders(self, prefix: str) -> list[str]:
        """The names of the "folders" directly under ``prefix`` (e.g. run ids under runs/)."""
        ...

    def read(self, key: str) -> bytes | None:
        """The object's bytes, or None when there is no such object."""
        ...

    def read_versioned(self, key: str) -> tuple[bytes, str] | None:
        """The object's bytes and ETag (what ``put_if`` compares), or None when absent."""
        ...

    def last_modified(self, prefix: str) -> float | None:
        """When the newest object under ``prefix`` was written (seconds since the epoch, the
        store's clock), or None when there is none."""
        ...

    def put_files(
        self,
        files: Sequence[tuple[str, LocalFile]],
        cache_control: str,
        on_bytes: Callable[[int], None],
    ) -> None:
        """Store each (key, file), in parallel where that helps; ``on_bytes`` sees progress.

        Stops at the first failure, with no write in flight when it returns or raises.
        """
        ...

    def put_bytes(self, key: str, data: bytes, cache_control: str) -> None:
        """Store one small object, atomically replacing what was there."""
        ...

    def put_if(self, key: str, data: bytes, cache_control: str, expected: str | None) -> bool:
        """Store one small object only if it is unchanged: its ETag is still ``expected``, or,
        with ``expected=None``, there is still no such object (a compare-and-swap).

        Returns False, writing nothing, when another writer got there first. A store that
        cannot check the condition writes anyway and returns True; the caller reads back.
        """
        ...

    def delete(self, prefix: str) -> None:
        """Remove every object under ``prefix`` (a folder, or one object's key)."""
        ...
