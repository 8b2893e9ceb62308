"""deploy/healthcheck.py (the container HEALTHCHECK) against a loopback HTTP server."""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import ModuleType
from typing import Any

import pytest

from core.localredis import free_port
from tests.deploy.deploy_files import ROOT


def load_probe() -> ModuleType:
    spec = importlib.util.spec_from_file_location("parla_healthcheck", ROOT / "deploy" / "healthcheck.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class Health(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/healthz" else 503)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture()
def server_port() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


def test_probe_exit_codes(server_port: int, monkeypatch: pytest.MonkeyPatch) -> None:
    probe = load_probe()
    assert probe.main(["healthcheck.py", f"http://127.0.0.1:{server_port}/healthz"]) == 0
    assert probe.main(["healthcheck.py", f"http://127.0.0.1:{server_port}/broken"]) == 1
    assert probe.main(["healthcheck.py", f"http://127.0.0.1:{free_port()}/healthz"]) == 1
    monkeypatch.setenv("PARLA_PORT", str(server_port))
    assert probe.main(["healthcheck.py"]) == 0
