"""The worker's small HTTP port: ``/metrics`` for Prometheus and ``/healthz`` for the orchestrator.

A worker is an rq process, not a web server; this serves both from a daemon thread (stdlib WSGI,
prometheus-client's WSGI app), on ``PARLA_WORKER_METRICS_PORT`` (9100 by default in the deploy files).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, make_wsgi_app

StartResponse = Callable[..., Any]


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # One line per scrape every 15 s would drown the worker's own log.
        pass


@dataclass
class MetricsServer:
    """A running metrics/health server; ``port`` is the bound port (useful when 0 was asked)."""

    server: WSGIServer
    thread: threading.Thread

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and release the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def start_metrics_server(
    port: int,
    registry: CollectorRegistry,
    *,
    addr: str = "0.0.0.0",
    health_check: Callable[[], bool] | None = None,
) -> MetricsServer:
    """Serve ``/metrics`` (and every other path, as prometheus-client does) plus ``/healthz``.

    Args:
        port: TCP port; 0 picks a free one.
        registry: the worker's registry (``ParlaMetrics(registry)``).
        addr: interface to bind.
        health_check: returns whether the worker is alive and able to take jobs (engine loaded,
            heartbeat fresh); ``/healthz`` answers 200 or 503 from it, 200 when None.
    """
    metrics_app = make_wsgi_app(registry)

    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/healthz":
            try:
                healthy = health_check() if health_check is not None else True
            except Exception:
                healthy = False
            status = "200 OK" if healthy else "503 Service Unavailable"
            body = b"ok\n" if healthy else b"unhealthy\n"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
            return [body]
        result: Iterable[bytes] = metrics_app(environ, start_response)
        return result

    server = make_server(addr, port, app, server_class=_ThreadingWSGIServer, handler_class=_QuietHandler)
    thread = threading.Thread(target=server.serve_forever, name="parla-metrics", daemon=True)
    thread.start()
    return MetricsServer(server=server, thread=thread)
