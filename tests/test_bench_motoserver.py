"""bench.motoserver: moto's standalone S3 server on loopback, and the fake credentials."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

import pytest
from bench.motoserver import FAKE_CREDENTIALS, MotoServer, fake_credentials, moto_server
from publish_support import s3


def test_server_answers_s3_on_loopback_and_its_process_ends_on_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in FAKE_CREDENTIALS.items():
        monkeypatch.setenv(key, value)
    with MotoServer() as server:
        url = urlsplit(server.endpoint)
        assert (url.scheme, url.hostname, url.port) == ("http", "127.0.0.1", server.port)
        client = s3(server.endpoint)
        client.create_bucket(Bucket="probe")
        assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["probe"]
        proc = server._proc
        assert proc is not None and proc.poll() is None
    assert server._proc is None and proc.returncode is not None  # waited for, not left running


def test_moto_server_yields_a_loopback_endpoint() -> None:
    with moto_server() as endpoint:
        url = urlsplit(endpoint)
        assert url.hostname == "127.0.0.1"
        with socket.create_connection((url.hostname, url.port), timeout=10):
            pass


def test_fake_credentials_replace_the_callers_and_are_put_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "someones-real-profile")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAREAL")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with fake_credentials():
        assert "AWS_PROFILE" not in os.environ
        assert {k: os.environ[k] for k in FAKE_CREDENTIALS} == FAKE_CREDENTIALS
    assert os.environ["AWS_PROFILE"] == "someones-real-profile"
    assert os.environ["AWS_ACCESS_KEY_ID"] == "AKIAREAL"
    assert "AWS_ENDPOINT_URL" not in os.environ


def test_a_port_taken_before_the_server_binds_it_is_replaced_by_another(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Another process (a test running in parallel) can take the free port first."""
    from bench import motoserver

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        real_free_port = motoserver.free_port
        monkeypatch.setattr(motoserver, "free_port", lambda: next(ports, None) or real_free_port())
        with MotoServer() as server:
            assert server.port != taken_port
            with socket.create_connection(("127.0.0.1", server.port), timeout=10):
                pass
        with (
            pytest.raises(RuntimeError, match=f"port {taken_port} is in use"),
            MotoServer(taken_port),
        ):
            pass
