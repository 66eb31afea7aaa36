"""The S3 fixtures the publishing tests share (registered in conftest.py through
``pytest_plugins``): one moto server per module, an isolated AWS environment, a fresh bucket,
and fault-injecting proxies in front of the server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from bench.motoserver import moto_server
from publish_support import FaultProxy, isolate_aws, s3


@pytest.fixture(scope="module")
def s3_server() -> Iterator[str]:
    """moto's standalone S3 server in a subprocess on a free loopback port (one per module)."""
    with moto_server() as endpoint:
        yield endpoint


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, str]:
    return isolate_aws(monkeypatch, tmp_path)


# Bucket names unique within a session; each module's server starts empty anyway.
_bucket_counter = iter(range(10_000))


@pytest.fixture
def bucket(s3_server: str, aws_env: dict[str, str]) -> str:
    """A fresh, empty bucket on the shared server."""
    name = f"site-{next(_bucket_counter)}"
    s3(s3_server).create_bucket(Bucket=name)
    return name


@pytest.fixture
def make_proxy(s3_server: str) -> Iterator[Callable[..., FaultProxy]]:
    proxies: list[FaultProxy] = []

    def factory(fault: Callable[[str, str, int], str | None] = lambda m, p, a: None) -> FaultProxy:
        proxy = FaultProxy(s3_server, fault)
        proxies.append(proxy)
        return proxy

    yield factory
    for proxy in proxies:
        proxy.close()
