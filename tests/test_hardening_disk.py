"""Full disks and read-only folders (issue 15): a stage whose ``--out`` fills up or cannot be
written fails with one line naming the folder, exit 1, and leaves the previous complete
outputs in place; with space again, the same command completes.

The run folders live on a small tmpfs that the test mounts (root only; skipped elsewhere,
with the reason) and always unmounts; read-only is the same tmpfs remounted ``ro``, which
binds root too (root ignores permission bits, not a read-only mount).
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hardening import CLI, ROOT, one_error_line, record, snapshot, subprocess_env, temporaries

from job.cli import main
from job.core.errors import JobError
from job.core.files import atomic_path, atomic_write_text
from job.pipeline import render

# A run of the tiny data is ~4 MB (the database ~3 MB); rendered, it also holds the SQL
# page's engine (35 MB, OUT/engine) and a copy of the database for the browser.
TMPFS_SIZE = "96m"


@pytest.fixture(scope="module")
def full_run(scored_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("full-disk") / "out"
    shutil.copytree(scored_run, out)
    render(out, workers=1)
    return out


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A fresh tmpfs of TMPFS_SIZE at ``tmp_path/mnt``, unmounted afterwards whatever happens."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (the full-disk and read-only cases use one)")
    mount = tmp_path / "mnt"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_SIZE}", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or done.returncode})")
    try:
        yield mount
    finally:
        if subprocess.run(["umount", str(mount)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill(mount: Path) -> Path:
    """Fill the file system to the last byte; returns the filler file (delete it to free)."""
    filler = mount / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 1 << 12, 1 << 8, 1):
            chunk = b"\0" * size
            try:
                while os.write(fd, chunk) == size:
                    pass
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(mount).f_bavail == 0
    return filler


def remount_read_only(mount: Path) -> None:
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True, capture_output=True)


def _argv(stage: str, out: Path, data: str) -> list[str]:
    if stage == "train":
        return [
            "-q",
            "train",
            "--data",
            data,
            "--out",
            str(out),
            "--preset",
            "seed",
            "--epochs",
            "1",
        ]
    return ["-q", stage, "--out", str(out), *(["--top-k", "5"] if stage == "score" else [])]


STAGES = ["train", "score", "merge", "render"]


@pytest.mark.parametrize("stage", STAGES)
def test_full_disk_is_one_line_and_keeps_the_previous_outputs(
    stage: str, full_run: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmpfs / "out"
    shutil.copytree(full_run, out)
    data = json.loads((out / "run.json").read_text())["config"]["data"]
    before = snapshot(out)
    filler = fill(tmpfs)
    capsys.readouterr()

    code = main(_argv(stage, out, data))

    line = one_error_line(capsys.readouterr().err)
    record("disk full", stage, line, code, out)
    assert code == 1
    assert "no space left on device" in line and str(out) in line, line
    assert snapshot(out) == before, "the previous outputs are in place"
    assert not temporaries(out)

    filler.unlink()  # space again: the same command completes
    assert main(_argv(stage, out, data)) == 0, capsys.readouterr().err
    assert not temporaries(out)
    record("disk full, then space again", stage, "(the same command completes)", 0)


@pytest.mark.parametrize("stage", [*STAGES, "train into a new folder"])
def test_read_only_folder_is_one_line_and_nothing_changes(
    stage: str, full_run: Path, tmpfs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmpfs / "out"
    shutil.copytree(full_run, out)
    data = json.loads((out / "run.json").read_text())["config"]["data"]
    before = snapshot(tmpfs)
    remount_read_only(tmpfs)
    capsys.readouterr()

    target = tmpfs / "new" if stage == "train into a new folder" else out
    code = main(_argv(stage.split()[0], target, data))

    line = one_error_line(capsys.readouterr().err)
    record("read-only --out", stage, line, code, target)
    assert code == 1
    assert "read-only file system" in line and str(target) in line, line
    assert snapshot(tmpfs) == before


def test_publish_reads_a_read_only_folder(
    full_run: Path, tmpfs: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """publish only reads the run folder: a read-only one publishes."""
    out = tmpfs / "out"
    shutil.copytree(full_run, out)
    remount_read_only(tmpfs)
    code = main(["-q", "publish", str(out), str(tmp_path / "site")])
    record("read-only --out", "publish", "(published: a correct result)", code)
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "site" / "latest.json").is_file()


def test_atomic_writes_turn_disk_errors_into_one_line(tmpfs: Path) -> None:
    """The one place every writer goes through: ENOSPC and EROFS are a JobError naming the
    folder; the previous file stays; no temporary is left."""
    folder = tmpfs / "out"
    atomic_write_text(folder / "a.txt", "previous")
    filler = fill(tmpfs)
    with pytest.raises(JobError, match=r"out: cannot write \(no space left on device\)"):
        atomic_write_text(folder / "a.txt", "x" * 100_000)
    assert (folder / "a.txt").read_text() == "previous"
    assert [p.name for p in folder.iterdir()] == ["a.txt"]
    filler.unlink()
    remount_read_only(tmpfs)
    with (
        pytest.raises(JobError, match=r"out: cannot write \(read-only file system\)"),
        atomic_path(folder / "b.txt") as tmp,
    ):
        tmp.write_text("never")


def test_folder_without_write_permission_is_one_line(full_run: Path) -> None:
    """Root ignores permission bits: a child running as nobody meets a run folder it may
    read but not write, and gets one line before any work."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv (util-linux) to start a child as another user")
    shared = Path(tempfile.mkdtemp(prefix="hardening-eacces-"))
    try:
        out = shared / "out"
        shutil.copytree(full_run, out)
        for path in [shared, *shared.rglob("*")]:
            path.chmod(0o755 if path.is_dir() else 0o644)
        out.chmod(0o555)
        before = snapshot(out)
        as_nobody = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"]
        done = subprocess.run(
            [*as_nobody, *CLI, "-q", "merge", "--out", str(out)],
            capture_output=True,
            text=True,
            env=subprocess_env(),
            cwd=ROOT,
        )
        if done.returncode != 0 and "cannot write" not in done.stderr:
            pytest.skip(f"user nobody cannot run this checkout: {done.stderr.strip()[-200:]}")
        line = one_error_line(done.stderr)
        record("--out not writable (not root)", "merge", line, done.returncode, out)
        assert done.returncode == 1
        assert f"{out}: cannot write (permission denied)" in line, line
        assert snapshot(out) == before
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_a_full_disk_anywhere_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A write outside atomic_path (a library's own file) meeting a full disk: the CLI's
    one handler gives one line naming the folder; other errors keep their traceback."""
    import job.stages.merge

    def full(out: Path) -> None:
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache" / "x.bin"))

    monkeypatch.setattr(job.stages.merge, "merge_stage", full)
    capsys.readouterr()
    code = main(["-q", "merge", "--out", str(tmp_path / "out")])
    line = one_error_line(capsys.readouterr().err)
    record("disk full outside the run folder", "merge", line, code, tmp_path)
    assert code == 1 and line.startswith(f"error: {tmp_path / 'cache'}: cannot write (no space")

    def bug(out: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(job.stages.merge, "merge_stage", bug)
    with pytest.raises(OSError, match="Input/output error"):
        main(["-q", "merge", "--out", str(tmp_path / "out")])


def test_library_errors_that_carry_the_os_message_are_recognised(tmp_path: Path) -> None:
    """DuckDB and HDF5 wrap the OS error in their own exception; its text is enough."""
    from job.core.files import disk_error

    class LibraryError(Exception):
        pass

    error = disk_error(
        LibraryError('IO Error: Could not write file "x": No space left on device'), tmp_path
    )
    assert error is not None and "no space left on device" in str(error)
    assert disk_error(LibraryError("Catalog Error: no such table"), tmp_path) is None
