"""The lock's exports: uv.lock is the one lock; each environment installs from its export with
hashes (pip --require-hashes), written to infra/requirements/ by `make lock` (this file run as a
script) and checked by tests/test_lock.py.

uv, over pip-tools: one universal lock for every environment (the extras cpu and gpu, the test,
build and tools groups) resolved together, with conflicts declared where two must never meet
(tensorflow-cpu and TensorFlow's CUDA build; the linters' boto3 and the job's), and `uv lock
--check` tells in a second whether pyproject.toml and the lock still agree.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REQUIREMENTS = ROOT / "infra" / "requirements"
# Declaring the tools group in conflict with the project itself is a preview feature of uv.
UV_ENV = {**os.environ, "UV_PREVIEW_FEATURES": "package-conflicts"}

# Each export: what it selects from the lock, and who installs it.
EXPORTS: dict[str, list[str]] = {
    "cpu.txt": ["--no-default-groups", "--extra", "cpu"],  # infra/Dockerfile.cpu
    "gpu.txt": ["--no-default-groups", "--extra", "gpu"],  # infra/Dockerfile.gpu
    # make's .venv: the job, the test tools and the docs site's builder
    "test.txt": ["--no-default-groups", "--extra", "cpu", "--group", "test", "--group", "docs"],
    "build.txt": ["--only-group", "build"],  # the images' wheel stage
    "bootstrap.txt": ["--only-group", "bootstrap"],  # uv, which make installs the rest with
    "tools.txt": ["--only-group", "tools"],  # make's .venv-tools
    "docs.txt": ["--only-group", "docs"],  # .github/workflows/pages.yml
}


def uv() -> str:
    """The uv the test environment installed from the lock (it pins uv itself)."""
    beside = Path(sys.executable).with_name("uv")
    found = str(beside) if beside.exists() else shutil.which("uv")
    if found is None:
        raise SystemExit("uv is not installed: make it with `make .venv/.installed`")
    return found


def export(name: str) -> str:
    """The export ``name`` as uv writes it from the current uv.lock."""
    args = [uv(), "export", "--frozen", "--no-emit-project", "--no-header", "--quiet"]
    proc = subprocess.run(
        [*args, *EXPORTS[name]], cwd=ROOT, env=UV_ENV, capture_output=True, text=True, check=True
    )
    return proc.stdout


def main() -> None:
    REQUIREMENTS.mkdir(parents=True, exist_ok=True)
    for name in EXPORTS:
        (REQUIREMENTS / name).write_text(export(name), encoding="utf-8")
        print(f"wrote {REQUIREMENTS / name}")


if __name__ == "__main__":
    main()
