"""Webhooks, API keys, limits and metrics through the real stack (uvicorn + worker processes)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.stack import Stack
from tests.e2e.test_stack import stack_env, submit, wait_for

pytestmark = pytest.mark.e2e

SECRET = "whsec_" + base64.b64encode(b"0123456789abcdef0123456789abcdef").decode()
ALICE, BOB = "alice-key-0123456789", "bob-key-0123456789ab"


def verify_standard_webhook(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """An independent Standard Webhooks verifier (the spec's algorithm, written apart from core.webhooks)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    if abs(time.time() - int(headers["webhook-timestamp"])) > 300:
        return False
    return any(
        version == "v1" and hmac.compare_digest(signature, expected)
        for version, _, signature in (part.partition(",") for part in headers["webhook-signature"].split())
    )


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            received.append({"headers": {k.lower(): v for k, v in self.headers.items()}, "body": body})
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks", received
    server.shutdown()


def test_webhooks_keys_limits_and_metrics(
    redis_url: str, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    url, received = receiver
    env = stack_env(
        redis_url,
        tmp_path,
        PARLA_AUTH_DISABLED="false",
        PARLA_API_KEYS=f"alice:{ALICE},bob:{BOB}",
        PARLA_WEBHOOK_SECRET=SECRET,
        PARLA_WEBHOOK_ALLOW_HTTP="true",
        PARLA_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        PARLA_SUBMISSIONS_PER_MINUTE="2",
        PARLA_ENGINE_CONFIG=json.dumps({"chunk_frames": 5, "frame_delay_s": 0.03}),
    )
    with Stack(env, workers=1, state_dir=tmp_path) as stack:
        alice = httpx.Client(
            base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {ALICE}"}
        )
        bob = httpx.Client(base_url=stack.base_url, timeout=30, headers={"authorization": f"Bearer {BOB}"})
        anonymous = httpx.Client(base_url=stack.base_url, timeout=30)

        assert anonymous.get("/v1/videos").status_code == 401
        assert anonymous.get("/v1/videos").json()["error"]["code"] == "unauthorized"
        job_id = submit(
            alice,
            1.0,
            webhook_url=url,
            webhook_events="video.started,video.progress,video.succeeded",
        )
        job = wait_for(alice, job_id, lambda j: j["status"] == "succeeded")

        # another key cannot see, cancel or download it
        for method, path in (("get", ""), ("post", "/cancel"), ("get", "/video")):
            response = bob.request(method, f"/v1/videos/{job_id}{path}")
            assert response.status_code == 404 and response.json()["error"]["code"] == "job_not_found"
        assert bob.get("/v1/videos").json()["data"] == []

        # events arrive signed: started, progress, succeeded
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(b"video.succeeded" in r["body"] for r in received):
            time.sleep(0.1)
        events = [json.loads(r["body"]) for r in received]
        types = [event["type"] for event in events]
        assert types[0] == "video.started" and types[-1] == "video.succeeded" and "video.progress" in types
        assert all(verify_standard_webhook(SECRET, r["headers"], r["body"]) for r in received)
        assert not verify_standard_webhook(SECRET, received[0]["headers"], received[0]["body"] + b" ")
        assert events[-1]["data"]["id"] == job_id and events[-1]["data"]["result"]["frames"] == 25
        assert len({r["headers"]["webhook-id"] for r in received}) == len(received)
        log = alice.get(f"/v1/videos/{job_id}").json()["webhooks"]
        assert {entry["type"] for entry in log} >= {"video.started", "video.succeeded"}

        # per-key rate limit: alice used 1 of 2 submissions this minute
        assert submit_status(alice) == 202
        limited = alice.post("/v1/videos", files=files())
        assert limited.status_code == 429 and int(limited.headers["retry-after"]) >= 1
        assert limited.json()["error"]["code"] == "rate_limited"
        assert submit_status(bob) == 202  # limits are per key

        # metrics moved, on the API and on the worker
        api_metrics = httpx.get(f"{stack.base_url}/metrics").text
        assert "parla_jobs_submitted_total 3.0" in api_metrics
        assert 'parla_input_rejections_total{code="unauthorized"}' not in api_metrics
        worker_port = stack.worker_metrics_ports[0]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            worker_metrics = httpx.get(f"http://127.0.0.1:{worker_port}/metrics").text
            if 'parla_jobs_finished_total{status="succeeded"} 3.0' in worker_metrics:
                break
            time.sleep(0.2)
        assert 'parla_jobs_finished_total{status="succeeded"} 3.0' in worker_metrics
        assert 'parla_chunk_stage_seconds_count{stage="render"}' in worker_metrics
        assert 'parla_webhook_deliveries_total{outcome="delivered"}' in worker_metrics
        assert httpx.get(f"http://127.0.0.1:{worker_port}/healthz").status_code == 200
        assert job["attempts"] == 1


def files() -> dict[str, Any]:
    from tests.media import image_bytes, wav_bytes

    return {"image": ("p.png", image_bytes(200, 200)), "audio": ("a.wav", wav_bytes(1.0))}


def submit_status(client: httpx.Client) -> int:
    return client.post("/v1/videos", files=files(), data={"size": "64"}).status_code


def test_chunk_webhooks_link_to_the_live_preview(
    redis_url: str, tmp_path: Path, receiver: tuple[str, list[dict[str, Any]]]
) -> None:
    from parla_client import verify_webhook

    url, received = receiver
    env = stack_env(
        redis_url,
        tmp_path,
        PARLA_WEBHOOK_SECRET=SECRET,
        PARLA_WEBHOOK_ALLOW_HTTP="true",
        PARLA_WEBHOOK_ALLOW_PRIVATE_NETWORKS="true",
        # 5 frames a chunk, 1.5 s a chunk: well past the 1 s throttle, so every chunk gets its event
        PARLA_ENGINE_CONFIG=json.dumps({"chunk_frames": 5, "frame_delay_s": 0.3}),
    )
    with Stack(env, workers=1, state_dir=tmp_path) as stack:
        client = httpx.Client(base_url=stack.base_url, timeout=30)
        job_id = submit(client, 0.6, webhook_events=["video.chunk", "video.succeeded"], webhook_url=url)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any(b'"video.chunk"' in r["body"] for r in received):
            time.sleep(0.05)
        first = verify_webhook(SECRET, received[0]["headers"], received[0]["body"])
        assert first.type == "video.chunk" and first.chunk is not None and first.chunk.index == 0
        assert client.get(f"/v1/videos/{job_id}").json()["status"] == "running"  # sent while rendering
        playlist = client.get(first.chunk.playlist_url)
        assert playlist.status_code == 200 and "#EXT-X-ENDLIST" not in playlist.text
        segment = client.get(first.chunk.segment_url)
        assert segment.status_code == 200 and segment.content[:1] == b"\x47"  # an MPEG-TS packet
        assert client.get(first.chunk.thumbnail_url).headers["content-type"] == "image/jpeg"

        wait_for(client, job_id, lambda j: j["status"] == "succeeded")
        while time.monotonic() < deadline and not any(b"video.succeeded" in r["body"] for r in received):
            time.sleep(0.05)
        events = [verify_webhook(SECRET, r["headers"], r["body"]) for r in received]
        chunks = [event.chunk for event in events if event.type == "video.chunk"]
        assert [chunk.index for chunk in chunks if chunk] == [0, 1, 2]
        assert [(c.start_frame, c.stop_frame, c.frames) for c in chunks if c] == [
            (0, 5, 5),
            (5, 10, 5),
            (10, 15, 5),
        ]
        assert (
            chunks[-1] is not None
            and chunks[-1].preview_url == f"{stack.base_url}/v1/videos/{job_id}/preview.mp4"
        )
        assert events[-1].type == "video.succeeded"
        log = client.get(f"/v1/videos/{job_id}").json()["webhooks"]
        assert [entry["type"] for entry in log] == ["video.succeeded"]  # chunk events stay out of it
