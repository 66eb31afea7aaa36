"""GroupLens archives: pinned checksums, a download that refuses a changed file, a cache.

Every archive is checked against its pinned SHA-256 and never downloaded again; with no
network the error says where to put the file by hand.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile
from dataclasses import dataclass
from pathlib import Path

from job.core.errors import DataError

log = logging.getLogger(__name__)

GROUPLENS_URL = "https://files.grouplens.org/datasets/movielens/{name}.zip"


@dataclass(frozen=True)
class KnownDataset:
    """A GroupLens archive: where it lives and its pinned checksum."""

    name: str
    sha256: str

    @property
    def url(self) -> str:
        return GROUPLENS_URL.format(name=self.name)


# SHA-256 of each archive as served by GroupLens (the same values tensorflow_datasets pins).
# ml-latest is refreshed by GroupLens now and then; this is the 2023-07-20 snapshot, and a
# newer one is refused with a message saying the archive changed upstream.
KNOWN: dict[str, KnownDataset] = {
    k.name: k
    for k in [
        # shipped inside the package; this is the archive's checksum, for reference
        KnownDataset(
            "ml-latest-small", "696d65a3dfceac7c45750ad32df2c259311949efec81f0f144fdfb91ebc9e436"
        ),
        KnownDataset(
            "ml-latest", "66a9e518c747d76b241d9a859b001a2619d3ed1672ceef599eb50daf73a7b4a3"
        ),
        KnownDataset("ml-25m", "8b21cfb7eb1706b4ec0aac894368d90acf26ebdfb6aced3ebd4ad5bd1eb9c6aa"),
        KnownDataset("ml-32m", "e4a68655d7386b8f95f2f2424b2ff975dfdd15ffd59e0d864a14dca43e99d6ee"),
        KnownDataset("ml-1m", "a6898adb50b9ca05aa231689da44c217cb524e7ebd39d264c56e2832f2c54e20"),
        KnownDataset("ml-10m", "813c411ccb6122564edfe752e7f80c4dcc5aa25fa94c93622f6877a7ba252862"),
        KnownDataset("ml-100k", "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229"),
    ]
}


def fetch(known: KnownDataset, cache_dir: Path, url: str | None = None) -> Path:
    """The unpacked folder of a GroupLens archive, downloaded into the cache on first use."""
    folder = cache_dir / known.name
    if folder.is_dir():
        return folder
    archive = cache_dir / f"{known.name}.zip"
    if not archive.exists():
        download(url or known.url, archive, known.sha256)
    elif sha256_file(archive) != known.sha256:
        raise DataError(
            f"{archive}: checksum does not match the pinned SHA-256 {known.sha256}; "
            "delete it and download it again"
        )
    _unpack(archive, folder)
    return folder


def download(url: str, dest: Path, sha256: str, *, algorithm: str = "sha256") -> None:
    """Stream ``url`` to ``dest`` atomically, refusing a file whose digest differs.

    ``sha256`` is the expected hex digest; ``algorithm`` names another hashlib algorithm
    for a source that pins one (the npm registry's integrity is SHA-512).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    log.info("downloading %s", url)
    tmp = dest.with_name(dest.name + ".part")
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as f:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            while chunk := response.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
                done += len(chunk)
                if total and done % (16 << 20) < len(chunk):
                    log.info("  %d / %d MB", done >> 20, total >> 20)
    except (urllib.error.URLError, OSError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise DataError(
            f"could not download {url} ({reason}); without network, download it elsewhere "
            f"and put it at {dest}"
        ) from None
    if digest.hexdigest() != sha256:
        tmp.unlink(missing_ok=True)
        raise DataError(
            f"{url}: downloaded file has {algorithm.upper()} {digest.hexdigest()}, "
            f"expected {sha256}; "
            "the download is corrupt or the archive changed upstream"
        )
    os.replace(tmp, dest)


def _unpack(archive: Path, folder: Path) -> None:
    """Extract the archive's files (flattened) into ``folder``, atomically."""
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}-"))
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                if member.is_dir():
                    continue
                with zf.open(member) as src, open(tmp / Path(member.filename).name, "wb") as dst:
                    shutil.copyfileobj(src, dst)
        os.replace(tmp, folder)
    except zipfile.BadZipFile:
        shutil.rmtree(tmp, ignore_errors=True)
        raise DataError(f"{archive}: not a valid zip archive; delete it and retry") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def dataset_checksum(paths: list[Path]) -> str:
    """One SHA-256 over the files a dataset was read from, in order (for run.json)."""
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()
