"""Outbound HTTP that cannot be aimed at the server's own networks (server-side request forgery guard).

Every fetch Parla makes on a client's behalf (``image_url``/``audio_url``/``driving_video_url`` at
submit time, webhook deliveries) goes through a client from ``guarded_client`` or
``guarded_async_client``. The guard sits where the connection is opened, inside the HTTP
transport: the host name httpx is about to connect to is resolved once, every address it resolves
to must be global (``is_global_address``), and the socket is then opened to one of exactly those
addresses. No second lookup happens, so a name that answers with a public address for the check
and with 127.0.0.1 for the connection (DNS rebinding) gets nowhere. Because httpx still sees the
original URL, the ``Host`` header, TLS SNI and certificate verification all use the host name.

Numeric forms that look odd (``127.1``, ``2130706433``, ``0x7f000001``) are IPv4 literals to
``getaddrinfo`` and are checked as the address they stand for; IPv4 addresses embedded in IPv6
(``::ffff:127.0.0.1``, 6to4, NAT64) are checked as the IPv4 address.

The clients follow no redirects, ignore proxy and ``.netrc`` settings in the environment (a
proxy would make the checked address the proxy's), and refuse Unix sockets. CA certificates come
from certifi, or from ``SSL_CERT_FILE``/``SSL_CERT_DIR`` when set, as with a plain httpx client.
"""

from __future__ import annotations

import functools
import ipaddress
import socket
import ssl
from collections.abc import Collection, Iterable, Mapping
from typing import Any, Final

import anyio
import anyio.to_thread
import httpcore
import httpx

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# IANA special-purpose registries, written out rather than left to ``ipaddress.is_global``,
# whose answers differ between Python versions (3.11 calls multicast and ::/96 global).
_NON_GLOBAL_IPV4: Final = tuple(
    ipaddress.IPv4Network(network)
    for network in (
        "0.0.0.0/8",  # "this network"; connecting to 0.0.0.0 reaches the local host
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services (169.254.169.254)
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",
        "192.88.99.0/24",  # 6to4 relay anycast
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and 255.255.255.255
    )
)
_GLOBAL_UNICAST_IPV6: Final = ipaddress.IPv6Network("2000::/3")
"""All of today's global IPv6 unicast; outside it lie ::1, ::, fc00::/7, fe80::/10, ff00::/8, ..."""
_NON_GLOBAL_IPV6: Final = tuple(
    ipaddress.IPv6Network(network)
    for network in (
        "2001::/23",  # IETF protocol assignments, Teredo among them
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
    )
)
_NAT64: Final = ipaddress.IPv6Network("64:ff9b::/96")


class UnsafeURL(ValueError):
    """A URL refused before any lookup: its scheme, credentials in it, or no host."""


class BlockedAddress(Exception):
    """The host resolved to an address that is not global; nothing was sent.

    Attributes:
        host: the host name (or literal) of the URL.
        address: the first non-global address it resolved to.
    """

    def __init__(self, host: str, address: str) -> None:
        super().__init__(f"{host} resolves to the non-global address {address}")
        self.host = host
        self.address = address


def check_url(url: str, *, schemes: Collection[str]) -> httpx.URL:
    """Parse ``url`` as the request will and refuse what must never be sent.

    Args:
        url: the URL as the client gave it.
        schemes: the schemes allowed (lower case), e.g. ``{"https"}``.

    Returns:
        The parsed URL.

    Raises:
        UnsafeURL: unparsable, a scheme not in ``schemes``, credentials (``user:pass@``, which
            httpx would send as ``Authorization: Basic``), or no host.
    """
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, UnicodeError) as exc:
        raise UnsafeURL(f"not a valid URL: {exc}") from None
    if parsed.scheme not in schemes:
        raise UnsafeURL(f"the scheme must be one of {sorted(schemes)}")
    if parsed.userinfo:
        raise UnsafeURL("credentials in the URL are not accepted")
    if not parsed.host:
        raise UnsafeURL("the URL has no host")
    return parsed


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (IPv4-mapped, 6to4, NAT64 64:ff9b::/96), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return None


