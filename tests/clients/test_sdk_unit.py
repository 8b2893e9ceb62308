"""The SDK without a server: request forms, retries with Retry-After, errors, webhook verification."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from parla_client import EVENT_TYPES, APIError, Client, RetryPolicy, WebhookVerificationError, verify_webhook
from parla_client._requests import retry_after_s, submit_request

from core.webhooks import build_headers, parse_secret

JOB = {"id": "vid_1", "status": "queued", "created_at": "2026-01-01T00:00:00Z", "params": {}}


def test_local_files_go_as_multipart_with_flat_options_and_a_generated_idempotency_key(
    tmp_path: Path,
) -> None:
    portrait = tmp_path / "me.png"
    portrait.write_bytes(b"png")
    request = submit_request(
        {"image": portrait, "audio": b"wav", "driving_video": None},
        {"engine": "warp", "engine_options": {"head_motion": 0.8}, "size": 64, "seed": None},
        None,
    )
    assert request["files"] == [
        ("image", ("me.png", b"png", "image/png")),
        ("audio", ("audio", b"wav", "application/octet-stream")),
    ]
    assert request["data"] == {"engine": "warp", "engine_options": '{"head_motion": 0.8}', "size": "64"}
    assert request["headers"]["Idempotency-Key"].startswith("sdk-")


def test_a_url_makes_the_body_json_and_local_files_data_uris() -> None:
    request = submit_request(
        {"image": "https://example.org/p.jpg", "audio": b"RIFF", "driving_video": None},
        {"fps": 25.0},
        "key-1",
    )
    assert request["headers"] == {"Idempotency-Key": "key-1"}
    assert request["json"] == {
        "fps": 25.0,
        "image_url": "https://example.org/p.jpg",
        "audio_url": "data:application/octet-stream;base64," + base64.b64encode(b"RIFF").decode(),
    }


def test_retry_after_in_seconds_and_as_an_http_date() -> None:
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "7"})) == 7.0
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "Thu, 01 Jan 1970 00:00:00 GMT"})) == 0.0
    assert retry_after_s(httpx.Response(429, headers={"Retry-After": "soon"})) is None
    assert RetryPolicy(max_wait_s=2).delay_s(0, httpx.Response(503, headers={"Retry-After": "60"})) == 2


def client_on(handler: Any, retries: int = 3) -> tuple[Client, list[httpx.Request]]:
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        response: httpx.Response = handler(request, len(seen))
        return response

    http = httpx.Client(base_url="http://parla.test", transport=httpx.MockTransport(record))
    return Client(http=http, retry=RetryPolicy(max_retries=retries, backoff_s=0.0)), seen


def test_429_and_503_are_retried_with_the_same_idempotency_key_until_accepted() -> None:
    def handler(request: httpx.Request, count: int) -> httpx.Response:
        if count == 1:
            return httpx.Response(
                429, headers={"Retry-After": "0"}, json={"error": {"code": "rate_limited", "message": "x"}}
            )
        if count == 2:
            return httpx.Response(503, headers={"Retry-After": "0"})
        return httpx.Response(202, json=JOB)

    client, seen = client_on(handler)
    job = client.submit(b"png", b"wav", size=64)
    assert job.id == "vid_1" and len(seen) == 3
    assert len({request.headers["idempotency-key"] for request in seen}) == 1


def test_errors_carry_the_apis_code_and_retries_stop_at_the_limit() -> None:
    client, seen = client_on(
        lambda request, count: httpx.Response(
            503,
            headers={"Retry-After": "0"},
            json={"error": {"code": "service_unavailable", "message": "down"}},
        ),
        retries=2,
    )
    with pytest.raises(APIError) as failure:
        client.get("vid_1")
    assert (failure.value.status_code, failure.value.code, failure.value.retry_after_s) == (
        503,
        "service_unavailable",
        0.0,
    )
    assert len(seen) == 3
    client, seen = client_on(
        lambda request, count: httpx.Response(404, json={"error": {"code": "job_not_found", "message": "no"}})
    )
    with pytest.raises(APIError, match="job_not_found"):
        client.get("vid_x")
    assert len(seen) == 1  # a 404 is final


def test_connection_errors_are_retried() -> None:
    def handler(request: httpx.Request, count: int) -> httpx.Response:
        if count < 3:
            raise httpx.ConnectError("refused", request=request)
        return httpx.Response(200, json=JOB)

    client, seen = client_on(handler)
    assert client.get("vid_1").status == "queued" and len(seen) == 3


def test_webhook_verification_accepts_parlas_signature_and_refuses_tampering() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = json.dumps(
        {"type": "video.succeeded", "timestamp": "t", "data": {**JOB, "status": "succeeded"}}
    ).encode()
    headers = build_headers([parse_secret(secret)], "msg_1", 1_000, body)
    event = verify_webhook(secret, headers, body, now=1_010)
    assert (event.id, event.type, event.job.status) == ("msg_1", "video.succeeded", "succeeded")
    other = "whsec_" + base64.b64encode(b"o" * 32).decode()
    assert verify_webhook([other, secret], headers, body, now=1_010).id == "msg_1"  # rotation
    with pytest.raises(WebhookVerificationError, match="no webhook-signature"):
        verify_webhook(secret, headers, body + b" ", now=1_010)
    with pytest.raises(WebhookVerificationError, match="timestamp"):
        verify_webhook(secret, headers, body, now=1_000 + 301)
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify_webhook(secret, {}, body, now=1_000)


def test_a_chunk_event_is_typed() -> None:
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    base = "http://api/v1/videos/vid_1"
    chunk = {
        "index": 1,
        "start_frame": 25,
        "stop_frame": 50,
        "frames": 25,
        "segment_url": f"{base}/stream/1.ts",
        "playlist_url": f"{base}/stream.m3u8",
        "preview_url": f"{base}/preview.mp4",
        "thumbnail_url": f"{base}/thumbnail.jpg",
    }
    body = json.dumps({"type": "video.chunk", "timestamp": "t", "data": {**JOB, "chunk": chunk}}).encode()
    event = verify_webhook(
        secret, build_headers([parse_secret(secret)], "msg_2", 1_000, body), body, now=1_000
    )
    assert event.type == "video.chunk" and "video.chunk" in EVENT_TYPES
    assert event.chunk is not None and (event.chunk.index, event.chunk.frames) == (1, 25)
    assert event.chunk.segment_url.endswith("/stream/1.ts") and event.job.id == JOB["id"]
    plain = json.dumps({"type": "video.started", "timestamp": "t", "data": JOB}).encode()
    assert (
        verify_webhook(
            secret, build_headers([parse_secret(secret)], "m", 1_000, plain), plain, now=1_000
        ).chunk
        is None
    )


def test_download_follows_a_presigned_redirect_without_sending_the_key(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.url.host == "parla.test":
            return httpx.Response(307, headers={"Location": "https://bucket.s3.test/video.mp4?sig=1"})
        return httpx.Response(200, content=b"mp4-bytes")

    http = httpx.Client(
        base_url="http://parla.test",
        headers={"Authorization": "Bearer secret-key"},
        transport=httpx.MockTransport(handler),
    )
    path = Client(http=http).download("vid_1", tmp_path / "v.mp4")
    assert path == tmp_path / "v.mp4" and path.read_bytes() == b"mp4-bytes"
    assert seen[0].headers["authorization"] == "Bearer secret-key"
    assert "authorization" not in seen[1].headers  # the key stays with the API
    assert not (tmp_path / "v.mp4.part").exists()


def test_the_cli_progress_bar_estimates_the_time_left() -> None:
    import io

    from parla_client.cli import ProgressBar
    from parla_client.models import Job

    def running(done: int) -> Job:
        progress = {"chunks_done": done // 10, "chunks_total": 10, "frames_done": done, "frames_total": 100}
        return Job.from_json({**JOB, "status": "running", "progress": progress})

    bar = ProgressBar(io.StringIO())
    assert bar.eta_s(running(10), now=100.0) is None  # one observation: no rate yet
    assert bar.eta_s(running(30), now=102.0) == pytest.approx(7.0)  # 10 frames/s, 70 left
    bar.update(running(30))
    assert isinstance(bar.stream, io.StringIO)
    line = bar.stream.getvalue()
    assert "vid_1 running" in line and "30%" in line and "3/10 chunks" in line and line.endswith("\n")


def test_outputs_are_sent_parsed_and_downloaded(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    result = {"duration_s": 1, "fps": 25, "frames": 25, "width": 64, "height": 64, "bytes": 9}
    motion = {"url": "http://parla.test/v1/videos/vid_1/outputs/motion", "bytes": 5}
    finished = {**JOB, "status": "succeeded", "result": {**result, "outputs": {"motion": motion}}}

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        if request.method == "POST":
            return httpx.Response(202, json=JOB)
        if request.url.path.endswith("/outputs/motion"):
            return httpx.Response(200, content=b"npz!!")
        return httpx.Response(200, json=finished)

    client = Client(http=httpx.Client(base_url="http://parla.test", transport=httpx.MockTransport(handler)))
    client.submit(b"png", b"wav", engine="liveportrait", outputs=["video", "motion"])
    assert b'name="outputs"\r\n\r\n["video", "motion"]' in seen[0].read()
    job = client.get("vid_1")
    assert job.result is not None and job.result.outputs["motion"].bytes == 5
    assert job.result.outputs["motion"].url == motion["url"]
    assert client.download_output("vid_1", "motion") == b"npz!!"
    assert client.download_output("vid_1", "motion", tmp_path / "m.npz") == tmp_path / "m.npz"
