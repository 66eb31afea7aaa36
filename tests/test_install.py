"""The Makefile's virtual environment is compiled when it is installed.

With PYTHONDONTWRITEBYTECODE=1 (as on many CI runners and containers), Python never writes
bytecode at import, so an uncompiled venv compiles TensorFlow's, Keras' and pandas' Python
again in every process: seconds before each command's first line.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

MARKER = Path(sys.prefix) / ".installed"  # the Makefile touches it once the install is done


@pytest.mark.skipif(not MARKER.is_file(), reason="not a venv made by the Makefile")
@pytest.mark.parametrize(
    "package,file",
    [
        ("tensorflow", "__init__.py"),
        ("keras", "__init__.py"),
        ("pandas", "__init__.py"),
        # Modules no test imports: compiled by the install, not by an import since.
        ("keras", "src/applications/resnet.py"),
        ("pandas", "io/stata.py"),
        ("tensorflow", "python/ops/gen_audio_ops.py"),
    ],
)
def test_the_venv_holds_bytecode_written_at_install(package: str, file: str) -> None:
    spec = importlib.util.find_spec(package)  # a top-level spec: nothing is imported
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent / file
    cached = Path(importlib.util.cache_from_source(str(source)))
    assert cached.is_file(), f"{source}: no {cached.name}; install with --compile-bytecode"
    assert cached.stat().st_mtime <= MARKER.stat().st_mtime, f"{source}: compiled after the install"
