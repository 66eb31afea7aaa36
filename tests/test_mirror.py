"""The tests mirror the package: every module of job/ has its own test file.

``job/stages/train.py`` is tested in ``tests/test_stages_train.py``, ``job/publish/core.py`` in
``tests/test_publish_core.py`` (the subpackage's name as a prefix keeps the names flat and
unique, so the tests can keep importing their helpers from tests/ by bare name).
Scenario suites that cross modules (test_publish_stress.py, test_browser.py,
test_hardening_*.py, ...) come on top of these.
"""

from __future__ import annotations

from pathlib import Path

import job

PACKAGE = Path(job.__file__).parent
TESTS = Path(__file__).parent
EXEMPT = {"__init__.py", "__main__.py"}  # no code of their own to test beyond the CLI's


def expected_test_file(module: Path) -> str:
    parts = module.relative_to(PACKAGE).with_suffix("").parts
    return "test_" + "_".join(parts) + ".py"


def test_expected_names_follow_the_package() -> None:
    assert expected_test_file(PACKAGE / "stages" / "train.py") == "test_stages_train.py"
    assert expected_test_file(PACKAGE / "publish" / "core.py") == "test_publish_core.py"


def test_every_module_has_its_test_file() -> None:
    modules = sorted(p for p in PACKAGE.rglob("*.py") if p.name not in EXEMPT)
    assert len(modules) > 30  # the package was found, not an empty folder
    missing = [
        f"{m.relative_to(PACKAGE.parent)} -> tests/{expected_test_file(m)}"
        for m in modules
        if not (TESTS / expected_test_file(m)).is_file()
    ]
    assert missing == [], "modules without a test file of their own: " + ", ".join(missing)