def is_global_address(address: IPAddress) -> bool:
    """Whether ``address`` is publicly routable unicast: not loopback, private, link-local,
    unspecified, shared, multicast, reserved or documentation, nor an IPv6 form of such an IPv4."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = embedded_ipv4(address)
        if embedded is not None:
            return is_global_address(embedded)
        if address not in _GLOBAL_UNICAST_IPV6 or any(address in net for net in _NON_GLOBAL_IPV6):
            return False
    elif any(address in net for net in _NON_GLOBAL_IPV4):
        return False
    return address.is_global and not address.is_multicast


def resolve_checked(host: str, port: int, *, allow_private_networks: bool) -> list[str]:
    """Resolve ``host`` once; refuse it if any of its addresses is not global.

    Args:
        host: a name or an IP literal (as httpx hands it to the connection).
        port: the TCP port.
        allow_private_networks: skip the address check (the operator's choice).

    Returns:
        The numeric addresses to connect to, in resolver order, without duplicates.

    Raises:
        BlockedAddress: an address is not global and private networks are not allowed.
        OSError: the name does not resolve (``socket.gaierror``) or resolves to no IP address.
    """
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise OSError(f"cannot resolve {host!r}: {exc}") from None
    addresses: list[str] = []
    for family, _type, _proto, _name, sockaddr in infos:
        if family not in (socket.AF_INET, socket.AF_INET6):
            continue
        numeric = str(sockaddr[0])
        address = ipaddress.ip_address(numeric.split("%", 1)[0])
        if not allow_private_networks and not is_global_address(address):
            raise BlockedAddress(host, str(address))
        if numeric not in addresses:
            addresses.append(numeric)
    if not addresses:
        raise OSError(f"{host!r} resolves to no IP address")
    return addresses


class GuardedBackend(httpcore.NetworkBackend):
    """httpcore's network backend with the address check: connects only to checked addresses."""

    def __init__(self, *, allow_private_networks: bool, inner: httpcore.NetworkBackend | None = None) -> None:
        self.allow_private_networks = allow_private_networks
        self._inner = inner or httpcore.SyncBackend()

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.NetworkStream:
        try:
            addresses = resolve_checked(host, port, allow_private_networks=self.allow_private_networks)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: httpcore.ConnectError | None = None
        for address in addresses:  # numeric: the inner backend does no lookup of its own
            try:
                return self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("Unix sockets are not reachable through the address guard")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


class AsyncGuardedBackend(httpcore.AsyncNetworkBackend):
    """The async twin of ``GuardedBackend`` (the lookup runs in a worker thread)."""

    def __init__(
        self, *, allow_private_networks: bool, inner: httpcore.AsyncNetworkBackend | None = None
    ) -> None:
        self.allow_private_networks = allow_private_networks
        self._inner = inner or httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        lookup = functools.partial(
            resolve_checked, host, port, allow_private_networks=self.allow_private_networks
        )
        try:
            with anyio.fail_after(timeout):  # a hung resolver counts against the connect timeout
                addresses = await anyio.to_thread.run_sync(lookup, abandon_on_cancel=True)
        except TimeoutError as exc:
            raise httpcore.ConnectTimeout(f"resolving {host} timed out") from exc
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: httpcore.ConnectError | None = None
        for address in addresses:
            try:
                return await self._inner.connect_tcp(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                error = exc
        assert error is not None
        raise error

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("Unix sockets are not reachable through the address guard")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


def _pool_options(ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    # httpx's default limits; the trust store as a plain httpx client would build it.
    return {
        "ssl_context": ssl_context or httpx.create_ssl_context(),
        "max_connections": 100,
        "max_keepalive_connections": 20,
        "keepalive_expiry": 5.0,
    }


class GuardedTransport(httpx.HTTPTransport):
    """``httpx.HTTPTransport`` whose connection pool opens sockets through ``GuardedBackend``."""

    def __init__(self, *, allow_private_networks: bool, ssl_context: ssl.SSLContext | None = None) -> None:
        options = _pool_options(ssl_context)
        super().__init__(verify=options["ssl_context"], trust_env=False)
        _expect_pool(self, httpcore.ConnectionPool)
        self._pool = httpcore.ConnectionPool(
            **options, network_backend=GuardedBackend(allow_private_networks=allow_private_networks)
        )


class AsyncGuardedTransport(httpx.AsyncHTTPTransport):
    """``httpx.AsyncHTTPTransport`` whose connection pool opens sockets through ``AsyncGuardedBackend``."""

    def __init__(self, *, allow_private_networks: bool, ssl_context: ssl.SSLContext | None = None) -> None:
        options = _pool_options(ssl_context)
        super().__init__(verify=options["ssl_context"], trust_env=False)
        _expect_pool(self, httpcore.AsyncConnectionPool)
        self._pool = httpcore.AsyncConnectionPool(
            **options, network_backend=AsyncGuardedBackend(allow_private_networks=allow_private_networks)
        )


def _expect_pool(transport: object, pool_type: type) -> None:
    # The pool is an httpx internal; if a new httpx moves it, fail here rather than fetch unguarded.
    if not isinstance(getattr(transport, "_pool", None), pool_type):
        raise RuntimeError(f"this httpx version has no {pool_type.__name__} to guard; pin httpx")


def guarded_client(
    *,
    allow_private_networks: bool = False,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.Client:
    """A sync ``httpx.Client`` that connects only to checked addresses and follows no redirects.

    Args:
        allow_private_networks: also connect to loopback/private/link-local addresses.
        timeout_s: httpx timeout of each connect, read and write.
        ssl_context: trust store and TLS settings (tests pass their own CA); default as httpx.
        headers: default request headers (a ``User-Agent``, say).
    """
    return httpx.Client(
        transport=GuardedTransport(allow_private_networks=allow_private_networks, ssl_context=ssl_context),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        headers=headers,
    )


def guarded_async_client(
    *,
    allow_private_networks: bool = False,
    timeout_s: float,
    ssl_context: ssl.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> httpx.AsyncClient:
    """The ``httpx.AsyncClient`` twin of ``guarded_client`` (same arguments)."""
    return httpx.AsyncClient(
        transport=AsyncGuardedTransport(
            allow_private_networks=allow_private_networks, ssl_context=ssl_context
        ),
        timeout=timeout_s,
        follow_redirects=False,
        trust_env=False,
        headers=headers,
    )
