"""Build and run the job's images from the tests, with Docker or Podman.

On a normal host this is `docker build` and `docker run`, and nothing more. The rest of this
module is there for this project's own machines (Debian 12 VMs, root, Podman and no Docker
daemon, no container registry within reach), whose quirks are each applied here and only here:

- No registry: the Dockerfiles' base, python:3.11-slim-bookworm from Docker Hub, cannot be
  pulled. An equivalent (Debian bookworm, its Python 3.11, pip, venv) is made once from Debian's
  packages with mmdebstrap, kept as BASE_STANDIN, and passed to the Dockerfiles as
  `--build-arg PYTHON_IMAGE=...`.
- pip in the build reaches PyPI only with the host's CA bundle mounted over the image's: the
  egress here goes through a TLS proxy with its own certificate authority.
- `podman run --runtime runc` (crun fails on this kernel's hybrid cgroups) with ulimits no
  higher than the host's own, and processes no more than pid_max (Podman asks for more by
  default, and runc cannot raise a limit past what Podman itself got).
"""

from __future__ import annotations

import fcntl
import json
import re
import resource
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path

import pytest

# What the Dockerfiles are built from where Docker Hub is out of reach (see above).
BASE_STANDIN = "localhost/python:3.11-slim-bookworm"
# Debian's equivalent of python:3.11-slim-bookworm: minbase, Python with pip and venv, no
# documentation, merged /usr without the usrmerge package (and the Perl it pulls in).
MMDEBSTRAP = [
    "mmdebstrap",
    "--variant=minbase",
    "--include=python3,python3-venv,python3-pip,ca-certificates,python-is-python3",
    "--hook-dir=/usr/share/mmdebstrap/hooks/merged-usr",
    '--aptopt=APT::Install-Recommends "false"',
    *(
        f"--dpkgopt=path-exclude=/usr/share/{folder}/*"
        for folder in ("doc", "man", "info", "locale", "lintian")
    ),
    "--dpkgopt=path-include=/usr/share/doc/*/copyright",
    "bookworm",
]
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
ROOT = Path(__file__).resolve().parents[1]
INFRA = ROOT / "infra"
# The CPU image's build, started in the background by conftest.py when the session selects a
# test that needs it, so that the build overlaps the rest of the suite.
CPU_IMAGE_BUILD = pytest.StashKey[Future[str]]()


