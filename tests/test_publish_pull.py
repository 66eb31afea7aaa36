"""pull-latest: the published run's model files, from a folder target, from S3, and over http
from the bucket as visitors read it; one line and nothing written when there is nothing to pull."""

from __future__ import annotations

from pathlib import Path

import pytest
from hardening import one_error_line
from publish_support import RUN_A, RUN_B, make_out, public_read_policy, s3

from job.core.errors import JobError
from job.publish import publish
from job.publish.pull import PULLED_FILES, pull_latest


def _same_files(pulled: Path, out: Path) -> None:
    assert sorted(p.name for p in pulled.iterdir()) == sorted(PULLED_FILES)
    for name in PULLED_FILES:
        assert (pulled / name).read_bytes() == (out / name).read_bytes(), name


def test_pulls_the_latest_run_from_a_folder_target(tmp_path: Path) -> None:
    site = tmp_path / "site"
    publish(make_out(tmp_path, RUN_A), str(site))
    newer = make_out(tmp_path, RUN_B, variant="b")
    (newer / "model.keras").write_bytes(b"PK\x03\x04 the newer model")
    publish(newer, str(site))

    assert pull_latest(str(site), tmp_path / "previous") == RUN_B
    _same_files(tmp_path / "previous", newer)


def test_pulls_over_http_and_from_s3(s3_server: str, bucket: str, tmp_path: Path) -> None:
    out = make_out(tmp_path)
    s3(s3_server).put_bucket_policy(Bucket=bucket, Policy=public_read_policy(bucket))
    publish(out, f"s3://{bucket}/web", endpoint_url=s3_server)

    # Anonymously, as the workflow's train job reads the site (moto serves it over http).
    assert pull_latest(f"{s3_server}/{bucket}/web/", tmp_path / "by-http") == RUN_A
    _same_files(tmp_path / "by-http", out)
    assert pull_latest(f"s3://{bucket}/web", tmp_path / "by-s3", s3_server) == RUN_A
    _same_files(tmp_path / "by-s3", out)

    with pytest.raises(JobError, match=r"nothing published there \(no latest.json\)"):
        pull_latest(f"{s3_server}/{bucket}/elsewhere", tmp_path / "none")
    assert not (tmp_path / "none").exists()


def test_nothing_published_or_a_run_without_its_model_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from publish_support import cli

    site, dest = tmp_path / "site", tmp_path / "previous"
    assert cli(["pull-latest", str(site), "--out", str(dest)]) == 1
    assert "nothing published there" in one_error_line(capsys.readouterr().err)

    out = make_out(tmp_path)
    (out / "model.keras").unlink()  # as runs were published before models went up
    publish(out, str(site))
    assert cli(["pull-latest", str(site), "--out", str(dest)]) == 1
    line = one_error_line(capsys.readouterr().err)
    assert f"run {RUN_A} was published without model.keras" in line
    assert not dest.exists()

    (site / "latest.json").write_text("not json")
    with pytest.raises(JobError, match="names no run"):
        pull_latest(str(site), dest)


def test_an_unreachable_site_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(JobError, match=r"http://127.0.0.1:9/latest.json: cannot be read"):
        pull_latest("http://127.0.0.1:9", tmp_path / "previous")
    assert not (tmp_path / "previous").exists()
