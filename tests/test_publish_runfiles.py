"""job.publish.runfiles: what a run folder holds for publishing (content types, the redirect
page, run.json) and the refusals of a missing or bad out folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from publish_support import PUBLISHED, RUN_A, make_out

from job.core.errors import PublishError
from job.publish import content_type, publish, redirect_page
from job.publish.entries import RunRef
from job.publish.runfiles import run_created


def test_content_types_cover_the_site() -> None:
    for rel, expected in PUBLISHED.items():
        assert content_type(rel) == expected, rel
    assert content_type("model.keras") == "application/octet-stream"
    assert content_type("notes.TXT") == "text/plain; charset=utf-8"
    assert content_type("blob.unknownext") == "application/octet-stream"


def test_redirect_page_has_meta_refresh_and_link() -> None:
    page = redirect_page(RUN_A)
    href = f"runs/{RUN_A}/site/index.html"
    assert f'<meta http-equiv="refresh" content="0; url={href}">' in page
    assert f'<a href="{href}">' in page


def test_missing_or_bad_out_folder(tmp_path: Path) -> None:
    with pytest.raises(PublishError, match="does not exist"):
        publish(tmp_path / "nope", str(tmp_path / "pub"))
    out = make_out(tmp_path)
    (out / "site" / "index.html").unlink()
    with pytest.raises(PublishError, match=r"site/index\.html is missing"):
        publish(out, str(tmp_path / "pub"))
    (out / "run.json").write_text(json.dumps({"run_id": "../escape"}))
    with pytest.raises(PublishError, match='no valid "run_id"'):
        publish(out, str(tmp_path / "pub"))
    (out / "run.json").write_text("{not json")
    with pytest.raises(PublishError, match=r"run\.json: not valid JSON \(line 1\)"):
        publish(out, str(tmp_path / "pub"))


def test_run_order_is_creation_time_then_id() -> None:
    assert run_created("x", "2027-01-02T03:04:05+02:00") == "2027-01-02T01:04:05Z"
    assert run_created("20270102T030405Z-abc", None) == "2027-01-02T03:04:05Z"
    assert run_created("my-run", None) == ""
    # A run created later wins over an earlier one whatever their ids say.
    assert RunRef(run_created("zzz", "2027-01-01T00:00:00Z"), "zzz") < RunRef(
        run_created("aaa", "2027-01-02T00:00:00Z"), "aaa"
    )
