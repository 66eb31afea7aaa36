"""job.core.errors: each domain error is one line a user can act on; the CLI turns it into that line
on stderr and a non-zero exit (2 for a bad flag or setting, 1 for the rest), never a traceback."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from job.cli import main
from job.core.errors import (
    ConfigError,
    DataError,
    JobError,
    PublishError,
    PublishRefused,
    WriteError,
)


@pytest.mark.parametrize("cls", [DataError, ConfigError, PublishError, PublishRefused])
def test_every_domain_error_is_a_job_error_that_says_its_line(cls: type[JobError]) -> None:
    error = cls("ratings.csv row 3, column rating: 7.0 is not a rating; use 0.5 to 5.0")
    assert isinstance(error, JobError)
    assert str(error) == "ratings.csv row 3, column rating: 7.0 is not a rating; use 0.5 to 5.0"


def test_write_error_is_its_message_and_still_the_os_error() -> None:
    error = WriteError("out/ is full: free space or use --out elsewhere", errno.ENOSPC, "No space")
    assert isinstance(error, JobError) and isinstance(error, OSError)
    assert (error.errno, error.strerror) == (errno.ENOSPC, "No space")
    assert str(error) == "out/ is full: free space or use --out elsewhere"


def test_a_config_error_exits_2_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["-q", "bench-job", "--users", "0"]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and len(err.splitlines()) == 1
    assert "--users" in err


def test_other_job_errors_exit_1_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["-q", "render", "--out", str(tmp_path / "nowhere")]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.startswith("error: ") and len(err.splitlines()) == 1
    assert str(tmp_path / "nowhere") in err
