"""Benchmark publishing: a synthetic out folder of N small pages to a local S3 server.

Why: the ml-latest-small site is about 10,000 small objects, and per-request overhead, not
bandwidth, decides how long an upload takes. This measures the first upload and the re-run
of the same run (which must upload nothing: the idempotence that makes retries cheap),
against moto's standalone S3 server on loopback, so it needs no cloud account.

    python -m job bench-publish [--objects N]
    python -m job.publish_bench [--objects N]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from job.errors import PublishError

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


class MotoServer:
    """``python -m moto.server -H 127.0.0.1 -p PORT`` as a subprocess, for tests and benchmarks.

    A real HTTP server in its own process, so the client side (boto3, retries, connections,
    the transfer manager's threads) runs exactly as against a real store.
    """

    def __init__(self, port: int | None = None, *, startup_timeout: float = 30.0) -> None:
        self.port = port or free_port()
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.startup_timeout = startup_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> MotoServer:
        # moto.server's own main(), minus werkzeug's line per request: formatting and
        # writing 10,000 access-log lines is CPU the benchmark should not pay.
        launcher = (
            "import logging, sys; logging.getLogger('werkzeug').setLevel(logging.WARNING); "
            "from moto.server import main; main(sys.argv[1:])"
        )
        self._log = tempfile.TemporaryFile()
        self._proc = subprocess.Popen(
            [sys.executable, "-c", launcher, "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        try:
            _wait_until_up(self._proc, self.endpoint, self._log, self.startup_timeout)
        except BaseException:
            self.__exit__()
            raise
        return self

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


def _wait_until_up(
    proc: subprocess.Popen[bytes], endpoint: str, log: Any, startup_timeout: float
) -> None:
    deadline = time.monotonic() + startup_timeout
    while True:
        if proc.poll() is not None:
            log.seek(0)
            tail = log.read()[-2000:].decode("utf-8", "replace")
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


def make_synthetic_out(
    root: Path, n_objects: int, run_id: str = "20260101T000000Z-bench000"
) -> Path:
    """An out folder with ``n_objects`` published files: mostly small user and movie pages.

    Page sizes (1-3 KB) are those of the real site's per-user pages; the handful of fixed
    files (run.json, the database, css, js) count towards ``n_objects``.
    """
    if n_objects < 5:
        raise ValueError(f"n_objects must be at least 5 (got {n_objects})")
    out = root / "out"
    site = out / "site"
    for sub in ("users", "movies", "static"):
        (site / sub).mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps({"run_id": run_id, "bench": True}) + "\n")
    (out / "recommendations.duckdb").write_bytes(os.urandom(64 * 1024))
    (site / "static" / "style.css").write_text("body { font-family: sans-serif; }\n")
    (site / "static" / "app.js").write_text("document.documentElement.dataset.ok = '1';\n")
    (site / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>bench</title>'
        '<link rel="stylesheet" href="static/style.css"></head><body>'
        '<a href="users/1.html">user 1</a></body></html>\n'
    )
    pages = n_objects - 5
    filler = "<li>A movie title (1999) ★★★★☆</li>\n"
    for i in range(1, pages + 1):
        folder = "users" if i % 2 else "movies"
        body = filler * (20 + i % 50)
        (site / folder / f"{i}.html").write_text(
            f'<!doctype html><html><head><meta charset="utf-8"><title>{folder} {i}</title>'
            f'<link rel="stylesheet" href="../static/style.css"></head><body><ul>\n{body}'
            "</ul></body></html>\n",
            encoding="utf-8",
        )
    return out


def bench_publish(n_objects: int = 10_000, *, max_concurrency: int = 32) -> dict[str, Any]:
    """Publish a synthetic run of ``n_objects`` to a local moto server, then publish it again.

    Returns:
        objects, bytes, first_seconds, first_objects_per_s, rerun_seconds, rerun_uploaded
        (0: nothing is sent again), the client's and the server's CPU seconds for each, and
        the machine's CPU count and load average (the server and the client share it).
    """
    from job.publish import publish

    # Only the fake credentials: a profile or endpoint of the caller's must not redirect this.
    saved = {key: os.environ.pop(key, None) for key in (*FAKE_CREDENTIALS, *_UNSET)}
    os.environ.update(FAKE_CREDENTIALS)
    cpu: dict[str, float | None] = {}
    try:
        with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
            out = make_synthetic_out(Path(tmp), n_objects)
            with MotoServer() as server:
                import boto3

                bucket = "bench-publish"
                boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
                target = f"s3://{bucket}/site"
                runs = []
                for label in ("first", "rerun"):
                    client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
                    runs.append(
                        publish(
                            out,
                            target,
                            endpoint_url=server.endpoint,
                            max_concurrency=max_concurrency,
                        )
                    )
                    cpu[f"{label}_client_cpu_s"] = round(time.process_time() - client_cpu, 1)
                    after = server.cpu_seconds()
                    cpu[f"{label}_server_cpu_s"] = (
                        round(after - server_cpu, 1)
                        if after is not None and server_cpu is not None
                        else None
                    )
                first, rerun = runs
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    result: dict[str, Any] = {
        "objects": first.objects,
        "bytes": first.bytes_total,
        "first_seconds": round(first.seconds, 2),
        "first_uploaded": first.uploaded,
        "first_bytes_uploaded": first.bytes_uploaded,
        "first_objects_per_s": round(first.objects / max(first.seconds, 1e-9), 1),
        "rerun_seconds": round(rerun.seconds, 2),
        "rerun_uploaded": rerun.uploaded,
        "rerun_bytes_uploaded": rerun.bytes_uploaded,
        "url": first.url,
        "cpu_count": os.cpu_count(),
        "load_average": round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None,
        **cpu,
    }
    print(format_table(result))
    return result


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a small fixed-width table."""
    objects = result["objects"]
    rows = [
        (
            "publish",
            "objects",
            "uploaded",
            "MB sent",
            "seconds",
            "objects/s",
            "CPU s client",
            "CPU s server",
        ),
    ]
    for label, key in (("first", "first"), ("re-run", "rerun")):
        seconds = result[f"{key}_seconds"]
        server_cpu = result.get(f"{key}_server_cpu_s")
        rows.append(
            (
                label,
                str(objects),
                str(result[f"{key}_uploaded"]),
                f"{result[f'{key}_bytes_uploaded'] / 1e6:.1f}",
                f"{seconds:.2f}",
                f"{objects / max(seconds, 1e-9):.0f}",
                f"{result.get(f'{key}_client_cpu_s', 0):.1f}",
                "-" if server_cpu is None else f"{server_cpu:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    machine = f"({result.get('cpu_count')} CPUs, load average {result.get('load_average')})"
    return (
        machine
        + "\n"
        + "\n".join(
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
            for r in rows
        )
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m job.publish_bench [--objects N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m job.publish_bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--objects",
        type=int,
        default=10_000,
        help="objects in the synthetic run (default: %(default)s)",
    )
    parser.add_argument(
        "--concurrency", type=int, default=32, help="parallel uploads (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    try:
        bench_publish(args.objects, max_concurrency=args.concurrency)
    except PublishError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
