"""moto's standalone S3 server on loopback, for the tests and ``python -m bench publish``.

A real HTTP server in its own process, so the client side (boto3, retries, connections, the
transfer manager's threads) runs exactly as against a real store, and needs no cloud account.
Needs the test extras (``moto[server]``).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Fake credentials for the local server; moto accepts any, and the real chain is never asked.
FAKE_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
_UNSET = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3")


def free_port() -> int:
    """A loopback port that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def moto_server(port: int | None = None, *, startup_timeout: float = 30.0) -> Iterator[str]:
    """Run moto's standalone S3 server on a loopback port; yield its endpoint URL."""
    with MotoServer(port, startup_timeout=startup_timeout) as server:
        yield server.endpoint


@contextlib.contextmanager
def fake_credentials() -> Iterator[None]:
    """Only the fake credentials in the environment while inside: a profile or endpoint of
    the caller's must not redirect a benchmark, and the real chain is never asked."""
    saved = {key: os.environ.pop(key, None) for key in (*FAKE_CREDENTIALS, *_UNSET)}
    os.environ.update(FAKE_CREDENTIALS)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class MotoServer:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` as a subprocess."""

    def __init__(self, port: int | None = None, *, startup_timeout: float = 30.0) -> None:
        self._chosen_port = port
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> MotoServer:
        # moto.server's own main(), minus two costs per request that a 10,000-object
        # publish should not pay: werkzeug's access-log line, and moto listing and
        # stat-ing its ~170 backend folders to route each request by host (a third of the
        # server's CPU); the folder list is fixed for the life of the process.
        launcher = (
            "import functools, logging, sys; "
            "logging.getLogger('werkzeug').setLevel(logging.WARNING); "
            "from moto import backends; "
            "backends.list_of_moto_modules = functools.cache("
            "lambda listed=backends.list_of_moto_modules: tuple(listed())); "
            "from moto.server import main; main(sys.argv[1:])"
        )
        # A free port can be taken by another process between free_port() and the server's
        # bind (tests running in parallel start servers too): then try another one.
        for attempt in range(_BIND_ATTEMPTS):
            self._log = tempfile.TemporaryFile()
            self._proc = subprocess.Popen(
                [sys.executable, "-c", launcher, "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            try:
                _wait_until_up(self._proc, self.endpoint, self._log, self.startup_timeout)
                return self
            except _PortTaken:
                self.__exit__()
                if self._chosen_port is not None or attempt + 1 == _BIND_ATTEMPTS:
                    raise RuntimeError(f"moto server: port {self.port} is in use") from None
                self.port = free_port()
                self.endpoint = f"http://127.0.0.1:{self.port}"
            except BaseException:
                self.__exit__()
                raise
        raise AssertionError("unreachable")

    def __exit__(self, *exc: object) -> None:
        if self._proc is not None:
            self._proc.terminate()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
                self._proc.wait()
            self._proc = None
        if self._log is not None:
            self._log.close()
            self._log = None

    def cpu_seconds(self) -> float | None:
        """CPU time the server has used so far (Linux /proc), to tell its share from ours."""
        if self._proc is None:
            return None
        try:
            stat = Path(f"/proc/{self._proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            return None
        return (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")


_BIND_ATTEMPTS = 5


class _PortTaken(RuntimeError):
    pass


def _wait_until_up(
    proc: subprocess.Popen[bytes], endpoint: str, log: Any, startup_timeout: float
) -> None:
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read()[-2000:].decode("utf-8", "replace")
            if "Address already in use" in tail:
                raise _PortTaken(tail)
            raise RuntimeError(f"moto server exited with {proc.returncode}: {tail}")
        try:
            with urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=1):
                return
        except (urllib.error.URLError, OSError):
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"moto server did not answer on {endpoint} within {startup_timeout} s"
                ) from None
            time.sleep(0.1)
