"""The package's layers (pyproject.toml's import-linter contracts): imports only go down, from
the CLI to the core, and the site, publishing and the workflow steps never load Keras."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    """import-linter over the package under ``root``, in a process of its own (it sets up
    logging and output for a command line, which a test process must not inherit)."""
    env = {**os.environ, "PYTHONPATH": str(root)}
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=root, env=env, capture_output=True, text=True
    )


def test_every_import_goes_down_the_layers() -> None:
    done = lint_imports(ROOT)
    assert done.returncode == 0, done.stdout


def test_an_upward_import_breaks_the_contract(tmp_path: Path) -> None:
    """A copy of the package where the core imports the CLI: the contract names it."""
    shutil.copytree(ROOT / "job", tmp_path / "job", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    errors = tmp_path / "job" / "core" / "errors.py"
    errors.write_text(errors.read_text(encoding="utf-8") + "\nimport job.cli  # noqa\n")
    done = lint_imports(tmp_path)
    assert done.returncode == 1
    assert "BROKEN" in done.stdout and "job.core.errors -> job.cli" in done.stdout
