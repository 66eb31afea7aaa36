"""job.publish.target: what a publish target may be, and the one-line refusals."""

from __future__ import annotations

from pathlib import Path

import pytest
from publish_support import cli, make_out

from job.core.errors import PublishError
from job.publish import parse_target


@pytest.mark.parametrize(
    ("target", "bucket", "prefix"),
    [
        ("s3://my-bucket", "my-bucket", ""),
        ("s3://my-bucket/", "my-bucket", ""),
        ("s3://my-bucket/movielens", "my-bucket", "movielens/"),
        ("s3://my.bucket.1/a/b/", "my.bucket.1", "a/b/"),
    ],
)
def test_parse_s3_target(target: str, bucket: str, prefix: str) -> None:
    parsed = parse_target(target)
    assert (parsed.kind, parsed.bucket, parsed.prefix) == ("s3", bucket, prefix)


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("s3://", "no bucket name"),
        ("s3:///prefix", "no bucket name"),
        ("s3://My_Bucket/x", "invalid bucket name 'My_Bucket'"),
        ("s3://ab/x", "invalid bucket name 'ab'"),
        ("s3://bucket/a/../b", "'..'"),
        ("s3://bucket/a//b", "empty"),
        ("s3://bucket/a?x=1", "no query"),
        ("gs://bucket/x", "unsupported publish target"),
        ("https://example.com/x", "unsupported publish target"),
        ("file://host/x", "only local files"),
        ("", "empty"),
    ],
)
def test_parse_target_rejects_bad_urls(target: str, message: str) -> None:
    with pytest.raises(PublishError) as info:
        parse_target(target)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_parse_local_targets(tmp_path: Path) -> None:
    assert parse_target(str(tmp_path)).path == tmp_path
    assert parse_target(tmp_path.as_uri()).path == tmp_path
    assert parse_target("relative/dir").path == Path("relative/dir")


@pytest.mark.parametrize("target", ["s3://", "s3://Bad_Name/x", "ftp://host/x"])
def test_cli_rejects_invalid_urls(
    target: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(["publish", str(make_out(tmp_path)), target]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
