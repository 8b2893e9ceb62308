"""Loopback servers and a tripwire for the outbound-fetch tests: nothing here leaves the host.

- ``make_tls``: a throwaway CA and a server certificate for ``localhost`` only, made at test time.
- ``FileServer``: an HTTP(S) server on 127.0.0.1 serving scripted replies; it records every
  request's path and ``Host`` header and, over TLS, the SNI name each handshake asked for.
- ``CountingListener``: a bare TCP listener on 127.0.0.1 (and ::1) that only counts connections,
  to prove a refused URL opened none.
- ``forbid_outside_connections``: fails every socket connect to anything but 127.0.0.0/8 and ::1,
  and records it, so a broken guard cannot send a packet off the host (test modules wrap it in an
  autouse fixture that also asserts nothing was attempted).
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import socket
import ssl
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    cert: Path
    key: Path

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(str(self.cert), str(self.key))
        return context


def make_tls(directory: Path, hostname: str = "localhost") -> TlsFiles:
    """A CA and a certificate signed by it for ``hostname`` alone (no IP address in it)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "parla test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = TlsFiles(directory / "ca.pem", directory / "cert.pem", directory / "key.pem")
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return files


@dataclass
class Reply:
    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    drip_s: float = 0.0
    """When > 0: send the body one byte at a time, this long apart."""


@dataclass
class Seen:
    method: str
    path: str
    host: str | None
    authorization: str | None


class FileServer:
    """Scripted replies by path, query ignored (404 for other paths), over TLS when given a context."""

    def __init__(self, tls: ssl.SSLContext | None = None, host: str = "127.0.0.1") -> None:
        self.replies: dict[str, Reply] = {}
        self.requests: list[Seen] = []
        self.sni_names: list[str | None] = []
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with server.lock:
                    server.requests.append(
                        Seen("GET", self.path, self.headers.get("host"), self.headers.get("authorization"))
                    )
                reply = server.replies.get(self.path.split("?", 1)[0], Reply(404))
                self.send_response(reply.status)
                for name, value in reply.headers.items():
                    self.send_header(name, value)
                self.send_header("content-length", str(len(reply.body)))
                self.end_headers()
                try:
                    if not reply.drip_s:
                        self.wfile.write(reply.body)
                        return
                    for index in range(len(reply.body)):
                        self.wfile.write(reply.body[index : index + 1])
                        self.wfile.flush()
                        time.sleep(reply.drip_s)
                except OSError:
                    pass  # the client gave up: that is what a drip test wants

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((host, 0), Handler)
        self.server.daemon_threads = True
        if tls is not None:
            tls.sni_callback = self._record_sni
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        self.port: int = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)

    def _record_sni(self, _sock: Any, name: str | None, _context: Any) -> None:
        with self.lock:
            self.sni_names.append(name)

    def __enter__(self) -> FileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


class CountingListener:
    """Accepts and drops TCP connections on 127.0.0.1 (and ::1 when it exists), counting them."""

    def __init__(self) -> None:
        self.accepted = 0
        self.lock = threading.Lock()
        self.sockets = [socket.create_server(("127.0.0.1", 0))]
        self.port: int = self.sockets[0].getsockname()[1]
        # Without IPv6 loopback the ::1 forms fail to connect anyway, which also counts zero.
        with contextlib.suppress(OSError):
            self.sockets.append(socket.create_server(("::1", self.port), family=socket.AF_INET6))
        self._stop = threading.Event()
        self.threads = [threading.Thread(target=self._serve, args=(s,), daemon=True) for s in self.sockets]

    def _serve(self, listener: socket.socket) -> None:
        listener.settimeout(0.05)
        while not self._stop.is_set():
            try:
                connection, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.accepted += 1
            connection.close()

    def __enter__(self) -> CountingListener:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        for thread in self.threads:
            thread.join(2)
        for listener in self.sockets:
            listener.close()


def _is_loopback(address: Any) -> bool:
    if not isinstance(address, tuple):
        return True  # a Unix socket path
    try:
        ip = ipaddress.ip_address(str(address[0]))
    except ValueError:
        return False  # a name, or a scoped address: never loopback
    return ip == ipaddress.IPv6Address("::1") or ip in ipaddress.IPv4Network("127.0.0.0/8")


def forbid_outside_connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Refuse (and record) every connect to an address outside 127.0.0.0/8 and ::1."""
    attempts: list[Any] = []
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def connect(sock: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(f"test tripwire: no connections to {address!r}")
        real_connect(sock, address)

    def connect_ex(sock: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            attempts.append(address)
            raise ConnectionRefusedError(f"test tripwire: no connections to {address!r}")
        return real_connect_ex(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket.socket, "connect_ex", connect_ex)
    return attempts


HOSTILE_HOSTS = (
    "127.0.0.1",
    "localhost",
    "[::1]",
    "0.0.0.0",
    "[::]",
    "127.1",
    "2130706433",
    "0x7f000001",
    "0x7f.1",
    "127.0.1",
    "[::ffff:127.0.0.1]",
)
"""Ways of writing this host in a URL; the listener's port goes after them."""

HOSTILE_REMOTE_URLS = (
    "https://169.254.169.254/latest/meta-data/",
    "https://10.0.0.1/x",
    "https://192.168.1.1/x",
    "https://172.16.0.1/x",
    "https://100.64.0.1/x",
    "https://224.0.0.1/x",
    "https://[fd00::1]/x",
    "https://[fe80::1]/x",
    "https://[64:ff9b::a9fe:a9fe]/x",
)
"""Private and special addresses off this host: the tripwire stops them if the guard does not."""
