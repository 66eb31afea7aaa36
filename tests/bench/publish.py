"""Benchmark publishing: a synthetic out folder of N small pages to a local S3 server.

Why: the ml-latest-small site is about 10,000 small objects, and per-request overhead, not
bandwidth, decides how long an upload takes. This measures the first upload and the re-run
of the same run (which must send nothing: the idempotence that makes retries cheap),
against moto's standalone S3 server on loopback, so it needs no cloud account.

    python -m bench publish [--objects N]
    python -m bench.publish [--objects N]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.motoserver import MotoServer, fake_credentials
from job.core.errors import PublishError
from job.publish.core import PublishSummary, publish
from job.publish.runfiles import run_created


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
    _write_placeholder_run(out, run_id)
    (site / "static" / "style.css").write_text("body { font-family: sans-serif; }\n")
    (site / "static" / "app.js").write_text("document.documentElement.dataset.ok = '1';\n")
    (site / "index.html").write_text(
        '<!doctype html><html><head><meta charset="utf-8"><title>bench</title>'
        '<link rel="stylesheet" href="static/style.css"></head><body>'
        f'<p>Run <code>{run_id}</code></p><a href="users/1.html">user 1</a></body></html>\n'
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


def _write_placeholder_run(out: Path, run_id: str) -> None:
    """run.json and recommendations.duckdb of a run that trained nothing, but that
    ``python -m job publish`` takes for a finished run (preflight.require)."""
    import duckdb

    from job.data.movielens import RatingScale
    from job.runfolder.manifest import DatasetInfo, Manifest, ModelInfo, write_manifest

    write_manifest(
        out,
        Manifest(
            run_id=run_id,
            # The time the run id starts with, as train names runs: publishing orders by it.
            created_at=run_created(run_id, None) or "2026-01-01T00:00:00Z",
            dataset=DatasetInfo("bench", "0" * 64, 1, 1, 1, 1, RatingScale(0.5, 5.0, 0.5), {}),
            config={"bench": True},
            model=ModelInfo("bench", 0, [], 0, 0.0),
            history=[],
            versions={},
            metrics={"rows": []},
            training_seconds=0.0,
        ),
    )
    with duckdb.connect(str(out / "recommendations.duckdb")) as con:
        con.execute("CREATE TABLE runs AS SELECT ? AS run_id", [run_id])
        con.execute("CREATE TABLE padding AS SELECT random() AS x FROM range(8192)")


def bench_publish(n_objects: int = 10_000, *, max_concurrency: int = 32) -> dict[str, Any]:
    """Publish a synthetic run of ``n_objects`` to a local moto server, then publish it again.

    Returns:
        objects, bytes, and for the first publish and the re-run: seconds, objects uploaded,
        bytes uploaded, PUT requests (the re-run's must be 0), the client's and the server's
        CPU seconds; and the machine's CPU count and load average (server and client share it).
    """
    result: dict[str, Any] = {}
    with (
        fake_credentials(),
        tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp,
        MotoServer() as server,
    ):
        import boto3

        out = make_synthetic_out(Path(tmp), n_objects)
        bucket = "bench-publish"
        boto3.client("s3", endpoint_url=server.endpoint).create_bucket(Bucket=bucket)
        for label in ("first", "rerun"):
            client_cpu, server_cpu = time.process_time(), server.cpu_seconds()
            summary = publish(
                out,
                f"s3://{bucket}/site",
                endpoint_url=server.endpoint,
                max_concurrency=max_concurrency,
            )
            after = server.cpu_seconds()
            result.update(_figures(label, summary))
            result[f"{label}_client_cpu_s"] = round(time.process_time() - client_cpu, 1)
            result[f"{label}_server_cpu_s"] = (
                None if after is None or server_cpu is None else round(after - server_cpu, 1)
            )
            result.update(objects=summary.objects, bytes=summary.bytes_total, url=summary.url)
    result["cpu_count"] = os.cpu_count()
    result["load_average"] = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    print(format_table(result))
    return result


def _figures(label: str, summary: PublishSummary) -> dict[str, Any]:
    return {
        f"{label}_seconds": round(summary.seconds, 2),
        f"{label}_uploaded": summary.uploaded,
        f"{label}_bytes_uploaded": summary.bytes_uploaded,
        f"{label}_puts": summary.puts,
        f"{label}_objects_per_s": round(summary.objects / max(summary.seconds, 1e-9), 1),
    }


def format_table(result: dict[str, Any]) -> str:
    """The benchmark as a small fixed-width table."""
    header = ("publish", "objects", "uploaded", "PUTs", "MB sent", "seconds", "objects/s")
    rows = [(*header, "CPU s client", "CPU s server")]
    for label, key in (("first", "first"), ("re-run", "rerun")):
        server_cpu = result.get(f"{key}_server_cpu_s")
        rows.append(
            (
                label,
                str(result["objects"]),
                str(result[f"{key}_uploaded"]),
                str(result[f"{key}_puts"]),
                f"{result[f'{key}_bytes_uploaded'] / 1e6:.1f}",
                f"{result[f'{key}_seconds']:.2f}",
                f"{result[f'{key}_objects_per_s']:.0f}",
                f"{result.get(f'{key}_client_cpu_s', 0):.1f}",
                "-" if server_cpu is None else f"{server_cpu:.1f}",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(r, widths, strict=True))
        )
        for r in rows
    ]
    machine = f"({result.get('cpu_count')} CPUs, load average {result.get('load_average')})"
    return "\n".join([machine, *lines])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.publish [--objects N]``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.publish",
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
