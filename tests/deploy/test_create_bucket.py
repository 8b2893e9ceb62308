"""deploy/create_bucket.py (compose's s3-init) against moto's S3 server and hostile loopback servers."""

from __future__ import annotations

import importlib.util
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import boto3
import pytest

from core.localredis import free_port
from core.settings import Settings
from tests.deploy.deploy_files import ROOT


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("parla_create_bucket", ROOT / "deploy" / "create_bucket.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def s3_settings(endpoint_url: str, bucket: str = "parla-test") -> Settings:
    return Settings(storage="s3", s3_bucket=bucket, s3_endpoint_url=endpoint_url, s3_region="us-east-1")


@pytest.fixture()
def aws_keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")


class Answer(BaseHTTPRequestHandler):
    """Answers every request with the server's ``status`` and counts requests."""

    def handle_any(self) -> None:
        server: Any = self.server
        server.requests += 1
        self.send_response(server.status)
        self.send_header("content-length", "0")
        self.end_headers()

    do_HEAD = do_GET = do_PUT = handle_any

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def answering() -> Iterator[Any]:
    """A loopback HTTP server whose ``status`` a test sets: an S3 server that refuses or is not up."""
    server: Any = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    server.requests, server.status = 0, 503
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.mark.usefixtures("aws_keys")
def test_creates_a_missing_bucket_once(s3_server: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    script = load_script()
    settings = s3_settings(s3_server["endpoint_url"], bucket="created-by-init")
    assert script.main(["--timeout-s", "10"], settings=settings) == 0
    assert "created" in capsys.readouterr().out
    assert script.main(["--timeout-s", "10"], settings=settings) == 0  # idempotent: compose reruns it
    assert "already there" in capsys.readouterr().out
    client = boto3.client("s3", **s3_server)
    assert "created-by-init" in {bucket["Name"] for bucket in client.list_buckets()["Buckets"]}


@pytest.mark.usefixtures("aws_keys")
def test_a_refusal_fails_at_once(answering: Any, capsys: pytest.CaptureFixture[str]) -> None:
    answering.status = 403  # bad credentials: waiting does not help
    script = load_script()
    started = time.monotonic()
    code = script.main(
        ["--timeout-s", "30", "--retry-interval-s", "0.1"],
        settings=s3_settings(f"http://127.0.0.1:{answering.server_port}"),
    )
    assert code == 1
    assert time.monotonic() - started < 5 and answering.requests == 1
    assert "refused" in capsys.readouterr().err


@pytest.mark.usefixtures("aws_keys")
def test_a_server_that_is_not_up_is_retried_until_the_timeout(
    answering: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    script = load_script()
    started = time.monotonic()
    code = script.main(
        ["--timeout-s", "1.5", "--retry-interval-s", "0.2"],
        settings=s3_settings(f"http://127.0.0.1:{answering.server_port}"),
    )
    elapsed = time.monotonic() - started
    assert code == 1
    assert 1.5 - 0.2 <= elapsed < 6, elapsed
    assert answering.requests >= 5  # one HEAD per attempt: it kept trying
    assert "not reachable after 1.5 s" in capsys.readouterr().err


@pytest.mark.usefixtures("aws_keys")
def test_nothing_listening_is_retried_then_fails() -> None:
    script = load_script()
    started = time.monotonic()
    code = script.main(
        ["--timeout-s", "1", "--retry-interval-s", "0.2"],
        settings=s3_settings(f"http://127.0.0.1:{free_port()}"),
    )
    assert code == 1 and 1 - 0.2 <= time.monotonic() - started < 6


def test_refuses_local_storage(capsys: pytest.CaptureFixture[str]) -> None:
    assert load_script().main([], settings=Settings(storage="local")) == 1
    assert "not 's3'" in capsys.readouterr().err
