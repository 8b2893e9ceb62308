"""JSON submissions with ``image_url``: the SSRF guard, one neutral failure, and the allowed path.

Everything runs through the API (TestClient on the test's Redis). Servers are on loopback; a
tripwire refuses any connect to another address, so a broken guard could not leave the host.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from core.localredis import free_port
from core.settings import Settings
from tests.loopback import (
    HOSTILE_HOSTS,
    HOSTILE_REMOTE_URLS,
    CountingListener,
    FileServer,
    Reply,
    TlsFiles,
    make_tls,
)
from tests.media import image_bytes, wav_bytes
from tests.service.conftest import make_app

IMAGE = image_bytes(256, 256)
AUDIO_URI = "data:audio/wav;base64," + base64.b64encode(wav_bytes(1.0)).decode()
NEUTRAL = "could not fetch `image_url`"


pytestmark = pytest.mark.usefixtures("outside_attempts")  # tests/conftest.py: loopback only


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture()
def trusted_ca(tls: TlsFiles, monkeypatch: pytest.MonkeyPatch) -> TlsFiles:
    """The test CA as the process's trust store (the guard builds its TLS context as httpx does)."""
    monkeypatch.setenv("SSL_CERT_FILE", str(tls.ca))
    return tls


@pytest.fixture()
def https_server(tls: TlsFiles) -> Iterator[FileServer]:
    with FileServer(tls.server_context()) as server:
        server.replies["/portrait.png"] = Reply(200, IMAGE)
        server.replies["/moved"] = Reply(302, headers={"location": "/portrait.png"})
        yield server


@pytest.fixture()
def listener() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


def api(settings: Settings, **overrides: Any) -> TestClient:
    return TestClient(make_app(settings.model_copy(update=overrides)), raise_server_exceptions=False)


def submit_url(client: TestClient, image_url: str) -> Any:
    return client.post("/v1/videos", json={"image_url": image_url, "audio_url": AUDIO_URI})


