"""job.publish.local: publishing to a local folder, the same layout and rules as S3."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from publish_support import PUBLISHED, RUN_A, RUN_B, RUN_C, cli, make_out

from job.core.errors import PublishError
from job.publish import publish, redirect_page
from job.publish.retention import MARKER


def test_local_publish_same_layout_and_idempotent(tmp_path: Path) -> None:
    out = make_out(tmp_path)
    dest = tmp_path / "public"
    summary = publish(out, dest.as_uri())
    run = dest / "runs" / RUN_A
    published = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert published == set(PUBLISHED) | {MARKER}
    for rel in PUBLISHED:
        assert (run / rel).read_bytes() == (out / rel).read_bytes()
    assert (dest / "index.html").read_text() == redirect_page(RUN_A)
    assert json.loads((dest / "latest.json").read_text())["site"] == f"runs/{RUN_A}/site/index.html"
    assert summary.url == (dest / "index.html").resolve().as_uri()
    assert sorted(p.name for p in dest.iterdir()) == [
        "index.html",
        "latest.json",
        "runs",
        "runs.json",
    ]
    assert [p.name for p in (dest / "runs").iterdir()] == [RUN_A]  # no staging left over

    again = publish(out, str(dest))
    assert (again.uploaded, again.skipped, again.entry_points_written) == (0, len(PUBLISHED), False)
    (out / "site" / "static" / "style.css").write_text("h1 { color: red; }\n")
    changed = publish(out, str(dest))
    assert changed.uploaded == 1
    assert (run / "site/static/style.css").read_text() == "h1 { color: red; }\n"


def test_local_failure_leaves_previous_site_and_rerun_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dest = tmp_path / "public"
    publish(make_out(tmp_path, RUN_A), str(dest))
    before = {p: p.read_bytes() for p in dest.rglob("*") if p.is_file()}

    real_copy = shutil.copyfile

    def failing_copy(src: Any, dst: Any, **kwargs: Any) -> Any:
        if str(src).endswith("movies/1.html"):
            Path(dst).write_bytes(b"half a pa")  # the disk filled up part way through
            raise OSError(28, "No space left on device")
        return real_copy(src, dst, **kwargs)

    monkeypatch.setattr("job.publish.local.shutil.copyfile", failing_copy)
    out_b = make_out(tmp_path, RUN_B)
    with pytest.raises(PublishError, match="No space left on device") as info:
        publish(out_b, str(dest))
    assert "previous site is still served" in str(info.value) and "\n" not in str(info.value)
    # Run A and the entry points are byte for byte as they were.
    assert {p: p.read_bytes() for p in before} == before
    # Of run B only whole files landed (those before the failure), no temporary.
    landed = sorted(p for p in (dest / "runs" / RUN_B).rglob("*") if p.is_file())
    assert landed and all(
        (out_b / p.relative_to(dest / "runs" / RUN_B)).read_bytes() == p.read_bytes()
        for p in landed
    )
    assert not (dest / "runs" / RUN_B / "site" / "movies" / "1.html").exists()
    assert not [p for p in dest.rglob(".*")]

    monkeypatch.undo()
    resumed = publish(out_b, str(dest))
    assert (resumed.skipped, resumed.uploaded) == (len(landed), len(PUBLISHED) - len(landed))
    assert json.loads((dest / "latest.json").read_text())["run_id"] == RUN_B


def test_local_keep_runs(tmp_path: Path) -> None:
    dest = tmp_path / "public"
    for run_id in (RUN_A, RUN_B, RUN_C):
        summary = publish(make_out(tmp_path, run_id), str(dest), keep_runs=1)
    assert summary.removed_runs == (RUN_B,)
    assert sorted(p.name for p in (dest / "runs").iterdir()) == [RUN_C]  # no trash left


def test_cli_says_in_one_line_when_a_run_is_not_the_latest_or_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run older than the one the site names: uploaded and kept but not the latest (exit 0,
    one warning line even with -q), or, with no room under --keep-runs, refused (exit 1)."""
    dest = str(tmp_path / "public")
    assert cli(["-q", "publish", str(make_out(tmp_path, RUN_C)), dest]) == 0
    capsys.readouterr()
    assert cli(["-q", "publish", str(make_out(tmp_path, RUN_A)), dest]) == 0
    out, err = capsys.readouterr()
    assert out.strip() == (tmp_path / "public" / "index.html").resolve().as_uri()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"published run {RUN_A} but not the latest: the entry points name run ")
    assert json.loads((tmp_path / "public" / "latest.json").read_text())["run_id"] == RUN_C

    args = ["-q", "publish", str(make_out(tmp_path, RUN_B)), dest, "--keep-runs", "1"]
    assert cli(args) == 1
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1
    assert err.startswith(f"error: refused: run {RUN_B} (created 2026-11-27T09:00:00Z) is older")
    assert sorted(p.name for p in (tmp_path / "public" / "runs").iterdir()) == [RUN_A, RUN_C]


def test_local_target_that_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    with pytest.raises(PublishError, match="is a file"):
        publish(make_out(tmp_path), str(tmp_path / "afile"))