def _run(args: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = proc.stderr.strip().splitlines() or proc.stdout.strip().splitlines()
    return lines[-1] if lines else "no output"


def _ulimit(name: str, which: int, cap: int | None = None) -> str:
    """`--ulimit NAME=SOFT:HARD` at the host's own limits, and at most `cap`."""
    values = []
    for value in resource.getrlimit(which):
        if value == resource.RLIM_INFINITY:
            value = -1 if cap is None else cap  # -1: unlimited
        elif cap is not None:
            value = min(value, cap)
        values.append(value)
    return f"{name}={values[0]}:{values[1]}"


def _pid_max() -> int | None:
    """Podman holds its own process limit to the kernel's pid_max, and runc cannot raise it."""
    path = Path("/proc/sys/kernel/pid_max")
    return int(path.read_text()) if path.exists() else None


@dataclass(frozen=True)
class Engine:
    exe: str
    podman: bool

    def build(
        self, dockerfile: Path, tag: str, context: Path, base: str | None, timeout: float = 3600
    ) -> subprocess.CompletedProcess[str]:
        args = [self.exe, "build", "-f", str(dockerfile), "-t", tag]
        if base is not None:
            args += ["--build-arg", f"PYTHON_IMAGE={base}"]
        if self.podman and HOST_CA_BUNDLE.is_file():
            args += ["-v", f"{HOST_CA_BUNDLE}:/etc/ssl/certs/ca-certificates.crt:ro"]
        return _run([*args, str(context)], timeout)

    def run(
        self,
        image: str,
        *args: str,
        volumes: dict[Path, str] | None = None,
        entrypoint: str | None = None,
        options: Sequence[str] = (),
        timeout: float = 900,
    ) -> subprocess.CompletedProcess[str]:
        """`run --rm IMAGE ARGS`; `options` go before the image (--user, --env, --network ...)."""
        cmd = [self.exe, "run", "--rm"]
        if self.podman:
            if shutil.which("runc"):
                cmd += ["--runtime", "runc"]
            cmd += ["--ulimit", _ulimit("nofile", resource.RLIMIT_NOFILE)]
            cmd += ["--ulimit", _ulimit("nproc", resource.RLIMIT_NPROC, _pid_max())]
        for host, inside in (volumes or {}).items():
            cmd += ["-v", f"{host}:{inside}"]
        if entrypoint is not None:
            cmd += ["--entrypoint", entrypoint]
        return _run([*cmd, *options, image, *args], timeout)

    def has_image(self, name: str) -> bool:
        return _run([self.exe, "image", "inspect", name], 60).returncode == 0

    def image_size(self, name: str) -> int:
        proc = _run([self.exe, "image", "inspect", name], 60)
        assert proc.returncode == 0, last_line(proc)
        return int(json.loads(proc.stdout)[0]["Size"])


def find_engine() -> Engine | str:
    """Docker where its daemon answers, else Podman; or why there is neither."""
    reasons = []
    for name in ("docker", "podman"):
        exe = shutil.which(name)
        if exe is None:
            reasons.append(f"{name} is not installed")
            continue
        probe = _run([exe, "info"], 60)
        if probe.returncode == 0:
            return Engine(exe, podman=name == "podman")
        reasons.append(f"{name} does not work ({last_line(probe)})")
    return "; ".join(reasons)


def usable_engine() -> Engine:
    """The engine to build with, for a module fixture; skips the tests where neither Docker
    nor Podman is installed, and fails them where Podman is installed but does not work."""
    found = find_engine()
    if isinstance(found, str):
        if shutil.which("podman"):
            pytest.fail(f"Podman is installed but cannot be used: {found}")
        pytest.skip(f"no container engine to build the images with: {found}")
    return found


def base_image(engine: Engine, pinned: str) -> str | None:
    """The base to build on: None for the Dockerfiles' own `pinned` one where it is here or can
    be pulled, else BASE_STANDIN, made once with mmdebstrap. Raises RuntimeError if neither."""
    if engine.has_image(pinned):
        return None
    pull = _run([engine.exe, "pull", pinned], 900)
    if pull.returncode == 0:
        return None
    if engine.has_image(BASE_STANDIN):
        return BASE_STANDIN
    if not (engine.podman and shutil.which("mmdebstrap")):
        raise RuntimeError(
            f"cannot pull {pinned} ({last_line(pull)}), and there is no mmdebstrap with "
            f"Podman to make a stand-in for it (apt-get install podman runc mmdebstrap)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        tarball = Path(tmp) / "base.tar"
        made = _run([*MMDEBSTRAP, str(tarball)], 900)
        if made.returncode != 0:
            raise RuntimeError(f"mmdebstrap failed: {made.stderr[-2000:]}")
        imported = _run([engine.exe, "import", str(tarball), BASE_STANDIN], 600)
        if imported.returncode != 0:
            raise RuntimeError(f"podman import failed: {last_line(imported)}")
    return BASE_STANDIN


def report(proc: subprocess.CompletedProcess[str]) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout[-5000:]}\n--- stderr\n{proc.stderr[-5000:]}"


def pinned_base(dockerfile: Path) -> str:
    """The ARG PYTHON_IMAGE=... default of a Dockerfile."""
    match = re.search(r"^ARG PYTHON_IMAGE=(\S+)$", dockerfile.read_text(encoding="utf-8"), re.M)
    if not match:
        raise RuntimeError(f"{dockerfile.name}: no ARG PYTHON_IMAGE")
    return match[1]


def build_job_image(engine: Engine, kind: str) -> str:
    """Build infra/Dockerfile.KIND from the checkout; its tag. Raises RuntimeError if it fails.

    One build at a time per kind on this machine: with the suite spread over processes
    (pytest -n), a second caller waits for the first build, then finds every layer cached."""
    dockerfile = INFRA / f"Dockerfile.{kind}"
    tag = f"localhost/movielens-job:test-{kind}"
    lock = Path(tempfile.gettempdir()) / f"movielens-job-image-{kind}.lock"
    with lock.open("a") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # released when the file closes or the process ends
        base = base_image(engine, pinned_base(dockerfile))
        proc = engine.build(dockerfile, tag, ROOT, base)
    if proc.returncode != 0:
        raise RuntimeError(f"building {dockerfile.name} failed: {report(proc)}")
    return tag


def cpu_image_tag(config: pytest.Config, engine: Engine) -> str:
    """The CPU image: the background build's, when conftest.py started one, else built now."""
    started = config.stash.get(CPU_IMAGE_BUILD, None)
    return started.result() if started is not None else build_job_image(engine, "cpu")
