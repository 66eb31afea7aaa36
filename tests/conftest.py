"""Shared fixtures. Runs of the real pipeline are session-scoped: each is made once."""

from __future__ import annotations

from pathlib import Path

import pytest

from job.cli import main


@pytest.fixture(scope="session")
def shipped_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The whole job (`python -m job run`) on the shipped ml-latest-small, seed preset.

    Every stage that exists runs once per test session; end-to-end tests read its folder.
    """
    out = tmp_path_factory.mktemp("shipped") / "out"
    assert main(["-q", "run", "--out", str(out)]) == 0
    return out
