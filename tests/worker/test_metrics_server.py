"""The worker's metrics/health port on loopback."""

from __future__ import annotations

import httpx
from prometheus_client import CollectorRegistry

from core.metrics import ParlaMetrics
from worker.metrics import start_metrics_server


def test_worker_port_serves_metrics_and_health() -> None:
    registry = CollectorRegistry()
    ParlaMetrics(registry).jobs_submitted.inc()
    healthy = {"value": True}
    server = start_metrics_server(0, registry, addr="127.0.0.1", health_check=lambda: healthy["value"])
    try:
        base = f"http://127.0.0.1:{server.port}"
        assert "parla_jobs_submitted_total 1.0" in httpx.get(f"{base}/metrics").text
        assert httpx.get(f"{base}/healthz").status_code == 200
        healthy["value"] = False
        assert httpx.get(f"{base}/healthz").status_code == 503
    finally:
        server.stop()
