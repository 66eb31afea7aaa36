"""The package's layers (pyproject.toml's import-linter contracts): imports only go down, from
the CLI to the core, and the site, publishing and the workflow steps never load Keras."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest
from importlinter.cli import lint_imports

ROOT = Path(__file__).resolve().parents[1]


def test_every_import_goes_down_the_layers(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)
    assert lint_imports(no_cache=True, no_logo=True) == 0


def test_an_upward_import_breaks_the_contract(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A copy of the package where the core imports the CLI: the contract names it."""
    shutil.copytree(ROOT / "job", tmp_path / "job", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "job" / "core" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nimport job.cli  # noqa\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m == "job" or m.startswith("job.")]:
        monkeypatch.delitem(sys.modules, name)  # grimp finds the copy, not the checkout
    assert lint_imports(no_cache=True, no_logo=True) == 1
    report = capsys.readouterr().out
    assert "BROKEN" in report and "job.core.errors -> job.cli" in report