def refused_with(response: Any, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code, error
    message: str = error["message"]
    return message


@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_hosts_are_refused_without_a_connection(
    settings: Settings, listener: CountingListener, host: str
) -> None:
    with api(settings) as client:
        response = submit_url(client, f"https://{host}:{listener.port}/portrait.png")
        assert refused_with(response, 422, "url_fetch_failed") == NEUTRAL
        assert client.get("/v1/videos").json()["data"] == []
    assert listener.accepted == 0


@pytest.mark.parametrize("url", HOSTILE_REMOTE_URLS)
def test_private_addresses_off_the_host_are_refused_before_connecting(settings: Settings, url: str) -> None:
    with api(settings) as client:
        assert refused_with(submit_url(client, url), 422, "url_fetch_failed") == NEUTRAL


def test_a_name_resolving_to_loopback_is_refused_even_with_a_server_behind_it(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles
) -> None:
    with api(settings) as client:
        response = submit_url(client, f"https://localhost:{https_server.port}/portrait.png")
    assert refused_with(response, 422, "url_fetch_failed") == NEUTRAL
    assert https_server.requests == [] and https_server.sni_names == []


def test_one_message_whatever_went_wrong(
    settings: Settings,
    https_server: FileServer,
    trusted_ca: TlsFiles,
    listener: CountingListener,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_getaddrinfo = socket.getaddrinfo

    def resolver(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host == "nowhere.test":
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real_getaddrinfo(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    port = https_server.port
    with FileServer() as plain_http:  # TLS spoken to a plain HTTP server
        failures = {
            "refused port": f"https://localhost:{free_port()}/portrait.png",
            "not found": f"https://localhost:{port}/missing.png",
            "redirect": f"https://localhost:{port}/moved",
            "certificate for another name": f"https://127.0.0.1:{port}/portrait.png",
            "not TLS": f"https://localhost:{plain_http.port}/portrait.png",
            "no such name": "https://nowhere.test/portrait.png",
            "connection dropped": f"https://localhost:{listener.port}/portrait.png",
        }
        messages: dict[str, str] = {}
        with api(settings, fetch_allow_private_networks=True, fetch_timeout_s=5.0) as client:
            for case, url in failures.items():
                messages[case] = refused_with(submit_url(client, url), 422, "url_fetch_failed")
        with api(settings) as client:  # and the guard's own refusal, on a server that works
            messages["blocked"] = refused_with(
                submit_url(client, f"https://localhost:{port}/portrait.png"), 422, "url_fetch_failed"
            )
    assert set(messages.values()) == {NEUTRAL}, messages
    # The redirect was answered, not followed.
    assert [seen.path for seen in https_server.requests].count("/portrait.png") == 0


def test_credentials_in_the_url_are_invalid_and_nothing_is_sent(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles
) -> None:
    with api(settings, fetch_allow_private_networks=True) as client:
        for userinfo in ("user:pass@", "user@", "token:@"):
            url = f"https://{userinfo}localhost:{https_server.port}/portrait.png"
            message = refused_with(submit_url(client, url), 422, "invalid_url")
            assert "credentials" in message and "pass" not in message
    assert https_server.requests == [] and https_server.sni_names == []


@pytest.mark.parametrize(
    "url",
    ["http://localhost/portrait.png", "ftp://localhost/x", "https:///portrait.png", "https://0177.0.0.1/"],
)
def test_malformed_or_non_https_urls_are_invalid(settings: Settings, url: str) -> None:
    with api(settings, fetch_allow_private_networks=True) as client:
        refused_with(submit_url(client, url), 422, "invalid_url")


def test_allowed_private_fetch_works_end_to_end_with_the_host_name_kept(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles
) -> None:
    url = f"https://localhost:{https_server.port}/portrait.png?token=abc#ignored"
    with api(settings, fetch_allow_private_networks=True) as client:
        response = submit_url(client, url)
        assert response.status_code == 202, response.text
        job = response.json()
        assert client.get(f"/v1/videos/{job['id']}").json()["status"] == "queued"
    assert [(seen.path, seen.host) for seen in https_server.requests] == [
        ("/portrait.png?token=abc", f"localhost:{https_server.port}")
    ]
    assert https_server.sni_names == ["localhost"]


def test_the_failure_is_logged_with_the_host_but_not_the_url(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles, caplog: pytest.LogCaptureFixture
) -> None:
    with api(settings, fetch_allow_private_networks=True) as client:
        submit_url(client, f"https://localhost:{https_server.port}/missing.png?token=s3cret")
    logged = "\n".join(record.getMessage() for record in caplog.records if record.name == "service.inputs")
    assert "localhost" in logged and "HTTP 404" in logged
    assert "s3cret" not in logged and "missing.png" not in logged


def test_a_body_over_the_limit_is_413(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles
) -> None:
    https_server.replies["/huge.png"] = Reply(200, b"\0" * (settings.max_image_bytes + 1))
    with api(settings, fetch_allow_private_networks=True) as client:
        response = submit_url(client, f"https://localhost:{https_server.port}/huge.png")
    refused_with(response, 413, "image_too_large")


def test_a_slow_drip_is_cut_at_the_fetch_timeout(
    settings: Settings, https_server: FileServer, trusted_ca: TlsFiles
) -> None:
    # Each byte arrives well within the per-read timeout; only the whole-download cap stops it.
    https_server.replies["/drip.png"] = Reply(200, IMAGE[:40], drip_s=0.2)  # 8 s in all
    with api(settings, fetch_allow_private_networks=True, fetch_timeout_s=1.5) as client:
        started = time.monotonic()
        response = submit_url(client, f"https://localhost:{https_server.port}/drip.png")
        elapsed = time.monotonic() - started
    assert refused_with(response, 422, "url_fetch_failed") == NEUTRAL
    assert 1.4 < elapsed < 5.0, elapsed
