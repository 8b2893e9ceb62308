"""The outbound-fetch guard: address rules, one lookup, connections only to checked addresses.

Traffic stays on loopback: hostile URLs point at a counting listener on 127.0.0.1/::1, and a
tripwire refuses (and records) any connect to another address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from core import netguard
from core.netguard import (
    BlockedAddress,
    UnsafeURL,
    check_url,
    guarded_async_client,
    guarded_client,
    is_global_address,
    resolve_checked,
)
from tests.loopback import (
    HOSTILE_HOSTS,
    HOSTILE_REMOTE_URLS,
    CountingListener,
    FileServer,
    Reply,
    TlsFiles,
    make_tls,
)

pytestmark = pytest.mark.usefixtures("outside_attempts")  # tests/conftest.py: loopback only


@pytest.fixture()
def listener() -> Iterator[CountingListener]:
    with CountingListener() as counting:
        yield counting


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    return make_tls(tmp_path_factory.mktemp("tls"))


def get(url: str, *, asynchronous: bool, **options: Any) -> httpx.Response:
    """One GET through the sync or the async guarded client."""
    if not asynchronous:
        with guarded_client(timeout_s=5.0, **options) as client:
            return client.get(url)

    async def fetch() -> httpx.Response:
        async with guarded_async_client(timeout_s=5.0, **options) as client:
            return await client.get(url)

    return asyncio.run(fetch())


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.255.254",
        "0.0.0.0",
        "10.0.0.1",
        "172.16.0.1",
        "172.31.255.255",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "192.0.0.8",
        "192.0.2.1",
        "198.18.0.1",
        "203.0.113.9",
        "224.0.0.1",
        "239.255.255.250",
        "240.0.0.1",
        "255.255.255.255",
        "::",
        "::1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::127.0.0.1",  # IPv4-compatible (deprecated)
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "fec0::1",
        "ff02::1",
        "100::1",
        "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 of 169.254.169.254
        "64:ff9b:1::1",
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:c0a8:101::1",  # 6to4 of 192.168.1.1
        "2001::1",  # Teredo
        "2001:db8::1",
    ],
)
def test_non_global_addresses(address: str) -> None:
    assert not is_global_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address",
    [
        "8.8.8.8",
        "1.1.1.1",
        "2606:4700:4700::1111",
        "2001:4860:4860::8888",
        "::ffff:8.8.8.8",
        "64:ff9b::808:808",
    ],
)
def test_global_addresses(address: str) -> None:
    assert is_global_address(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    ("host", "address"),
    [
        ("127.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("localhost", "127.0.0.1"),
        ("0.0.0.0", "0.0.0.0"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("169.254.169.254", "169.254.169.254"),
    ],
)
def test_numeric_and_named_forms_resolve_to_what_they_stand_for(host: str, address: str) -> None:
    with pytest.raises(BlockedAddress) as refused:
        resolve_checked(host, 443, allow_private_networks=False)
    assert refused.value.address == address and refused.value.host == host
    assert address in {
        str(ipaddress.ip_address(a)) for a in resolve_checked(host, 443, allow_private_networks=True)
    }


def test_one_non_global_address_among_public_ones_refuses_the_name(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("8.8.8.8", 443)),
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("2606:4700:4700::1111", 443, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("10.0.0.7", 443)),
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *args, **kwargs: answers)
    with pytest.raises(BlockedAddress) as refused:
        resolve_checked("mixed.test", 443, allow_private_networks=False)
    assert refused.value.address == "10.0.0.7"
    assert resolve_checked("mixed.test", 443, allow_private_networks=True) == [
        "8.8.8.8",
        "2606:4700:4700::1111",
        "10.0.0.7",
    ]


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("https://user:pass@example.com/a.png", "credentials"),
        ("https://user@example.com/a.png", "credentials"),
        ("https:///a.png", "no host"),
        ("http://example.com/a.png", "scheme"),
        ("file:///etc/passwd", "scheme"),
        ("gopher://127.0.0.1:6379/_INFO", "scheme"),
        ("https://0177.0.0.1/", "not a valid URL"),
    ],
)
def test_check_url_refusals(url: str, problem: str) -> None:
    with pytest.raises(UnsafeURL, match=problem):
        check_url(url, schemes={"https"})


def test_check_url_accepts_fragments_and_queries() -> None:
    parsed = check_url("https://example.com/a.png?token=x#part", schemes={"https"})
    assert parsed.host == "example.com" and parsed.query == b"token=x"


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("host", HOSTILE_HOSTS)
def test_hostile_hosts_are_refused_without_a_connection(
    host: str, asynchronous: bool, listener: CountingListener
) -> None:
    for scheme in ("https", "http"):
        with pytest.raises(BlockedAddress):
            get(f"{scheme}://{host}:{listener.port}/x", asynchronous=asynchronous)
    assert listener.accepted == 0


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
@pytest.mark.parametrize("url", HOSTILE_REMOTE_URLS)
def test_private_remote_addresses_are_refused_before_connecting(url: str, asynchronous: bool) -> None:
    with pytest.raises(BlockedAddress):
        get(url, asynchronous=asynchronous)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_a_rebinding_name_is_looked_up_once_and_connected_to_the_checked_address(
    asynchronous: bool,
    listener: CountingListener,
    outside_attempts: list[Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_getaddrinfo = socket.getaddrinfo
    lookups: list[str] = []

    def rebinding(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "rebind.test":
            return real_getaddrinfo(host, port, *args, **kwargs)
        lookups.append(host)
        # First answer public (passes the check), every later one loopback (the attack).
        address = "8.8.8.8" if len(lookups) == 1 else "127.0.0.1"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port))]

    monkeypatch.setattr(socket, "getaddrinfo", rebinding)
    with pytest.raises(httpx.ConnectError):
        get(f"https://rebind.test:{listener.port}/x", asynchronous=asynchronous)
    assert lookups == ["rebind.test"]
    # The one connect went to the checked address (the tripwire refused it), never to loopback.
    assert [attempt[0] for attempt in outside_attempts] == ["8.8.8.8"]
    assert listener.accepted == 0
    outside_attempts.clear()


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_https_keeps_the_host_name_for_sni_host_header_and_certificate(
    asynchronous: bool, tls: TlsFiles
) -> None:
    with FileServer(tls.server_context()) as server:
        server.replies["/portrait.png"] = Reply(200, b"png bytes")
        url = f"https://localhost:{server.port}/portrait.png"
        with pytest.raises(BlockedAddress):
            get(url, asynchronous=asynchronous, ssl_context=tls.client_context())
        assert server.requests == []
        response = get(
            url, asynchronous=asynchronous, allow_private_networks=True, ssl_context=tls.client_context()
        )
        assert response.status_code == 200 and response.content == b"png bytes"
        assert server.sni_names == ["localhost"]
        assert [seen.host for seen in server.requests] == [f"localhost:{server.port}"]
        # The certificate names localhost only: by address, verification must fail.
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            get(
                f"https://127.0.0.1:{server.port}/portrait.png",
                asynchronous=asynchronous,
                allow_private_networks=True,
                ssl_context=tls.client_context(),
            )
        assert len(server.requests) == 1


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_redirects_are_answers_not_followed(asynchronous: bool) -> None:
    with FileServer() as server:
        server.replies["/moved"] = Reply(302, headers={"location": "/target"})
        response = get(
            f"http://127.0.0.1:{server.port}/moved", asynchronous=asynchronous, allow_private_networks=True
        )
    assert response.status_code == 302 and [seen.path for seen in server.requests] == ["/moved"]


def test_a_name_that_does_not_resolve_is_a_connect_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def unknown(*args: Any, **kwargs: Any) -> Any:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(socket, "getaddrinfo", unknown)
    for asynchronous in (False, True):
        with pytest.raises(httpx.ConnectError, match="not known"):
            get("https://nowhere.test/x", asynchronous=asynchronous)


@pytest.mark.parametrize("asynchronous", [False, True], ids=["sync", "async"])
def test_the_guard_ignores_proxy_settings_in_the_environment(
    asynchronous: bool, monkeypatch: pytest.MonkeyPatch, listener: CountingListener
) -> None:
    # Through a proxy, the address checked would be the proxy's, not the target's.
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.setenv(name, f"http://127.0.0.1:{listener.port}")
    with FileServer() as server:
        server.replies["/x"] = Reply(200, b"direct")
        response = get(
            f"http://localhost:{server.port}/x", asynchronous=asynchronous, allow_private_networks=True
        )
    assert response.content == b"direct" and listener.accepted == 0


def test_the_transport_refuses_to_run_unguarded_on_an_unexpected_httpx(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(httpx.HTTPTransport, "__init__", lambda self, **kwargs: None)
    with pytest.raises(RuntimeError, match="pin httpx"):
        netguard.GuardedTransport(allow_private_networks=False)
