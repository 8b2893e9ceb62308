"""The API's HTTP server: uvicorn with limits on request heads, slow clients and concurrency.

uvicorn's h11 protocol is used on purpose: it enforces ``h11_max_incomplete_event_size`` (the
request line + headers), which the httptools protocol that uvicorn would pick by default ignores.
uvicorn has no timeout for a request head that arrives slowly (a keep-alive timer runs only
between requests), so ``HeadTimeoutH11Protocol`` adds one: a connection that has not sent a whole
request head within ``http_header_timeout_s`` of connecting, or of starting its next request, is
closed (slowloris). Pauses inside a request body are limited by ``service.middleware``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from core.settings import Settings

log = logging.getLogger(__name__)


class HeadTimeoutH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head is not complete in time."""

    head_timeout_s: ClassVar[float] = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # IDLE: still waiting for (the rest of) a request head. The deadline is not moved by
        # each byte, or a client sending one byte a second would never be cut off.
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._arm_head_timer()
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.head_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info(
                "closing a connection from %s: no complete request head in %g s",
                self.client,
                self.head_timeout_s,
            )
            self.transport.close()


def uvicorn_config(app: Any, settings: Settings) -> uvicorn.Config:
    """uvicorn's configuration for ``app`` from the ``PARLA_HTTP_*`` settings."""
    protocol = type(
        "ParlaH11Protocol", (HeadTimeoutH11Protocol,), {"head_timeout_s": settings.http_header_timeout_s}
    )
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level="info",
        access_log=False,
        http=protocol,
        h11_max_incomplete_event_size=settings.http_max_header_bytes,
        timeout_keep_alive=settings.http_keep_alive_s,
        limit_concurrency=settings.http_max_concurrency or None,
    )
