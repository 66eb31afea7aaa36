"""One lock for every environment: pyproject.toml and uv.lock agree, and every export in
infra/requirements/ is what uv writes from the lock today, with a hash on every package."""

from __future__ import annotations

import re
import subprocess
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest
from lock import EXPORTS, REQUIREMENTS, ROOT, UV_ENV, export, uv
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

PIN = re.compile(r"^([A-Za-z0-9_.\-\[\]]+)==(\S+)")


def declared(pyproject: dict[str, Any]) -> dict[str, set[str]]:
    """Each requirement list of pyproject.toml, as normalised requirement strings."""
    project = pyproject["project"]
    lists = {"dependencies": project["dependencies"]}
    lists |= {f"extra {k}": v for k, v in project["optional-dependencies"].items()}
    lists |= {f"group {k}": v for k, v in pyproject["dependency-groups"].items()}
    return {name: {_normal(Requirement(r)) for r in reqs} for name, reqs in lists.items()}


def locked(lock: dict[str, Any]) -> dict[str, set[str]]:
    """The same lists as uv.lock recorded them when it was resolved."""
    (project,) = [p for p in lock["package"] if p["name"] == "movielens-job"]
    meta = project["metadata"]
    lists: dict[str, set[str]] = {"dependencies": set()}
    for entry in meta["requires-dist"]:
        extra = re.search(r"extra == '([^']+)'", entry.get("marker", ""))
        lists.setdefault(f"extra {extra[1]}" if extra else "dependencies", set()).add(
            _normal_entry(entry)
        )
    for group, entries in meta["requires-dev"].items():
        lists[f"group {group}"] = {_normal_entry(e) for e in entries}
    return lists


def _normal(req: Requirement) -> str:
    return _spelled(req.name, req.extras, str(req.specifier))


def _normal_entry(entry: dict[str, Any]) -> str:
    return _spelled(entry["name"], entry.get("extras", ()), entry.get("specifier", ""))


def _spelled(name: str, extras: Iterable[str], specifier: str) -> str:
    """One spelling for a requirement: normalised name, sorted extras and specifiers."""
    extra = ",".join(sorted(extras))
    clauses = ",".join(sorted(str(s) for s in SpecifierSet(specifier)))
    return f"{name.lower().replace('_', '-')}{f'[{extra}]' if extra else ''}{clauses}"


def disagreements(pyproject_path: Path, lock_path: Path) -> list[str]:
    """What pyproject.toml asks for that uv.lock was not resolved for, one line each."""
    wanted = declared(tomllib.loads(pyproject_path.read_text(encoding="utf-8")))
    have = locked(tomllib.loads(lock_path.read_text(encoding="utf-8")))
    lines = []
    for name in sorted(wanted.keys() | have.keys()):
        for req in sorted(wanted.get(name, set()) - have.get(name, set())):
            lines.append(f"{name}: {req} is not in uv.lock")
        for req in sorted(have.get(name, set()) - wanted.get(name, set())):
            lines.append(f"{name}: uv.lock has {req}, pyproject.toml does not")
    return lines


def test_pyproject_and_the_lock_agree() -> None:
    assert disagreements(ROOT / "pyproject.toml", ROOT / "uv.lock") == [], (
        "run `make lock` and commit uv.lock and infra/requirements/"
    )


def test_a_changed_pin_is_a_disagreement(tmp_path: Path) -> None:
    pyproject = tmp_path / "pyproject.toml"
    text = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject.write_text(text.replace('"jinja2==3.1.6"', '"jinja2==3.1.5"'), encoding="utf-8")
    assert disagreements(pyproject, ROOT / "uv.lock") == [
        "dependencies: jinja2==3.1.5 is not in uv.lock",
        "dependencies: uv.lock has jinja2==3.1.6, pyproject.toml does not",
    ]


def test_uv_finds_the_lock_current() -> None:
    """uv's own check, offline: the lock satisfies pyproject.toml without resolving again."""
    proc = subprocess.run(
        [uv(), "lock", "--check", "--offline"],
        cwd=ROOT,
        env=UV_ENV,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_each_export_is_the_lock_as_uv_writes_it(name: str) -> None:
    committed = (REQUIREMENTS / name).read_text(encoding="utf-8")
    assert committed == export(name), f"infra/requirements/{name} is stale: run `make lock`"


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_every_package_is_pinned_with_hashes(name: str) -> None:
    text = (REQUIREMENTS / name).read_text(encoding="utf-8")
    entries = [e for e in re.split(r"\n(?=\S)", text) if e.strip() and not e.startswith("#")]
    assert entries
    for entry in entries:
        assert PIN.match(entry), f"{name}: not pinned: {entry.splitlines()[0]}"
        assert "--hash=sha256:" in entry, f"{name}: no hash: {entry.splitlines()[0]}"
