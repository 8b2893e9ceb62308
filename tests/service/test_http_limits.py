"""``python -m service`` on a real uvicorn: oversized request heads and slow clients are cut off."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from core.localredis import LocalRedis, free_port

HEAD_TIMEOUT_S = 1.0
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def api_port(redis_server: LocalRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """One API process for the module (these tests do not touch Redis's contents)."""
    tmp_path = tmp_path_factory.mktemp("http-limits")
    port = free_port()
    env = {
        **os.environ,
        "PARLA_REDIS_URL": redis_server.url,
        "PARLA_PORT": str(port),
        "PARLA_ENGINE": "test",
        "PARLA_AUTH_DISABLED": "true",
        "PARLA_FACE_CHECK": "false",
        "PARLA_STORAGE_DIR": str(tmp_path / "storage"),
        "PARLA_HTTP_MAX_HEADER_BYTES": "32768",
        "PARLA_HTTP_HEADER_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "PARLA_HTTP_BODY_TIMEOUT_S": str(HEAD_TIMEOUT_S),
        "PARLA_HTTP_KEEP_ALIVE_S": "1",
    }
    log = (tmp_path / "api.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "service"], env=env, cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "api.log").read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the API did not start"
            time.sleep(0.1)
        yield port
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


def connect(port: int) -> socket.socket:
    return socket.create_connection(("127.0.0.1", port), timeout=5)


def read_until_closed(sock: socket.socket, limit_s: float) -> tuple[bytes, float]:
    """Everything the server sends until it closes the connection, and when it closed it."""
    started, data = time.monotonic(), b""
    sock.settimeout(0.2)
    while time.monotonic() - started < limit_s:
        try:
            block = sock.recv(65536)
        except TimeoutError:
            continue
        except ConnectionResetError:
            break
        if not block:
            break
        data += block
    else:
        raise AssertionError(f"the connection was still open after {limit_s} s")
    return data, time.monotonic() - started


def request_with_header(port: int, value_bytes: int) -> bytes:
    sock = connect(port)
    head = (
        b"GET /healthz HTTP/1.1\r\nHost: t\r\nConnection: close\r\nX-Big: " + b"a" * value_bytes + b"\r\n\r\n"
    )
    with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused while still sending
        sock.sendall(head)
    data, _ = read_until_closed(sock, 10)
    sock.close()
    return data


def test_oversized_request_head_is_refused_not_served(api_port: int) -> None:
    assert request_with_header(api_port, 20_000).startswith(b"HTTP/1.1 200")  # under the limit
    parsed_whole = request_with_header(api_port, 40_000)  # arrives in one read: parsed, then refused
    assert parsed_whole.startswith(b"HTTP/1.1 431") and b"request_header_too_large" in parsed_whole
    streamed = request_with_header(api_port, 1 << 20)  # never buffered whole: the parser gives up
    assert streamed == b"" or streamed.startswith((b"HTTP/1.1 400", b"HTTP/1.1 431")), streamed[:100]


def test_stalled_and_trickling_request_heads_are_disconnected(api_port: int) -> None:
    silent = connect(api_port)  # connects, sends nothing
    halves = [connect(api_port) for _ in range(3)]
    for sock in halves:
        sock.sendall(b"GET /heal")  # half a request line, then nothing
    trickle = connect(api_port)
    started = time.monotonic()
    closed_at = None
    for byte in b"GET /healthz HTTP/1.1\r\nHost: t\r\n":  # one byte every 0.25 s
        try:
            trickle.sendall(bytes([byte]))
        except (BrokenPipeError, ConnectionResetError):
            closed_at = time.monotonic() - started
            break
        time.sleep(0.25)
    assert closed_at is not None and closed_at < HEAD_TIMEOUT_S + 2, "a trickling client was never cut off"
    for sock in [silent, *halves]:
        data, _ = read_until_closed(sock, HEAD_TIMEOUT_S + 3)
        assert data == b""
        sock.close()
    assert time.monotonic() - started >= HEAD_TIMEOUT_S * 0.9  # closed by the timeout, not at once
    trickle.close()
    assert httpx.get(f"http://127.0.0.1:{api_port}/healthz").status_code == 200


def test_idle_keep_alive_connection_is_closed(api_port: int) -> None:
    sock = connect(api_port)
    sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
    data, elapsed = read_until_closed(sock, 5)
    assert data.startswith(b"HTTP/1.1 200") and 0.5 < elapsed < 4
    sock.close()


def test_stalled_request_body_is_408(api_port: int) -> None:
    sock = connect(api_port)
    sock.sendall(
        b"POST /v1/videos HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n"
        b'Content-Length: 1000\r\n\r\n{"image_u'
    )
    data, elapsed = read_until_closed(sock, HEAD_TIMEOUT_S + 5)
    sock.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:200]
    assert b"request_timeout" in data and elapsed >= HEAD_TIMEOUT_S * 0.9
